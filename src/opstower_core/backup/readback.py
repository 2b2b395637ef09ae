"""Read the written artifact back once before it gets its real name: decompresses, matches, is a dump."""

from __future__ import annotations

import hashlib
from pathlib import Path

from opstower_core.artifacts.crypto import AGE_MAGIC, EncryptionSettings, load_identities
from opstower_core.artifacts.names import ArtifactName
from opstower_core.artifacts.scan import header_problem, scan_file
from opstower_core.backup.model import DumpResult
from opstower_core.errors import OpsError
from opstower_core.events import Reporter, StepOutcome

CHUNK = 1024 * 1024


def read_back(r: Reporter, tmp: Path, name: ArtifactName, expected: DumpResult, enc: EncryptionSettings) -> None:
    """The `readback` step: raise OpsError unless `tmp` is exactly what was dumped and a valid dump."""
    with r.step("readback", "Verifying backup integrity") as out:
        identities = None
        if name.encrypted:
            if not enc.can_decrypt:
                # By design the backup host may hold only public keys: check what we can.
                _read_back_sealed(r, tmp, expected, out)
                return
            identities = load_identities(enc)
        scan = scan_file(tmp, name.compression, on_progress=lambda n: r.progress("readback", n, expected.size_bytes),
                         cancel=r.cancel, identities=identities)
        if scan.error:
            raise OpsError(f"Compression failed: the written artifact does not decompress ({scan.error})",
                           "no backup was written; the temporary file was removed", "check the disk, then retry")
        if scan.sha256 != expected.sha256 or scan.compressed_bytes != expected.size_bytes:
            raise OpsError("The written artifact does not match what was dumped (sha256/size differ)",
                           "no backup was written; the temporary file was removed", "check the disk, then retry")
        problem = header_problem(scan.head, name.format)
        if problem:
            raise OpsError(f"Backup content is not a valid PostgreSQL dump ({problem})",
                           "no backup was written", "check the log")
        r.log("readback", f"Backup file integrity verified ({name.compression} test passed)")
        r.log("readback", "Backup content verified (valid PostgreSQL dump)")
        out.detail = f"Backup verification completed successfully (sha256 {scan.sha256[:12]}…)"


def _read_back_sealed(r: Reporter, tmp: Path, expected: DumpResult, out: StepOutcome) -> None:
    sha = hashlib.sha256()
    with open(tmp, "rb") as fh:
        head = fh.read(len(AGE_MAGIC))
        sha.update(head)
        for block in iter(lambda: fh.read(CHUNK), b""):
            sha.update(block)
    if head != AGE_MAGIC or sha.hexdigest() != expected.sha256:
        raise OpsError("The written encrypted artifact does not match what was produced (header/sha256 differ)",
                       "no backup was written; the temporary file was removed", "check the disk, then retry")
    r.log("readback", "Encrypted artifact read back: sha256 matches; content not decrypted "
          "(no identity on this host, by design)")
    out.detail = f"Backup verification completed (encrypted, sha256 {expected.sha256[:12]}…)"
