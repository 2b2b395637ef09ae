"""Read a stored artifact once: sha256 of its bytes, (decryption,) decompression to the
end, and the first bytes of the dump for a header check.

Backup's read-back, verification checks 4–6 and restores all read through `DumpReader`,
so an artifact is read once per use and every path detects the same damage: a corrupt
block, a flipped byte (zstd content checksum, gzip CRC, age MAC) or a truncated stream.
The sha256 runs on a second thread, beside decompression (both release the GIL).
"""

from __future__ import annotations

import hashlib
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from opstower_core.artifacts.zstdframes import ZstdFrameWalker
from opstower_core.events import CancelToken

CHUNK = 1024 * 1024
OUT_CHUNK = 4 * 1024 * 1024
HEAD_BYTES = 64 * 1024


class ScanError(Exception):
    """The artifact is damaged; `offset` is how far into the stored bytes it was noticed."""

    def __init__(self, message: str, offset: int, decrypt: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.decrypt = decrypt


class _HashingReader:
    """The stored bytes: counted, reported, and hashed on a helper thread."""

    def __init__(self, raw: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        self.raw = raw
        self.count = 0
        self.on_progress = on_progress
        self._sha = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: deque[Future[None]] = deque()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n and n > 0 else CHUNK)
        if data:
            self.count += len(data)
            self._pending.append(self._pool.submit(self._sha.update, data))
            while len(self._pending) > 4:  # bounded: at most a few chunks wait for hashing
                self._pending.popleft().result()
            if self.on_progress is not None:
                self.on_progress(self.count)
        return data

    def readinto(self, buf) -> int:  # pyrage reads through readinto
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        return self._sha.hexdigest()


class _Walking:
    """Passes compressed bytes to the decompressor while a ZstdFrameWalker follows them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.walker = ZstdFrameWalker()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n if n and n > 0 else CHUNK)
        if data:
            self.walker.feed(data)
        return data


class DumpReader:
    """Readable stream of the dump's bytes from a stored artifact.

    raw → sha256/count → [age decryption] → zstd|gzip|none → dump bytes. `readinto`
    raises ScanError on damage; `finish()` raises ScanError if the stream stopped early.
    """

    def __init__(self, raw: IO[bytes], compression: str, identities: list | None = None,
                 on_progress: Callable[[int], None] | None = None, read_size: int = CHUNK) -> None:
        self.compression = compression
        self.read_size = read_size
        self.hashing = _HashingReader(raw, on_progress)
        self._decrypting: Any = None
        source: Any = self.hashing
        if identities:
            from opstower_core.artifacts.crypto import DecryptingReader

            self._decrypting = source = DecryptingReader(self.hashing, identities)
        self._walking: _Walking | None = None
        self._zlib = None
        self._source = source
        if compression == "zstd":
            self._walking = _Walking(source)
            self._reader: Any = zstandard.ZstdDecompressor().stream_reader(
                self._walking, read_size=read_size, read_across_frames=True)
        elif compression == "gzip":
            self._zlib = zlib.decompressobj(wbits=31)
            self._pending = b""
        self.out_bytes = 0

    def _fail(self, exc: BaseException) -> ScanError:
        from opstower_core.artifacts.crypto import DecryptionFailed

        if isinstance(exc, DecryptionFailed):
            return ScanError(str(exc), self.hashing.count, decrypt=True)
        text = str(exc) or type(exc).__name__
        return ScanError(f"{self.compression} stream is corrupt ({text})", self.hashing.count)

    def readinto(self, buf: memoryview) -> int:
        from opstower_core.artifacts.crypto import DecryptionFailed

        try:
            if self._walking is not None:
                n = self._reader.readinto(buf)
            elif self._zlib is not None:
                n = self._gzip_into(buf)
            else:
                data = self._source.read(len(buf))
                n = len(data)
                buf[:n] = data
        except (zstandard.ZstdError, zlib.error, DecryptionFailed) as exc:
            raise self._fail(exc) from None
        self.out_bytes += n
        if self._walking is not None and self._walking.walker.error:
            raise ScanError(f"zstd stream is corrupt ({self._walking.walker.error})", self.hashing.count)
        return n

    def _gzip_into(self, buf: memoryview) -> int:
        while not self._pending:
            data = self._source.read(self.read_size)
            if not data:
                return 0
            out = [self._zlib.decompress(data)]
            # A finished member followed by more bytes: the next member starts there.
            while self._zlib.eof and self._zlib.unused_data:
                rest = self._zlib.unused_data
                self._zlib = zlib.decompressobj(wbits=31)
                out.append(self._zlib.decompress(rest))
            self._pending = b"".join(out)
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read(self, n: int = OUT_CHUNK) -> bytes:
        buf = bytearray(n)
        k = self.readinto(memoryview(buf))
        return bytes(buf[:k])

    def finish(self) -> None:
        """Raise ScanError when the stream stopped inside a frame / member."""
        complete = True
        if self._walking is not None:
            complete = self._walking.walker.complete
        elif self._zlib is not None:
            complete = self._zlib.eof
        if not complete:
            raise ScanError(f"{self.compression} stream is truncated (it ends before its end-of-frame marker)",
                            self.hashing.count)

    def close(self) -> None:
        if self._decrypting is not None:
            self._decrypting.close()

    def sha256(self) -> str:
        """sha256 of all the stored bytes (reads whatever is left)."""
        self.hashing.drain()
        return self.hashing.hexdigest()


class Decoder:
    """Incremental zstd / gzip decoder for push-style callers; `finish()` raises EOFError
    when the input stopped inside a frame / member. (DumpReader is the faster pull-style path.)"""

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self._obj = self._new()

    def _new(self) -> Any:
        if self.compression == "zstd":
            return zstandard.ZstdDecompressor().decompressobj()
        if self.compression == "gzip":
            return zlib.decompressobj(wbits=31)
        return None

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        out = [self._obj.decompress(data)]
        while self._obj.eof and self._obj.unused_data:
            rest = self._obj.unused_data
            self._obj = self._new()
            out.append(self._obj.decompress(rest))
        return b"".join(out)

    def finish(self) -> None:
        if self._obj is not None and not self._obj.eof:
            raise EOFError("the stream ends before its end-of-frame marker")


@dataclass
class ScanResult:
    sha256: str = ""
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    head: bytes = b""
    error: str | None = None  # why decompression failed
    error_offset: int | None = None  # where, in the stored bytes
    decrypt_failed: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def scan_stream(
    raw: IO[bytes],
    compression: str,
    on_data: Callable[[memoryview], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    cancel: CancelToken | None = None,
    identities: list | None = None,
    read_size: int = CHUNK,
    out_chunk: int = OUT_CHUNK,
) -> ScanResult:
    """Read `raw` to the end once: hash it, (decrypt,) decompress it, keep the head of the dump.

    `read_size` (stored bytes per read) and `out_chunk` (dump bytes per `on_data` call): larger
    ones mean fewer trips through Python per MB, and fewer times the decompressing thread has
    to take the GIL back from a busy one (verify's S3 look-up imports boto3 meanwhile)."""
    reader = DumpReader(raw, compression, identities, on_progress, read_size)
    result = ScanResult()
    head = bytearray()
    buf = bytearray(out_chunk)
    mv = memoryview(buf)
    try:
        while True:
            if cancel is not None:
                cancel.check()
            n = reader.readinto(mv)
            if not n:
                reader.finish()
                break
            if len(head) < HEAD_BYTES:
                head += mv[: min(n, HEAD_BYTES - len(head))]
            if on_data is not None:
                on_data(mv[:n])
    except ScanError as exc:
        result.error, result.error_offset, result.decrypt_failed = str(exc), exc.offset, exc.decrypt
    finally:
        reader.close()
    result.uncompressed_bytes = reader.out_bytes
    result.sha256 = reader.sha256()
    result.compressed_bytes = reader.hashing.count
    result.head = bytes(head)
    return result


def scan_file(path: Path, compression: str, **kw: Any) -> ScanResult:
    with open(path, "rb") as fh:
        return scan_stream(fh, compression, **kw)


PLAIN_HEADER = b"PostgreSQL database dump"
CUSTOM_MAGIC = b"PGDMP"


def header_problem(head: bytes, fmt: str) -> str | None:
    """None when the dump's first bytes look like a PostgreSQL dump of format `fmt`."""
    if fmt == "custom":
        return None if head.startswith(CUSTOM_MAGIC) else "no PGDMP header: not a pg_dump custom-format archive"
    if PLAIN_HEADER not in head[:4096]:
        return 'no "PostgreSQL database dump" header: not a pg_dump plain SQL dump'
    return None
