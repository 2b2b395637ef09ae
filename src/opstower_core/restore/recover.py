"""Finishing or undoing a restore that was killed: `opstower restore --recover`.

The journal (journal.py) says what the run meant to do; the server says how far it got.
The decision is made from what exists now, so recovery is right whichever instant the
run died at, and running it twice does nothing more:

| mode      | on the server now                          | recovery                                      |
|-----------|--------------------------------------------|-----------------------------------------------|
| swap      | old and live exist, staging gone           | the swap committed: keep the restored live    |
| swap      | live exists (staging maybe)                | not switched: drop staging, unblock live      |
| in place  | live exists                                | drop the work database, unblock live          |
| in place  | live missing, checked work db, step "swap" | finish the rename (the restored state)        |
| in place  | live missing otherwise                     | reload the pre-restore backup into live       |
| new / tables | anything                                | drop the unfinished work database             |

Either way the live database ends equal to its state before the restore or to the restored
state, never missing, and accepting connections as it did before.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from opstower_core.advice import say
from opstower_core.config import DEFAULT_LOCK_WAIT, Settings, Target
from opstower_core.errors import OpsError
from opstower_core.events import EventSink, Reporter, Status
from opstower_core.pg.admin import (
    ConnState,
    DbProps,
    admin,
    apply_props_sql,
    create_database,
    db_exists,
    derived_name,
    drop_database,
    free_name,
    guarded,
    in_place_statements,
    in_transaction,
    open_state,
    terminate_sessions,
    unblock_sql,
)
from opstower_core.pg.load import LoadSpec, load
from opstower_core.pg.tools import PgTools, select_tools, server_info
from opstower_core.repo.catalog import CatalogEntry, resolve
from opstower_core.restore import journal
from opstower_core.restore.checks import check_restored
from opstower_core.restore.journal import Journal
from opstower_core.runs.history import StateStore
from opstower_core.runs.lock import RunLock

STEP = "recover"


def recover_interrupted(settings: Settings, target_name: str | None = None,
                        on_event: EventSink | None = None) -> str:
    """Finish or undo every restore that was killed (of `target_name` only, when given); one sentence.

    Raises OpsError when a recovery could not complete (its journal is kept: run it again) or
    when the restore named is still running. Returns what was done, or that nothing was needed.
    """
    found = journal.journals(settings.state_dir)
    if target_name is not None:
        live = settings.target(target_name).dbname
        found = [j for j in found if j.target == target_name or j.live == live]
    if not found:
        return "No interrupted restore to recover: nothing was changed."
    running = [j for j in found if j.alive]
    done = [_recover_one(settings, j, Reporter(on_event)) for j in found if not j.alive]
    if running and not done:
        j = running[0]
        raise OpsError(f"The {j.describe()} is still running", "nothing was changed",
                       f"wait for it to finish, or stop it (kill {j.pid}) and {say('recover_interrupted')} again")
    tail = [f"(the {j.describe()} is still running and was left alone)" for j in running]
    return " ".join(done + tail)


def _recover_one(settings: Settings, j: Journal, r: Reporter) -> str:
    """One journal: decide from the server's state, act, record, remove the journal."""
    try:
        target = settings.target(j.target)
    except OpsError:
        raise OpsError(f"The interrupted restore of {j.live} used target {j.target!r}, which is not configured",
                       "nothing was changed", say("recover_same_config")) from None
    r.started(STEP, f"Recovering the interrupted restore of {j.live}")
    t0 = time.monotonic()
    wait = settings.wait_for_locks_seconds or DEFAULT_LOCK_WAIT
    try:
        with RunLock(settings.state_dir, f"{j.live}.restore", "restore recovery"), admin(target, j.live) as conn, \
                guarded(conn, None, wait, [n for n in (j.live, j.work, j.old) if n], "the recovery"):
            sentence = _decide(settings, target, conn, j, r)
    except Exception as exc:
        detail = getattr(exc, "sentence", None) or str(exc).strip().splitlines()[0]
        r.finished(STEP, Status.FAIL, detail, time.monotonic() - t0)
        StateStore(settings.state_dir).record("restore_recover", j.live, "failed", artifact=j.artifact,
                                              error=detail, details=j.as_dict())
        if isinstance(exc, OpsError):
            raise OpsError(f"Recovering the interrupted restore of {j.live} failed: {exc.what.rstrip('.')}",
                           f"the journal {j.path} is kept",
                           exc.next_step or f"fix the cause, then {say('recover_interrupted')} again") from None
        raise
    journal.remove(j.path)
    StateStore(settings.state_dir).record("restore_recover", j.live, "success", artifact=j.artifact,
                                          details={**j.as_dict(), "sentence": sentence})
    r.finished(STEP, Status.PASS, sentence, time.monotonic() - t0)
    return sentence


