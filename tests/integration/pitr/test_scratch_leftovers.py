"""A recovery killed outright (SIGKILL, a crash) leaves its scratch cluster running: the next
recovery stops and removes it, and never touches a cluster that was kept or is not provably ours."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from opstower_core.config import load_settings
from opstower_core.devenv.embedded import EmbeddedPostgres
from opstower_core.pitr import discard_leftovers
from opstower_core.pitr.recover import KEPT_FILE, OWNER_FILE, scratch_root


def _owned(directory: Path, pid: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / OWNER_FILE).write_text(f"{socket.gethostname()} {pid}\n")
    return directory


def test_a_dead_runs_cluster_is_stopped_and_removed_a_kept_live_or_unknown_one_never(tmp_path):
    cfg = tmp_path / "opstower.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\nbackup_dir = "{tmp_path / "backups"}"\n')
    settings = load_settings(cfg)
    root = scratch_root(settings)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the killed recovery's
    dead = gone.pid

    leftover = EmbeddedPostgres(root / f"srv-20261130T010101-{dead}")
    leftover.start()
    try:
        _owned(leftover.directory, dead)
        kept = _owned(root / f"srv-20261130T020202-{dead}", dead)
        (kept / KEPT_FILE).write_text("kept\n")
        alive = _owned(root / f"srv-20261130T030303-{os.getpid()}", os.getpid())
        unknown = root / f"srv-20261130T040404-{dead}"  # no owner mark (made by hand, or by an older version)
        unknown.mkdir()

        postmaster = int((leftover.pgdata / "postmaster.pid").read_text().split()[0])
        removed = discard_leftovers(settings)

        assert removed == [leftover.directory.name]
        assert not leftover.directory.exists()
        try:
            os.kill(postmaster, 0)
            raise AssertionError(f"the leftover cluster's postmaster {postmaster} still runs")
        except ProcessLookupError:
            pass
        assert kept.exists() and alive.exists() and unknown.exists()
        assert discard_leftovers(settings) == []
    finally:
        if leftover.pgdata.exists():
            leftover.stop()
