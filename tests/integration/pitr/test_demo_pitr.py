"""The demo with OPSTOWER_DEMO_PITR=1: archiving on and a base backup, a recoverable window at once.

Opt-in because it adds ~29 s to the demo's first start (measured; the brief allowed ~10 s), so the
default demo (tests/integration/ops/test_demo.py) is unchanged.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from opstower_core.config import load_settings
from opstower_core.devenv.demo import DemoEnvironment
from opstower_core.pitr import pitr_status


def test_demo_with_pitr_shows_a_recoverable_window_and_reuses_it():
    root = Path(tempfile.mkdtemp(prefix="opstower-test-demo-pitr-"))
    directory = root / "opstower-demo"
    env = DemoEnvironment(directory, pitr=True)
    try:
        env.start()
        env.use_environment()
        env.seed()
        st = pitr_status(env.settings(), env.target())
        deadline = time.monotonic() + 60
        while st.latest is None and time.monotonic() < deadline:
            # The segment that ends the base backup is archived asynchronously: on a loaded machine it
            # can land a few seconds after the backup returns, and the window needs it.
            time.sleep(1)
            st = pitr_status(env.settings(), env.target())
        assert [b.status for b in st.backups] == ["DONE"] and not st.gaps
        assert st.earliest is not None and st.latest is not None and st.earliest <= st.latest
        assert st.archiver and st.archiver["failed_count"] == 0
        assert load_settings(env.config_path).pitr.enabled  # `OPSTOWER_CONFIG=… opstower pitr status` works
    finally:
        env.stop()
    again = DemoEnvironment(directory, pitr=True)
    try:
        again.start()  # archiving already on: no restart, the same archive
        again.use_environment()
        assert again.seed() == []
        assert len(pitr_status(again.settings()).backups) == 1
    finally:
        again.stop()
        pg = again.pg_directory()
        shutil.rmtree(root, ignore_errors=True)
        if not pg.is_relative_to(root):
            shutil.rmtree(pg.parent, ignore_errors=True)