def _decide(settings: Settings, target: Target, conn: psycopg.Connection, j: Journal, r: Reporter) -> str:
    live, work, old = j.live, j.work, j.old
    has = {n: db_exists(conn, n) for n in (live, work, old) if n}
    _drop_rollback_leftovers(conn, j, r)
    if j.mode == "swap" and old and has[old] and has[live] and not has[work]:
        _open(conn, live, j.before, r)
        return (f"The interrupted restore of {live} had switched: {live} holds the restored data from {j.artifact} "
                f"and accepts connections; the previous database is kept as {old} (discard it with "
                f"{say('discard_old', db=old)} once checked).")
    if j.mode == "new_db" and j.step == "swap" and has[live] and not has[work]:
        return f"The interrupted restore had created {live} from {j.artifact}: it is complete; nothing to undo."
    if j.mode == "in_place" and not has[live]:
        if has[work] and j.step == "swap" and j.phase == "running":
            return _finish_rename(conn, j, r)
        _drop(conn, work, r)
        return _reload(settings, target, conn, j, r)
    dropped = _drop(conn, work, r)
    if not has[live]:
        return f"The interrupted restore of {live} was undone: {dropped or 'nothing was left to drop'}."
    opened = _open(conn, live, j.before, r)
    restored = j.mode == "in_place" and j.step == "swap" and not has[work]
    state = (f"{live} holds the restored data from {j.artifact} (the switch had committed)" if restored
             else f"{live} is as it was before the restore")
    extra = "; ".join(x for x in (dropped, opened) if x)
    return f"The interrupted restore of {live} was recovered: {state}" + (f"; {extra}." if extra else ".")


def _drop(conn: psycopg.Connection, name: str, r: Reporter) -> str:
    if not db_exists(conn, name):
        return ""
    r.log(STEP, drop_database(conn, name))
    return f"the unfinished database {name} was dropped"


def _drop_rollback_leftovers(conn: psycopg.Connection, j: Journal, r: Reporter) -> None:
    """An in-place rollback killed while reloading leaves `<live>_rollback_<stamp>`: never the live data."""
    if j.mode != "in_place" or not j.stamp:
        return
    base = derived_name(j.live, f"_rollback_{j.stamp}")
    for name in [base] + [derived_name(base, f"_{n}") for n in range(2, 6)]:
        _drop(conn, name, r)


def _open(conn: psycopg.Connection, live: str, before: ConnState | None, r: Reporter) -> str:
    """Give `live` its connection settings from before the restore, if a block is still on it."""
    if before is None:
        return ""  # the run never blocked it (new database, tables): its settings are its own
    allow, limit = conn.execute("SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = %s",
                                (live,)).fetchone()
    want = open_state(before)
    if (bool(allow), int(limit)) == (want.allow, want.limit):
        return ""
    sql = unblock_sql(live, want)
    conn.execute(sql)
    r.log(STEP, sql)
    return f"connections to {live} are allowed again"


def _finish_rename(conn: psycopg.Connection, j: Journal, r: Reporter) -> str:
    """In place, killed at the switch: the work database was loaded and checked; rename it into place."""
    terminate_sessions(conn, j.work, r, STEP)
    statements = in_place_statements(j.work, j.live, open_state(j.before) if j.before else None)
    in_transaction(conn, statements)
    for sql in statements:
        r.log(STEP, sql)
    return (f"The interrupted in-place restore of {j.live} was finished: the restored and checked copy of "
            f"{j.artifact} was renamed into place ({j.work} -> {j.live}).")


def _reload(settings: Settings, target: Target, conn: psycopg.Connection, j: Journal, r: Reporter) -> str:
    """In place, live missing: load the pre-restore backup into it, as the run's own rollback does."""
    if not j.pre_restore:
        raise OpsError(f"{j.live} is missing and the journal names no pre-restore backup", f"{j.live} does not exist",
                       say("restore_latest", db=j.live))
    try:
        entry = resolve(settings, j.pre_restore)
    except OpsError as exc:
        raise OpsError(f"{j.live} is missing and its pre-restore backup cannot be read ({exc.what})",
                       f"{j.live} does not exist", say("restore_other", db=j.live)) from None
    tools = select_tools(settings, server_info(conn).major)
    note = reload_pre_restore(settings, target, conn, tools, entry, j.live, j.props, j.stamp, r, STEP)
    return f"The interrupted in-place restore of {j.live} was rolled back: {note}."


def reload_pre_restore(settings: Settings, target: Target, conn: psycopg.Connection, tools: PgTools,
                       pre: CatalogEntry, live: str, props: DbProps | None, stamp: str, r: Reporter,
                       step: str) -> str:
    """Put a dropped live database back from its pre-restore backup (the same loader as a restore), check
    its rows against that backup's metadata, then rename it into place; returns what was done."""
    work = free_name(conn, derived_name(live, f"_rollback_{stamp}"))
    r.log(step, f"Restoring {live} from the pre-restore backup {pre.local_path}")
    create_database(conn, work, props, r, step)
    try:
        for sql in apply_props_sql(work, props) if props is not None else []:
            conn.execute(sql)
        load(settings, target, tools, pre, LoadSpec(pre.name, work), r, step)
        check = check_restored(target, work, pre.meta, None, r, step)
        if check.status == Status.FAIL:
            raise OpsError(f"the reloaded pre-restore backup failed its checks: {check.detail}", "", "")
        before = open_state(props.conn) if props and props.conn else None
        in_transaction(conn, in_place_statements(work, live, before))
    except BaseException:
        try:
            drop_database(conn, work)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    rows: Any = check.data.get("rows", 0)
    return (f"{live} was put back from the pre-restore backup {pre.filename} "
            f"({check.data.get('tables', 0)} tables, {rows:,} rows, as before the restore)")
