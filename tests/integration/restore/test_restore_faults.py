"""Faults injected into a running `opstower restore` (a real subprocess): SIGKILL at a step then
`--recover`, SIGTERM/SIGHUP mid-load, a session holding a lock, a blocked live database.

After each: the live database equals its state before the restore or the restored state (row
counts and a content digest per table), accepts connections, and no staging database is left.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from opstower_core.events import Status, StepLog
from opstower_core.restore import (
    RestoreOptions,
    interrupted_notice,
    plan_restore,
    recover_interrupted,
    run_restore,
)
from opstower_core.restore import journal as journal_mod
from support.restore import (
    allows_connections,
    contents,
    databases,
    insert_midway,
    make_live,
    plain_sql,
    write_artifact,
)
from support.servers import admin_conn, settings_toml

_PLAIN: dict[str, tuple[bytes, dict]] = {}


class Restore:
    """A live database (damaged after its backup), a plain artifact of the backed-up state, the CLI."""

    def __init__(self, pg, make_settings, tmp_path: Path, source) -> None:
        self.lv = make_live(pg, make_settings, damage=False, source=source)
        if source.live_name not in _PLAIN:  # every clone of the source holds the same data: dump it once
            _PLAIN[source.live_name] = plain_sql(self.lv)
        self.sql, self.meta = _PLAIN[source.live_name]
        self.lv.damage()
        self.pg, self.db, self.settings = pg, self.lv.db, self.lv.settings
        self.cfg = settings_toml(self.settings, tmp_path / "opstower.toml")
        self.procs: list[subprocess.Popen[str]] = []

    def artifact(self, stamp: str, sleep: float = 0) -> Path:
        sql = insert_midway(self.sql, f"SELECT pg_sleep({sleep});".encode()) if sleep else self.sql
        return write_artifact(self.settings.backup_dir, self.db, stamp, sql, self.meta)

    def cli(self, *args: str) -> subprocess.Popen[str]:
        # Its own session, so the test can stop whatever the killed run left running (psql).
        proc = subprocess.Popen([sys.executable, "-m", "opstower_core", "--config", str(self.cfg), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "opstower_core", "--config", str(self.cfg), *args],
                              capture_output=True, text=True, timeout=timeout)

    def journal(self) -> journal_mod.Journal | None:
        found = journal_mod.journals(self.settings.state_dir)
        return found[0] if found else None

    def leftovers(self) -> set[str]:
        return {d for d in databases(self.pg, self.db) if d != self.db and "_pre_restore_" not in d}

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


@pytest.fixture
def rs(pg, make_settings, tmp_path, source) -> Iterator[Restore]:
    r = Restore(pg, make_settings, tmp_path, source)
    yield r
    r.close()


def wait_for(what: str, check: Callable[[], object], timeout: float = 60, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the restore ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def session(pg, query: str) -> Callable[[], bool]:
    """True once a session of the restore runs a query LIKE `query` (active or waiting)."""

    def check() -> bool:
        with admin_conn(pg) as c:
            return c.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'"
                             " AND pid <> pg_backend_pid()", (query,)).fetchone() is not None

    return check


def holding(pg, sql: str, dbname: str = "postgres") -> psycopg.Connection:
    """A client session that runs `sql` in an open transaction and keeps its locks."""
    info = pg.conninfo(dbname)
    info["application_name"] = "lock-holder"
    conn = psycopg.connect(**info)
    conn.execute(sql)
    return conn


# -- SIGKILL at a step, then --recover ---------------------------------------------------------

KILL_POINTS = ["swap_during_load", "swap_between_block_and_swap", "swap_right_after_swap", "in_place_during_load"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_recover_leaves_live_before_or_restored(rs: Restore, point: str):
    before, restored = rs.lv.damaged, rs.lv.backed_up
    in_place = point.startswith("in_place")
    art = rs.artifact("20250201_000000", sleep=30 if point.endswith("during_load") else 0)
    holder = None
    if point == "swap_between_block_and_swap":
        # The rename waits for this lock, after connections were blocked: the kill lands in between.
        holder = holding(rs.pg, f'COMMENT ON DATABASE "{rs.db}" IS \'held\'')
    proc = rs.cli("restore", str(art), "--force", *(["--in-place"] if in_place else []))
    if point.endswith("during_load"):
        wait_for("the load", session(rs.pg, "%pg_sleep%"), proc=proc)
    elif point == "swap_between_block_and_swap":
        wait_for("the swap waiting for the lock", session(rs.pg, "ALTER DATABASE%RENAME%"), proc=proc)
        assert not allows_connections(rs.pg, rs.db)  # blocked, not yet switched
    else:
        wait_for("the old database", lambda: any("_pre_restore_" in d for d in databases(rs.pg, rs.db)), proc=proc)
    proc.kill()
    proc.wait()
    if holder is not None:
        holder.rollback()  # the dead run's rename never commits: its client is gone
        holder.close()
    j = rs.journal()
    if point != "swap_right_after_swap":  # there the run may have finished its bookkeeping first
        assert j is not None and not j.alive
        notice = interrupted_notice(rs.settings.state_dir)
        assert notice and "opstower restore --recover" in notice and rs.db in notice
        refused = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True)))
        assert not refused.ok and "restore --recover" in refused.sentence  # a new restore waits for the recovery
        assert rs.journal() is not None

    t0 = time.monotonic()
    out = rs.run("restore", "--recover")
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    now = contents(rs.pg, rs.db)
    if point == "swap_right_after_swap":
        assert now == restored
        olds = [d for d in databases(rs.pg, rs.db) if "_pre_restore_" in d]
        assert len(olds) == 1 and contents(rs.pg, olds[0]) == before
    else:
        assert now == before, out.stdout
        assert "as it was before the restore" in out.stdout or "put back from the pre-restore backup" in out.stdout
    assert allows_connections(rs.pg, rs.db)
    assert rs.leftovers() == set()
    assert rs.journal() is None and interrupted_notice(rs.settings.state_dir) is None
    assert took < 60
    again = rs.run("restore", "--recover")  # nothing left: says so, changes nothing
    assert again.returncode == 0 and "No interrupted restore" in again.stdout


def test_recover_after_a_committed_swap_keeps_the_restored_database(rs: Restore, monkeypatch):
    """The kill lands after the swap's commit and before the journal is removed (made certain here)."""
    monkeypatch.setattr(journal_mod, "remove", lambda path: None)
    art = rs.artifact("20250202_000000")
    result = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True)))
    assert result.ok, result.sentence
    j = rs.journal()
    assert j is not None and j.step == "swap"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    j.pid = dead.pid  # as if this process had been killed there
    journal_mod.write(j.path, j)
    monkeypatch.undo()
    sentence = recover_interrupted(rs.settings)
    assert "had switched" in sentence and result.old_database in sentence
    assert contents(rs.pg, rs.db) == rs.lv.backed_up and allows_connections(rs.pg, rs.db)
    assert rs.journal() is None


