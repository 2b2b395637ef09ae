"""Read the written artifact back once before it gets its real name: decompresses, matches, is a dump.

The read follows the dump: a thread of its own reads the temporary file through its own
descriptor as the dump's sink writes it (the bytes come back from the file, not from the
pipeline's memory), so hashing and decompressing it overlap the dump instead of queueing
after it. The `readback` step waits for it to reach the end of the fsynced file and then
checks it exactly as a second pass would: same sha256 and size as what was dumped, a
complete stream (zstd content checksum / gzip CRC / age MAC), a dump header.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from opstower_core.artifacts.crypto import AGE_MAGIC, EncryptionSettings, load_identities
from opstower_core.artifacts.names import ArtifactName
from opstower_core.artifacts.scan import CHUNK, ScanResult, header_problem, scan_stream
from opstower_core.backup.model import DumpResult
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Reporter

GONE = "no backup was written; the temporary file was removed"
TICK = 0.2  # how often the waiting step reports the read's progress


class _Tail:
    """The temporary file as it is written: `read` waits until the writer has written more or is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.pos = 0
        self.written = 0
        self.done = False
        self.cond = threading.Condition()

    def readable(self) -> bool:
        return True

    def advance(self, n: int) -> None:
        with self.cond:
            self.written += n
            self.cond.notify()

    def close_writer(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify()

    def read(self, n: int = -1) -> bytes:
        with self.cond:
            while self.pos >= self.written and not self.done:
                self.cond.wait()
            room = self.written - self.pos
        if room <= 0:
            # The writer is done: whatever the file holds beyond what was reported is read too, so
            # a longer file fails the size check instead of passing unseen.
            room = CHUNK
        data = os.pread(self.fd, min(n if n and n > 0 else CHUNK, room), self.pos)
        self.pos += len(data)
        return data


class ReadBack:
    """The read-back of one temporary artifact, on its own thread beside the dump.

    `start()` once the file exists; `written(n)` after every write to it; `writer_done()` once
    the file is complete and fsynced (or the dump failed: the read then ends at what is there)."""

    def __init__(self, tmp: Path, name: ArtifactName, enc: EncryptionSettings, cancel: CancelToken) -> None:
        self.name = name
        self.enc = enc
        self.cancel = cancel
        self.tail = _Tail(tmp)
        # By design the backup host may hold only public keys: then only the stored bytes are checked.
        self.sealed = name.encrypted and not enc.can_decrypt
        self.scan: ScanResult | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.tail.fd = os.open(self.tail.path, os.O_RDONLY)
        self._thread = threading.Thread(target=self._run, name="dump-readback", daemon=True)
        self._thread.start()

    def written(self, n: int) -> None:
        self.tail.advance(n)

    def writer_done(self) -> None:
        self.tail.close_writer()

    @property
    def count(self) -> int:
        return self.tail.pos

    def _run(self) -> None:
        try:
            if self.sealed:
                self.scan = scan_stream(self.tail, "none", cancel=self.cancel)
            else:
                identities = load_identities(self.enc) if self.name.encrypted else None
                self.scan = scan_stream(self.tail, self.name.compression, cancel=self.cancel, identities=identities)
        except BaseException as exc:  # noqa: BLE001 - raised by the readback step
            self.error = exc
            self.tail.close_writer()  # nothing reads any more: never hold the writer's side
        finally:
            os.close(self.tail.fd)

    def wait(self, timeout: float | None = None) -> bool:
        """True when the read has ended (always true when it never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def read_back(r: Reporter, rb: ReadBack, expected: DumpResult) -> None:
    """The `readback` step: raise OpsError unless the file is exactly what was dumped and a valid dump."""
    with r.step("readback", "Verifying backup integrity") as out:
        while not rb.wait(TICK):
            r.progress("readback", rb.count, expected.size_bytes)
        if rb.error is not None:
            raise rb.error
        scan = rb.scan
        assert scan is not None
        r.progress("readback", scan.compressed_bytes, expected.size_bytes, force=True)
        if rb.sealed:
            if not scan.head.startswith(AGE_MAGIC) or scan.sha256 != expected.sha256 \
                    or scan.compressed_bytes != expected.size_bytes:
                raise OpsError("The written encrypted artifact does not match what was produced (header/sha256 differ)",
                               GONE, "check the disk, then retry")
            r.log("readback", "Encrypted artifact read back: sha256 matches; content not decrypted "
                  "(no identity on this host, by design)")
            out.detail = f"Backup verification completed (encrypted, sha256 {expected.sha256[:12]}…)"
            return
        if scan.error:
            raise OpsError(f"Compression failed: the written artifact does not decompress ({scan.error})",
                           GONE, "check the disk, then retry")
        if scan.sha256 != expected.sha256 or scan.compressed_bytes != expected.size_bytes:
            raise OpsError("The written artifact does not match what was dumped (sha256/size differ)",
                           GONE, "check the disk, then retry")
        problem = header_problem(scan.head, rb.name.format)
        if problem:
            raise OpsError(f"Backup content is not a valid PostgreSQL dump ({problem})",
                           "no backup was written", "check the log")
        r.log("readback", f"Backup file integrity verified ({rb.name.compression} test passed)")
        r.log("readback", "Backup content verified (valid PostgreSQL dump)")
        out.detail = f"Backup verification completed successfully (sha256 {scan.sha256[:12]}…)"
