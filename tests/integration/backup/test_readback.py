"""The read-back that follows the dump: it reads the file, not the pipeline's memory, so a byte
changed on its way to the file, a longer file or a cut stream still fails the `readback` step."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
import zstandard

from opstower_core.artifacts.crypto import EncryptionSettings
from opstower_core.artifacts.names import ArtifactName
from opstower_core.backup.model import DumpResult
from opstower_core.backup.readback import ReadBack, read_back
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Reporter

DUMP = b"PGDMP" + os.urandom(1 << 16) + b"\0" * (3 << 20)  # a custom-format header, then bytes


def _artifact() -> bytes:
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(DUMP)


def _follow(tmp: Path, data: bytes, *, damage=None, extra: bytes = b"", pieces: int = 7) -> ReadBack:
    """Write `data` to `tmp` in pieces as the dump's sink does, the read-back following it."""
    name = ArtifactName.new("db", "custom", encrypted=False, pre_restore=False)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    rb = ReadBack(tmp, name, EncryptionSettings(), CancelToken())
    rb.start()
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        os.write(fd, piece)
        if damage is not None and i == 0:
            damage(tmp)  # on disk before the read-back is told: it reads the damaged byte
        rb.written(len(piece))
    if extra:
        os.write(fd, extra)  # beyond what the sink reported
    os.fsync(fd)
    os.close(fd)
    rb.writer_done()
    return rb


def _expected(data: bytes) -> DumpResult:
    return DumpResult(len(data), hashlib.sha256(data).hexdigest(), len(DUMP), {})


def test_readback_follows_the_written_file(tmp_path: Path) -> None:
    data = _artifact()
    events: list = []
    rb = _follow(tmp_path / "a.tmp", data)
    read_back(Reporter(events.append), rb, _expected(data))
    assert rb.scan is not None and rb.scan.uncompressed_bytes == len(DUMP)
    assert [e.status.name for e in events if type(e).__name__ == "StepFinished"] == ["PASS"]


def _flip(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize(("case", "message"), [
    ("flipped", "does not"),  # a changed byte: zstd's checksum or the sha256 says so
    ("longer", "does not"),  # bytes past the end: not a zstd frame, and not the dumped size
    ("cut", "does not decompress"),
])
def test_readback_fails_on_what_the_file_holds(tmp_path: Path, case: str, message: str) -> None:
    data = _artifact()
    expected = _expected(data)
    if case == "flipped":
        rb = _follow(tmp_path / "a.tmp", data, damage=_flip)
    elif case == "longer":
        rb = _follow(tmp_path / "a.tmp", data, extra=b"more")
    else:
        data = data[:-1000]
        expected = _expected(data)  # the sink saw the same cut stream: only decompression tells
        rb = _follow(tmp_path / "a.tmp", data)
    with pytest.raises(OpsError, match=message):
        read_back(Reporter(), rb, expected)


def test_a_failed_dump_does_not_leave_the_read_back_waiting(tmp_path: Path) -> None:
    """The dump stops half-way: writer_done() ends the read at what is there, no thread left behind."""
    name = ArtifactName.new("db", "custom", encrypted=False, pre_restore=False)
    tmp = tmp_path / "a.tmp"
    tmp.write_bytes(_artifact()[:5000])
    rb = ReadBack(tmp, name, EncryptionSettings(), CancelToken())
    rb.start()
    rb.written(5000)
    assert not rb.wait(0.2)  # waiting for more
    threading.Timer(0.1, rb.writer_done).start()
    assert rb.wait(5)