def test_sigkill_during_the_safety_copy_after_the_switch_leaves_nothing_to_recover(rs: Restore):
    """A swap's pre-restore copy runs after the switch: killed there, the restored database is in service, the
    old one kept, no journal to finish or undo, and no half-written copy listed as a backup."""
    art = rs.artifact("20250203_000000")
    proc = rs.cli("restore", str(art), "--force", "--json")
    assert proc.stdout is not None
    for line in proc.stdout:  # the JSON event stream: kill as the copy starts
        if '"step_started"' in line and '"pre_backup"' in line:
            break
    else:
        raise AssertionError(f"the run ended before its safety copy: {proc.stderr.read() if proc.stderr else ''}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert contents(rs.pg, rs.db) == rs.lv.backed_up and allows_connections(rs.pg, rs.db)
    olds = [d for d in databases(rs.pg, rs.db) if "_pre_restore_" in d]
    assert len(olds) == 1 and contents(rs.pg, olds[0]) == rs.lv.damaged
    assert rs.journal() is None and interrupted_notice(rs.settings.state_dir) is None
    assert rs.leftovers() == set()
    assert not list(rs.settings.backup_dir.glob("pre_restore_*.dump.zst"))  # under a temporary name only
    listed = rs.run("list", "--local-only", "--json")
    assert listed.returncode == 0 and "pre_restore_" not in listed.stdout, listed.stdout
    again = rs.run("restore", "--recover")
    assert again.returncode == 0 and "No interrupted restore" in again.stdout


# -- SIGTERM / SIGHUP mid-load: rolled back like Ctrl-C ------------------------------------------

@pytest.mark.parametrize(("mode", "sig"), [("swap", signal.SIGTERM), ("in_place", signal.SIGTERM),
                                           ("swap", signal.SIGHUP)])
def test_signal_mid_load_rolls_back_and_exits_128_plus_n(rs: Restore, mode: str, sig: int):
    art = rs.artifact("20250203_000000", sleep=30)
    proc = rs.cli("restore", str(art), "--force", *(["--in-place"] if mode == "in_place" else []))
    wait_for("the load", session(rs.pg, "%pg_sleep%"), proc=proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert contents(rs.pg, rs.db) == rs.lv.damaged
    assert allows_connections(rs.pg, rs.db) and rs.leftovers() == set()
    assert rs.journal() is None
    line = [ln for ln in err.splitlines() if ln.startswith("ERROR:")]
    assert len(line) == 1 and "cancelled" in line[0].lower(), err
    assert ("put back from the pre-restore backup" if mode == "in_place" else f"{rs.db} is unchanged") in line[0]


# -- locks: named, bounded, and Ctrl-C stops the wait ------------------------------------------------

def test_lock_on_the_database_is_named_and_bounded_then_rolled_back(rs: Restore):
    holder = holding(rs.pg, f'COMMENT ON DATABASE "{rs.db}" IS \'held\'')
    try:
        art = rs.artifact("20250204_000000")
        out = rs.run("restore", str(art), "--force", "--wait-for-locks", "1")
    finally:
        pid = holder.info.backend_pid
        holder.rollback()
        holder.close()
    assert out.returncode == 1, out.stderr
    assert f"pid {pid}" in out.stderr and "lock-holder" in out.stderr and "COMMENT ON DATABASE" in out.stderr
    assert "pg_terminate_backend" in out.stderr and "--wait-for-locks" in out.stderr
    assert contents(rs.pg, rs.db) == rs.lv.damaged
    assert allows_connections(rs.pg, rs.db) and rs.leftovers() == set() and rs.journal() is None


@pytest.mark.parametrize("where", ["table lock at the pre-restore backup", "database lock at the swap"])
def test_ctrl_c_while_blocked_on_a_lock_stops_within_2_seconds(rs: Restore, where: str):
    if where.startswith("table"):
        holder = holding(rs.pg, "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE", rs.db)
        waiting = "%COPY%"  # pg_dump's data query waits for the lock (or its lock of the table)
        mode = ["--in-place"]  # a swap takes its safety copy after the switch, from the kept database
    else:
        holder = holding(rs.pg, f'COMMENT ON DATABASE "{rs.db}" IS \'held\'')
        waiting = "ALTER DATABASE%RENAME%"
        mode = []
    try:
        art = rs.artifact("20250205_000000")
        proc = rs.cli("restore", str(art), "--force", "--wait-for-locks", "300", *mode)

        def blocked() -> bool:
            with admin_conn(rs.pg) as c:
                return c.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s",
                                 (holder.info.backend_pid,)).fetchone() is not None

        wait_for(f"the restore to wait ({waiting})", blocked, proc=proc)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        wait_for("the wait to end", lambda: not blocked(), timeout=10)
        stopped = time.monotonic() - t0
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 130, err
    assert stopped < 2.0, f"the wait went on {stopped:.1f} s after Ctrl-C"
    assert took < 10, f"the rollback and exit took {took:.1f} s"
    assert contents(rs.pg, rs.db) == rs.lv.damaged
    assert allows_connections(rs.pg, rs.db) and rs.leftovers() == set() and rs.journal() is None


# -- a block left behind is never carried over, and is explained ------------------------------------

def test_a_leftover_block_is_explained_and_not_copied_onto_the_restored_database(rs: Restore):
    with admin_conn(rs.pg) as c:
        c.execute(f'ALTER DATABASE "{rs.db}" WITH ALLOW_CONNECTIONS false')
    out = rs.run("backup", "--local-only")
    assert out.returncode != 0
    assert "refuses connections" in out.stderr and "opstower restore --recover" in out.stderr
    assert "check that the server is up" not in out.stderr
    art = rs.artifact("20250206_000000")
    # In place, the safety copy comes first and cannot be taken: refused, explained, nothing changed.
    refused = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True,
                                                                                                  in_place=True)))
    assert not refused.ok and "opstower restore --recover" in refused.sentence
    assert not allows_connections(rs.pg, rs.db)
    # A swap keeps the blocked database, renamed, so it goes through: the block is explained and carried
    # neither onto the restored database nor the kept one, whose safety copy is then taken after the switch.
    events: list = []
    swapped = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True)),
                          on_event=events.append)
    assert swapped.ok, swapped.sentence
    assert any(isinstance(e, StepLog) and "refuses connections now" in e.line for e in events)
    st = {s.step: s for s in swapped.steps}
    assert st["pre_backup"].status == Status.PASS and st["pre_backup"].data["after_service"]
    assert allows_connections(rs.pg, rs.db) and contents(rs.pg, rs.db) == rs.lv.backed_up
    assert swapped.old_database and allows_connections(rs.pg, swapped.old_database)
    assert contents(rs.pg, swapped.old_database) == rs.lv.damaged
    # CONNECTION LIMIT 0 (the block where ALLOW_CONNECTIONS may not be changed) does not stop a
    # superuser: the restore runs, and the restored database must not inherit the block.
    with admin_conn(rs.pg) as c:
        c.execute(f'ALTER DATABASE "{rs.db}" WITH ALLOW_CONNECTIONS true CONNECTION LIMIT 0')
    result = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True)))
    assert result.ok, result.sentence
    assert allows_connections(rs.pg, rs.db)
    assert contents(rs.pg, rs.db) == rs.lv.backed_up


