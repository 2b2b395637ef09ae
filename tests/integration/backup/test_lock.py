"""One backup per database at a time: a held lock names its holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.errors import LockHeld
from opstower_core.repo.catalog import list_catalog
from opstower_core.runs.lock import RunLock
from support.servers import create_database, unique

SQL = "CREATE TABLE public.t (id integer PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 50);"
HOLD = """
import sys, time
from opstower_core.runs.lock import RunLock
lock = RunLock(sys.argv[1], sys.argv[2]).acquire()  # keep a reference: the open file holds the flock
print("held", flush=True)
time.sleep(120)
"""


def write_config(tmp_path: Path, pg, dbs: list[str]) -> Path:
    lines = [f'backup_dir = "{tmp_path / "backups"}"', f'state_dir = "{tmp_path / "state"}"',
             f'pg_bin = "{pg.bin_dir}"', "min_free_gb = 0", f'default_target = "{dbs[0]}"']
    for db in dbs:
        lines += [f"[targets.{db}]", f'dbname = "{db}"', f'host = "{pg.host}"', f"port = {pg.port}",
                  f'user = "{pg.user}"']
    path = tmp_path / "opstower.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def latest_log(tmp_path: Path) -> str:
    logs = sorted((tmp_path / "backups" / "logs").glob("backup_*.log"), key=lambda p: p.stat().st_mtime_ns)
    return logs[-1].read_text()


def test_concurrent_backup_is_refused_then_a_dead_holders_lock_is_taken_over(pg, tmp_path, capsys) -> None:
    db, other = unique("lock_a"), unique("lock_b")
    create_database(pg, db, SQL)
    create_database(pg, other, SQL)
    cfg = write_config(tmp_path, pg, [db, other])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "state"), db], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = main(["--config", str(cfg), "backup", "--local-only"])
        out, err = capsys.readouterr()
        assert rc == 1 and "Traceback" not in out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR: Another backup of database")
        m = re.search(r"\(pid (\d+) on (\S+), since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d) "
                      r"\((\d+) s ago\), command: (.+)\);", lines[0])
        assert m, lines[0]
        assert int(m[1]) == holder.pid and m[2] == socket.gethostname()
        assert abs(datetime.fromisoformat(m[3]).timestamp() - time.time()) < 60 and int(m[4]) < 60
        assert m[5] == f"opstower {tmp_path / 'state'} {db}"  # the holder's argv (here the HOLD script's)
        assert f"(kill {holder.pid})" in lines[0]
        settings = load_settings(cfg)
        assert list_catalog(settings, include_s3=False).entries == []
        assert not [p for p in settings.backup_dir.iterdir() if p.name.startswith(".")]

        # The lock is per database: another database backs up meanwhile.
        assert main(["--config", str(cfg), "backup", "--local-only", "-d", other]) == 0
        capsys.readouterr()
    finally:
        holder.kill()  # dies holding the lock: its file still names it, the kernel dropped the flock
        holder.wait()

    lock_file = tmp_path / "state" / "locks" / f"{db}.lock"
    assert json.loads(lock_file.read_text())["pid"] == holder.pid
    rc = main(["--config", str(cfg), "backup", "--local-only"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    log = latest_log(tmp_path)
    assert re.search(rf"^\[WARN\] .* - Took over a stale lock left by pid {holder.pid}$", log, re.M), log
    assert "[WARN] " in out and f"stale lock left by pid {holder.pid}" in out
    assert len(list_catalog(settings, db, include_s3=False).entries) == 1
    assert lock_file.read_text() == ""  # released cleanly: the next run takes over nothing

    assert main(["--config", str(cfg), "backup", "--local-only", "--format", "plain"]) == 0
    capsys.readouterr()
    assert "stale lock" not in latest_log(tmp_path)


def test_stale_lock_file_with_a_dead_pid_is_taken_over(pg, make_settings) -> None:
    db = unique("lock_stale")
    create_database(pg, db, SQL)
    settings = make_settings(db)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file = settings.state_dir / "locks" / f"{db}.lock"
    lock_file.parent.mkdir(parents=True)
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": time.time() - 3600,
                                     "purpose": "backup"}))
    events: list = []
    result = run_backup(settings, options=BackupOptions(local_only=True), on_event=events.append)
    assert result.path.exists()
    warns = [e.line for e in events if getattr(e, "level", "") == "WARN"]
    assert f"Took over a stale lock left by pid {dead.pid}" in warns
    assert f"stale lock left by pid {dead.pid}" in result.log_path.read_text()


def test_lock_held_in_process_names_this_process(tmp_path: Path) -> None:
    with RunLock(tmp_path, "db1", "restore"):
        with pytest.raises(LockHeld) as exc:
            RunLock(tmp_path, "db1").acquire()
        assert f"Another restore of database 'db1' is running (pid {os.getpid()} on {socket.gethostname()}" in \
            exc.value.sentence
        with RunLock(tmp_path, "db2"):  # other databases are independent
            pass
    with RunLock(tmp_path, "db1") as again:  # released on exit
        assert again.took_over is None


def test_temp_files_of_a_killed_run_are_removed_under_the_lock(pg, make_settings) -> None:
    db = unique("lock_tmp")
    create_database(pg, db, SQL)
    settings = make_settings(db)
    d = settings.backup_dir
    d.mkdir(parents=True)
    ours = [d / f".{db}_20260101_000000.dump.zst.tmp", d / f".pre_restore_{db}_20260102_000000.sql.gz.tmp"]
    theirs = d / f".{db}x_20260101_000000.dump.zst.tmp"  # another database's run may be live
    for p in [*ours, theirs]:
        p.write_bytes(b"half a dump")
    events: list = []
    run_backup(settings, options=BackupOptions(local_only=True), on_event=events.append)
    assert not any(p.exists() for p in ours) and theirs.exists()
    warns = [e.line for e in events if getattr(e, "level", "") == "WARN"]
    assert sorted(warns) == sorted(f"Removed {p.name}, left by an interrupted run" for p in ours)
