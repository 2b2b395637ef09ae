"""`opstower demo`: its own services and directories, three backups on the first run, reuse after."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opstower_core.devenv.demo import MARKER, DemoEnvironment, default_demo_dir, pitr_wanted
from opstower_core.errors import OpsError
from opstower_core.repo.catalog import list_catalog
from opstower_core.runs.history import StateStore
from opstower_core.verify import verify


def _processes_using(path: Path) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd:
            found.append(cmd)
    return found


def test_demo_dir_default_and_override(tmp_path):
    assert default_demo_dir({"OPSTOWER_DEMO_DIR": str(tmp_path / "d")}) == tmp_path / "d"
    assert default_demo_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "opstower-demo"


def test_archiving_is_the_default_and_opting_out_is_explicit():
    assert pitr_wanted({}) and pitr_wanted({"OPSTOWER_DEMO_PITR": "1"})
    assert not any(pitr_wanted({"OPSTOWER_DEMO_PITR": v}) for v in ("0", "off", "no", "false"))


def test_root_keeps_a_private_home_private(tmp_path):
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    env = DemoEnvironment(private / "demo")
    where = env.pg_directory()
    if os.geteuid() == 0:
        # pgserver would open every parent to other users: the data goes under /var/tmp instead.
        assert where.parent.parent == Path("/var/tmp") and where.name == "pg"
    else:
        assert where == private / "demo" / "pg"


def test_refuses_a_directory_that_is_not_a_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(OpsError, match="not a demo directory"):
        DemoEnvironment(tmp_path).start()
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.fixture
def demo_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo") / "opstower-demo"
    yield directory
    pg_dir = DemoEnvironment(directory).pg_directory()
    if not pg_dir.is_relative_to(directory):
        shutil.rmtree(pg_dir.parent, ignore_errors=True)  # the root case: the data lived under /var/tmp


def test_demo_first_run_then_reuse_then_cli(demo_dir, monkeypatch):
    directory = demo_dir
    monkeypatch.setenv("PGHOST", "/should/never/be/used")
    # Archiving off (its own test: tests/integration/pitr/test_demo_pitr.py): this one stays fast.
    env = DemoEnvironment(directory, pitr=False)
    try:
        env.start()
        env.use_environment()
        assert "PGHOST" not in os.environ and os.environ["AWS_ENDPOINT_URL"] == env.s3.endpoint_url
        names = env.seed()
        settings = env.settings()
        assert settings.backup_dir == directory / "backups" and settings.state_dir == directory / "state"
        catalog = list_catalog(settings)
        where = {e.filename: e.where for e in catalog.entries}
        local_only, both, corrupted = names
        assert where == {local_only: "local", both: "both", corrupted: "local"}
        assert catalog.entries[-1].filename == corrupted  # older than both good ones
        bad = verify(settings, corrupted, state=StateStore(settings.state_dir))
        checks = {r.step: r.status.value for r in bad.results}
        assert checks["exists"] == "PASS" and checks["compression"] == "FAIL" and checks["metadata"] == "FAIL"
        assert StateStore(settings.state_dir).last("verify", "opstower", both).status == "PASS"
    finally:
        env.stop()
    assert os.environ["PGHOST"] == "/should/never/be/used"  # the operator's environment is back
    assert not _processes_using(directory / "s3")

    # Second run, from the command line: the same data reused, everything but the console, the backup
    # list on stdout, both services stopped.
    proc = subprocess.run([sys.executable, "-m", "opstower_core", "demo", "--no-console"],
                          env={**os.environ, "OPSTOWER_DEMO_DIR": str(directory), "OPSTOWER_DEMO_PITR": "0"},
                          capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert listed == set(names)  # nothing new taken
    assert "Reusing the demo data" in proc.stderr
    assert (directory / MARKER).exists() and (directory / "config.toml").exists()
    assert not _processes_using(directory / "s3")
    assert not (env.pg_directory() / "pgdata" / "postmaster.pid").exists()
