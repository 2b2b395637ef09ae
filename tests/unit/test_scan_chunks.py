"""The streaming scan's chunk sizes (issue 18: verify reads 4 MiB and hands out 16 MiB chunks when no
loader is fed) change how often Python runs, never what the scan finds: the same sha256, bytes and
head, every byte handed out once and in order, and a truncated or corrupt stream still caught.
The `opstower verify` command turns the cyclic GC off only while it runs."""

from __future__ import annotations

import gc
import hashlib
import io
import random

import pytest
import zstandard

from opstower_core.artifacts.scan import CHUNK, OUT_CHUNK, scan_stream

# ~6 MiB of dump-like text across two frames: bigger than one small chunk, smaller than one large.
_rng = random.Random(18)
_DUMP = b"PGDMP" + b"".join(b"%d\t%r\tsome row text %d\n" % (i, _rng.random(), i % 97) for i in range(180_000))
_HALF = len(_DUMP) // 2
_STORED = (zstandard.ZstdCompressor(level=1, write_checksum=True).compress(_DUMP[:_HALF])
           + zstandard.ZstdCompressor(level=1, write_checksum=True).compress(_DUMP[_HALF:]))

SIZES = [(64 * 1024, 256 * 1024), (CHUNK, OUT_CHUNK), (4 * CHUNK, 4 * OUT_CHUNK)]


def _scan(stored: bytes, read_size: int, out_chunk: int):
    seen = hashlib.sha256()
    calls = []

    def on_data(data: memoryview) -> None:
        seen.update(data)
        calls.append(len(data))

    result = scan_stream(io.BytesIO(stored), "zstd", on_data=on_data, read_size=read_size, out_chunk=out_chunk)
    return result, seen.hexdigest(), calls


@pytest.mark.parametrize(("read_size", "out_chunk"), SIZES)
def test_every_chunk_size_finds_the_same(read_size, out_chunk):
    result, handed_out, calls = _scan(_STORED, read_size, out_chunk)
    assert result.ok, result.error
    assert result.sha256 == hashlib.sha256(_STORED).hexdigest()
    assert result.compressed_bytes == len(_STORED) and result.uncompressed_bytes == len(_DUMP)
    assert handed_out == hashlib.sha256(_DUMP).hexdigest()  # every byte once, in order
    assert result.head == _DUMP[:64 * 1024]
    assert max(calls) <= out_chunk


@pytest.mark.parametrize(("read_size", "out_chunk"), SIZES)
def test_every_chunk_size_catches_truncation_and_corruption(read_size, out_chunk):
    truncated, _, _ = _scan(_STORED[:-1000], read_size, out_chunk)
    assert truncated.error and "truncated" in truncated.error
    corrupt = bytearray(_STORED)
    corrupt[len(corrupt) // 3] ^= 0xFF
    damaged, _, _ = _scan(bytes(corrupt), read_size, out_chunk)
    assert damaged.error and "corrupt" in damaged.error


def test_the_verify_command_gives_the_collector_back(tmp_path):
    """In-process callers (tests, scripts) keep their collector after `opstower verify`, even when it fails."""
    from opstower_core.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'backup_dir = "{tmp_path / "b"}"\nstate_dir = "{tmp_path / "s"}"\n'
                   '[targets.app]\nhost = "/nonexistent"\n')
    assert gc.isenabled()
    try:
        assert main(["--config", str(cfg), "verify", "app_20200101_000000.dump.zst"]) == 1
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # what the command froze goes back to the collector's care
