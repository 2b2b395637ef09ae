"""The demo archives WAL by default; its first base backup runs in the background.

Regression (the reason this test was once removed): the demo's PostgreSQL inherited the
AWS_ENDPOINT_URL of whoever started it (here the session's shared SeaweedFS, as in the full
suite), and the environment wins over the config file, so its archive_command wrote the WAL
into that other store and the demo's own window had no latest point.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from opstower_core.config import load_settings
from opstower_core.devenv import demo
from opstower_core.devenv.demo import DemoEnvironment
from opstower_core.pitr import pitr_status
from opstower_core.runs.history import StateStore


def test_demo_archives_by_default_base_backup_in_background_then_reused(s3, monkeypatch):
    monkeypatch.delenv("OPSTOWER_DEMO_PITR", raising=False)
    # The delay only yields the CPU to the console's first paint; no console here, and the test waits
    # for the background job anyway: 5 s of nothing.
    monkeypatch.setattr(demo, "PITR_SETUP_DELAY_SECONDS", 0.0)
    for key, value in s3.env().items():  # another store in the environment, as the s3 fixture leaves it
        monkeypatch.setenv(key, value)
    root = Path(tempfile.mkdtemp(prefix="opstower-test-demo-pitr-"))
    directory = root / "opstower-demo"
    env = DemoEnvironment(directory)
    assert env.pitr  # the default
    try:
        _first_start(env, s3)
        _second_start(directory)
        _opted_out(directory)
    finally:
        pg = env.pg_directory()
        shutil.rmtree(root, ignore_errors=True)
        if not pg.is_relative_to(root):
            shutil.rmtree(pg.parent, ignore_errors=True)


def _first_start(env: DemoEnvironment, s3) -> None:
    try:
        started = time.monotonic()
        env.start()
        env.use_environment()
        env.seed()
        first_paint = time.monotonic() - started  # the console opens here
        job = env.base_backup
        assert job is not None, "the first base backup was not started"
        assert job.wait(240), "the background base backup did not finish"
        assert job.error == "" and job.backup is not None, job.error
        print(f"demo ready for the console in {first_paint:.1f}s; base backup {job.seconds:.1f}s in the background")
        settings = env.settings()
        runs = StateStore(settings.state_dir).runs("base-backup")
        assert [(r.status, r.artifact) for r in runs] == [("success", job.backup.backup_id)]
        st = pitr_status(settings, env.target())
        deadline = time.monotonic() + 60
        while st.latest is None and time.monotonic() < deadline:
            time.sleep(1)  # the segment that ends the backup is archived asynchronously
            st = pitr_status(settings, env.target())
        assert [b.status for b in st.backups] == ["DONE"] and not st.gaps
        assert st.earliest is not None and st.latest is not None and st.earliest <= st.latest, st.as_dict()
        assert st.archiver and st.archiver["failed_count"] == 0
        assert "pitr" in settings.raw  # the console's PITR line is shown
        assert load_settings(env.config_path).pitr.enabled  # `OPSTOWER_CONFIG=… opstower pitr status` works
    finally:
        env.stop()
    leaked = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="pitr/demo/").get("KeyCount", 0)
    assert leaked == 0, "the demo's archive_command wrote into the store of its caller's environment"


def _second_start(directory: Path) -> None:
    """Archiving still the default: no restart, no second base backup, nothing to wait for at stop."""
    again = DemoEnvironment(directory)
    lines: list[str] = []
    started = time.monotonic()
    try:
        again.start(on_status=lines.append)
        again.use_environment()
        assert again.seed() == [] and again.base_backup is None
        assert not any("Restarting" in line for line in lines), lines
        assert len(StateStore(directory / "state").runs("base-backup")) == 1
    finally:
        again.stop()
    print(f"second start and stop: {time.monotonic() - started:.1f}s")


def _opted_out(directory: Path) -> None:
    """OPSTOWER_DEMO_PITR=0 on a demo that archived: archiving off (no failing pushes), a new base backup when back on."""
    off = DemoEnvironment(directory, pitr=False)
    try:
        off.start()
        with off._admin() as conn:
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
        assert StateStore(directory / "state").get("demo.base_backup") is None
        assert "pitr" not in off.settings().raw
    finally:
        off.stop()
