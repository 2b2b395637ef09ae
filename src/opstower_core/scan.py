"""One streaming pass over an artifact: sha256 of its bytes, decompression to the end,
and the first bytes of the dump for a header check.

Backup's read-back and verification checks 4–6 share this pass so an artifact is read
once. Consumers of the decompressed stream (e.g. a custom-format TOC reader) plug in
through `on_data`.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from .events import CancelToken

CHUNK = 1024 * 1024
HEAD_BYTES = 64 * 1024


class Decoder:
    """Incremental zstd / gzip decoder that knows whether the stream really ended.

    zstd's stream reader accepts a truncated input silently, so frames are decoded with
    decompressobj and `eof` is checked at the end; our writer adds zstd's content checksum
    so a flipped byte fails too. Several concatenated frames / gzip members are accepted.
    """

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self._obj = self._new()

    def _new(self):
        if self.compression == "zstd":
            return zstandard.ZstdDecompressor().decompressobj()
        if self.compression == "gzip":
            return zlib.decompressobj(wbits=31)
        return None

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        out = [self._obj.decompress(data)]
        # A finished frame/member followed by more bytes: the next frame/member starts there.
        while self._obj.eof and self._obj.unused_data:
            rest = self._obj.unused_data
            self._obj = self._new()
            out.append(self._obj.decompress(rest))
        return b"".join(out)

    def finish(self) -> None:
        """Raise EOFError when the input stopped inside a frame/member."""
        if self._obj is not None and not self._obj.eof:
            raise EOFError("the stream ends before its end-of-frame marker")


@dataclass
class ScanResult:
    sha256: str = ""
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    head: bytes = b""
    error: str | None = None  # why decompression failed, with the offset
    error_offset: int | None = None
    decrypt_failed: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class HashingReader:
    """Wraps the raw artifact: hashes and counts every byte read from it."""

    def __init__(self, raw: IO[bytes], on_progress: Callable[[int], None] | None = None) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.count = 0
        self.on_progress = on_progress

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.sha256.update(data)
            self.count += len(data)
            if self.on_progress is not None:
                self.on_progress(self.count)
        return data

    def readinto(self, buf) -> int:  # pyrage reads through readinto
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def scan_stream(
    raw: IO[bytes],
    compression: str,
    on_data: Callable[[bytes], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    cancel: CancelToken | None = None,
    identities: list | None = None,
) -> ScanResult:
    """Read `raw` to the end once: hash it, (decrypt,) decompress it, keep the head of the dump.

    With `identities` the artifact is an age stream: the sha256 is still of the stored
    bytes, and decryption runs in the same pass.
    """
    from .crypto import DecryptingReader, DecryptionFailed

    hashing = HashingReader(raw, on_progress)
    source: Any = DecryptingReader(hashing, identities) if identities else hashing
    decoder = Decoder(compression)
    result = ScanResult()
    head = bytearray()
    failed = False
    try:
        while True:
            if cancel is not None:
                cancel.check()
            try:
                chunk = source.read(CHUNK)
            except DecryptionFailed as exc:
                result.error = str(exc)
                result.error_offset = hashing.count
                result.decrypt_failed = True
                failed = True
                break
            if not chunk:
                break
            if failed:
                continue  # keep reading to the end for the sha256; the first error is what we report
            try:
                data = decoder.feed(chunk)
            except (zstandard.ZstdError, zlib.error) as exc:
                failed = True
                result.error = _describe(exc, compression)
                result.error_offset = hashing.count
                continue
            result.uncompressed_bytes += len(data)
            if len(head) < HEAD_BYTES:
                head += data[: HEAD_BYTES - len(head)]
            if on_data is not None and data:
                on_data(data)
    finally:
        if identities:
            source.close()
    while hashing.read(CHUNK):  # the rest of the stored bytes, for the sha256
        pass
    if not failed:
        try:
            decoder.finish()
        except EOFError as exc:
            result.error = _describe(exc, compression)
            result.error_offset = hashing.count
    result.sha256 = hashing.sha256.hexdigest()
    result.compressed_bytes = hashing.count
    result.head = bytes(head)
    return result


def _describe(exc: BaseException, compression: str) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        return f"{compression} stream is truncated ({text})"
    return f"{compression} stream is corrupt ({text})"


def scan_file(path: Path, compression: str, **kw) -> ScanResult:
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
