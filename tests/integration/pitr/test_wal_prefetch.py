"""wal-fetch with a spool: the launcher's fast path, the prefetcher, PostgreSQL's exit codes (no recovery here).

Against the real archive of an archiving server (pitr_env): the launcher is run as PostgreSQL runs it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from opstower_core.pitr import launcher_path
from opstower_core.pitr.prefetch import ensure_running, next_segment, running, stop
from opstower_core.pitr.wal import archived_copy

SEG = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def segments(pitr_env) -> list[str]:
    """Four consecutive archived segments of timeline 1."""
    names = []
    with pitr_env.conn() as c:
        c.execute("CREATE TABLE IF NOT EXISTS prefetch_t (n int)")
    for i in range(4):
        with pitr_env.conn() as c:
            c.execute("INSERT INTO prefetch_t VALUES (%s)", (i,))
        names.append(pitr_env.switch_wal())
    assert [next_segment(n, SEG) for n in names[:-1]] == names[1:], names
    return names


def _fetch(pitr_env, name: str, dest: Path, spool: Path, k: int = 3) -> tuple[int, float, str]:
    t0 = time.monotonic()
    out = subprocess.run([str(launcher_path(pitr_env.settings)), "wal-fetch", name, str(dest), "--spool", str(spool),
                          "--prefetch", str(k)], capture_output=True, text=True, timeout=120)
    return out.returncode, time.monotonic() - t0, out.stderr


def test_fetch_spools_the_next_segments_then_serves_them_fast_with_postgres_exit_codes(pitr_env, segments, tmp_path):
    s1, s2, s3, s4 = segments
    spool = tmp_path / "spool"
    try:
        # A miss: fetched from the archive as ever; a prefetcher starts and spools the K=3 next ones.
        rc, slow_s, err = _fetch(pitr_env, s1, tmp_path / "a", spool)
        assert rc == 0, err
        assert (tmp_path / "a").read_bytes() == archived_copy(pitr_env.settings, s1)[1]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not {s2, s3, s4} <= set(os.listdir(spool)):
            time.sleep(0.2)
        assert {s2, s3, s4} <= set(os.listdir(spool)), (os.listdir(spool), (spool / ".prefetch.log").read_text())
        assert running(spool)
        assert ensure_running(spool, 3, pitr_env.config) is False  # one prefetcher per spool
        time.sleep(1)  # the name after s4 is not archived yet: never spooled, not even empty
        after = next_segment(s4, SEG)
        assert after not in os.listdir(spool)
        assert not [n for n in os.listdir(spool) if n.startswith(".tmp-")]
        assert all((spool / n).stat().st_size == SEG for n in (s2, s3, s4))

        # A hit: moved into place by the launcher's first lines.
        rc, fast_s, err = _fetch(pitr_env, s2, tmp_path / "b", spool)
        assert rc == 0, err
        assert (tmp_path / "b").read_bytes() == archived_copy(pitr_env.settings, s2)[1]
        assert s2 not in os.listdir(spool)
        print(f"wal-fetch per call: archive {slow_s:.2f} s, spool {fast_s:.3f} s")
        assert fast_s < slow_s / 3, (fast_s, slow_s)

        # A spool entry serves its exact name only: the same segment on timeline 2 is not it (and
        # the archive lacks it: the not-found code that ends recovery, not a code above 125).
        other_tli = "00000002" + s3[8:]
        rc, _, err = _fetch(pitr_env, other_tli, tmp_path / "c", spool)
        assert rc == 1, err
        assert not (tmp_path / "c").exists() and s3 in os.listdir(spool)
        # A history file is never taken from the spool, whatever sits there under its name.
        (spool / "00000009.history").write_text("not a history file")
        rc, _, err = _fetch(pitr_env, "00000009.history", tmp_path / "d", spool)
        assert rc == 1, err
        assert not (tmp_path / "d").exists()
        # Past the end of the archive: exit 1, nothing spooled for it.
        rc, _, err = _fetch(pitr_env, after, tmp_path / "e", spool)
        assert rc == 1, err
        assert after not in os.listdir(spool) and not (tmp_path / "e").exists()
    finally:
        stop(spool)
    assert not running(spool)