# -- room on the server, leftovers of killed runs ---------------------------------------------------

def test_a_staging_copy_that_would_not_fit_is_refused_before_anything_changes(rs: Restore):
    art = rs.artifact("20250207_000000")
    plan = plan_restore(rs.settings, str(art), options=RestoreOptions(force=True))
    # As if the live database were 10 PiB: no disk here has room for a staging copy of it.
    result = run_restore(rs.settings, dataclasses.replace(plan, live_size=10 * 1024**5))
    assert not result.ok
    assert "free in" in result.sentence and "not enough" in result.sentence and "--in-place" in result.sentence
    assert contents(rs.pg, rs.db) == rs.lv.damaged and allows_connections(rs.pg, rs.db)
    assert rs.leftovers() == set() and rs.journal() is None
    events: list = []
    ok = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True)),
                     on_event=events.append)
    assert ok.ok, ok.sentence
    room = [e.line for e in events if isinstance(e, StepLog) and "Free space on the server" in e.line]
    assert room and "needs about" in room[0] and "base" in room[0]  # measured in the data directory


def test_leftovers_of_killed_runs_are_listed_discarded_and_cleaned_by_the_next_restore(rs: Restore):
    from datetime import datetime

    fresh = datetime.now().strftime("%Y%m%d_%H%M%S")
    names = {"old_staging": f"{rs.db}_restore_20200101_000000", "old_verify": f"{rs.db}_verify_20200101_000000",
             "fresh_staging": f"{rs.db}_restore_{fresh}"}
    with admin_conn(rs.pg) as c:
        for n in names.values():
            c.execute(f'CREATE DATABASE "{n}"')
    listed = rs.run("restore", "--list-old")
    assert listed.returncode == 0, listed.stderr
    lines = {n: next((ln for ln in listed.stdout.splitlines() if ln.startswith(n + " ")), "") for n in names.values()}
    assert "LEFTOVER of a killed restore run" in lines[names["old_staging"]]
    assert "removable with --discard-old" in lines[names["old_staging"]]
    assert "LEFTOVER of a killed verify run" in lines[names["old_verify"]]
    assert "may still be going" in lines[names["fresh_staging"]] and "kept" in lines[names["fresh_staging"]]
    out = rs.run("restore", "--discard-old", names["old_verify"], "--force")
    assert out.returncode == 0, out.stderr
    refused = rs.run("restore", "--discard-old", names["fresh_staging"], "--force")
    assert refused.returncode == 1 and "not proven abandoned" in refused.stderr
    art = rs.artifact("20250208_000000")
    result = run_restore(rs.settings, plan_restore(rs.settings, str(art), options=RestoreOptions(force=True)))
    assert result.ok, result.sentence
    left = databases(rs.pg, rs.db)
    assert names["old_staging"] not in left and names["old_verify"] not in left
    assert names["fresh_staging"] in left  # its run may still be going: never taken from under it
