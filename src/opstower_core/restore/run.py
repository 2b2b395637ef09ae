"""Running a restore plan: each step timed, everything touched remembered, rolled back on failure.

What the run has touched decides the rollback, never the step that failed:
- the staging / work database it created is dropped;
- a live database whose connections were blocked gets its connection settings back;
- an in-place run that dropped the live database reloads the pre-restore backup into it
  and checks its row counts.
The swap itself is one transaction, so after it commits there is nothing left to undo and
a cancel request is no longer honoured.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from opstower_core import fmt
from opstower_core.backup import BackupResult
from opstower_core.config import Settings
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import (
    CancelToken,
    Event,
    EventSink,
    Reporter,
    Status,
    StepFinished,
    StepLog,
    StepOutcome,
    StepProgress,
    StepStarted,
)
from opstower_core.pg.admin import (
    ConnState,
    DbProps,
    admin,
    apply_props_sql,
    block_connections,
    create_database,
    db_exists,
    derived_name,
    describe_session,
    drop_sql,
    first_line,
    free_name,
    in_place_statements,
    in_transaction,
    read_props,
    sessions,
    swap_statements,
    terminate_sessions,
    unblock_connections,
)
from opstower_core.pg.load import LoadSpec, load
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.restore.checks import check_restored, maintenance_sql, run_cancellable
from opstower_core.restore.model import RestorePlan, RestoreResult
from opstower_core.restore.source import ConfirmDeclined, SourceSteps
from opstower_core.runs.history import StateStore
from opstower_core.runs.lock import RunLock
from opstower_core.runs.runlog import RunLog, tee
from opstower_core.storage.local import LocalStore


class RestoreRun(SourceSteps):
    """One run of a plan; the steps before the server is touched come from SourceSteps."""

    def __init__(self, settings: Settings, plan: RestorePlan, confirm: Callable[[RestorePlan], str] | None,
                 on_event: EventSink | None, cancel: CancelToken | None, state: StateStore | None) -> None:
        self.settings = settings
        self.p = plan
        self.confirm = confirm
        self.cancel = cancel or CancelToken()
        self.state = state or StateStore(settings.state_dir)
        LocalStore(settings.backup_dir).ensure()
        self.log = RunLog(settings.backup_dir, "restore", time.strftime("%Y%m%d_%H%M%S"), settings.syslog)
        self.sink = tee(self.log, on_event)
        self.r = Reporter(self.sink, self.cancel)
        self.target = plan.target
        self.live = plan.live_db
        self.work = plan.work_db
        self.old = plan.old_db
        self.entry = plan.entry
        self.no_owner = plan.no_owner
        self.roles = dict(plan.roles)
        # What this run has touched (drives the rollback).
        self.props: DbProps | None = None
        self.work_created = False
        self.blocked: ConnState | None = None
        self.live_dropped = False
        self.done = False  # the final rename committed: nothing left to undo
        self.pre_restore: BackupResult | None = None
        self.locks: list[RunLock] = []
        self.current = ""
        self.rollback_note = ""
        self.rollback_failed: str | None = None

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> RestoreResult:
        t0 = time.monotonic()
        started = time.time()
        status, error = "success", None
        total = len(self.p.steps)
        self.log.line("INFO", f"OpsTower Database Restore - Started ({self.entry.filename} -> {self.live}, "
                      f"mode {self.p.mode})")
        try:
            self._lock(f"{self.live}.restore")
            if self.p.mode in ("new_db", "tables"):
                self._lock(self.live)
            for index, step in enumerate(self.p.steps, 1):
                self.current = step.id
                if step.skip:
                    self.r.started(step.id, step.title, index, total)
                    self.r.finished(step.id, Status.SKIP, step.skip, 0.0)
                    continue
                with self.r.step(step.id, step.title, index, total) as out:
                    self.cancel.check()
                    getattr(self, f"_{step.id}")(out)
        except Cancelled as exc:
            status, error = "cancelled", exc
            self._rollback()
        except KeyboardInterrupt as exc:
            status, error = "cancelled", exc
            self._rollback()
        except Exception as exc:  # noqa: BLE001 - every failure ends in a rollback and one sentence
            status, error = "failed", exc
            self._rollback()
        finally:
            for lock in reversed(self.locks):
                lock.release()
        seconds = time.monotonic() - t0
        rto = self.p.rto_minutes * 60.0
        result = RestoreResult(
            ok=status == "success", plan=self.p, steps=list(self.r.results), total_seconds=seconds, rto_seconds=rto,
            margin_seconds=rto - seconds, old_database=self.old if self.done and self.p.mode == "swap" else None,
            pre_restore_artifact=self.pre_restore.name.filename if self.pre_restore else None, sentence="",
            status=status, rolled_back=bool(self.rollback_note) and not self.rollback_failed,
            database=(self.work if self.p.mode == "tables" else self.live) if status == "success" else None,
        )
        result.sentence = self._sentence(result, error)
        self.log.line("INFO" if result.ok else "ERROR", result.sentence)
        self.log.close()
        self.state.record(
            "restore", self.live, status, artifact=self.entry.filename, started_at=started, duration_seconds=seconds,
            size_bytes=self.entry.size, error=None if result.ok else result.sentence,
            details={**result.as_dict(), "work_db": self.work, "log": str(self.log.path)},
        )
        if status != "cancelled":
            from opstower_core.alerts import send_safely

            # A finished restore is always worth telling, success included (rare and deliberate).
            send_safely(self.settings, "restore", "success" if result.ok else "failed",
                        f"OpsTower Restore {'FINISHED' if result.ok else 'FAILED'}: {self.live}", result.sentence,
                        self.live, {"artifact": self.entry.filename, "seconds": round(seconds, 1),
                                    "rto_margin_seconds": round(result.margin_seconds)}, force=True)
        return result

    def _lock(self, name: str) -> None:
        self.locks.append(RunLock(self.settings.state_dir, name, "restore").acquire())

    def _forward(self, step: str) -> EventSink:
        """A sub-engine's events (verify, backup) as lines and progress of our own step."""

        def sink(event: Event) -> None:
            if isinstance(event, StepProgress):
                self.r.progress(step, event.done, event.total, event.unit)
            elif isinstance(event, StepLog):
                self.r.log(step, event.line, event.level)
            elif isinstance(event, StepStarted):
                self.r.log(step, f"{event.title}..." if not event.total else f"Check {event.index}: {event.title}...")
            elif isinstance(event, StepFinished):
                level = {Status.FAIL: "ERROR", Status.WARN: "WARN"}.get(event.status, "INFO")
                self.r.log(step, f"{event.status}: {event.detail}", level)

        return sink

    # -- steps that touch the server ---------------------------------------------------------
    def _live_props(self, conn: Any) -> DbProps:
        if self.props is None:
            self.props = read_props(conn, self.live)
        return self.props

    def _terminate(self, out: StepOutcome) -> None:
        with admin(self.target, self.live) as conn:
            self._live_props(conn)
            now = sessions(conn, self.live)
            for s in now:
                self.r.log("terminate", f"Connected: {describe_session(s)}")
            self.blocked = block_connections(conn, self.live, self.r, "terminate")
            n = terminate_sessions(conn, self.live, self.r, "terminate")
        self.r.log("terminate", "Existing connections terminated")
        out.detail = f"Existing connections terminated ({n}); new connections to {self.live} are blocked"
        out.data = {"sessions": now}

    def _drop_create(self, out: StepOutcome) -> None:
        with admin(self.target, self.live) as conn:
            props = self._live_props(conn) if self.p.live_exists else None
            if self.p.mode == "in_place":
                self.r.log("drop_create", "Dropping existing database...")
                conn.execute(drop_sql(self.live))
                self.live_dropped = True
                self.r.log("drop_create", f"{drop_sql(self.live)}")
            if db_exists(conn, self.work):
                if self.p.options.target_db and self.p.mode == "tables":
                    raise OpsError(f"Database {self.work} exists now", "nothing was changed", "choose another --target-db")
                taken = self.work
                self.work = free_name(conn, self.work)
                self.r.log("drop_create", f"Database name {taken} is already taken (left as it is); "
                           f"restoring into {self.work} instead", "WARN")
            self.r.log("drop_create", "Creating fresh database...")
            create_database(conn, self.work, props, self.r, "drop_create")
            self.work_created = True
            for sql in apply_props_sql(self.work, props) if props is not None else []:
                conn.execute(sql)  # settings and grants are kept by oid: they follow the later rename
                self.r.log("drop_create", sql)
        out.detail = (f"Dropped {self.live}; created {self.work}" if self.live_dropped
                      else f"Created {self.work}; {self.live} untouched")

    def _restore(self, out: StepOutcome) -> None:
        assert self.p.tools is not None
        spec = LoadSpec(self.entry.name, self.work, self.p.jobs, self.p.options.tables, self.no_owner)
        self.r.log("restore", "Restoring data from backup...")
        load(self.settings, self.target, self.p.tools, self.entry, spec, self.r, "restore")
        self.r.log("restore", "Database restore completed successfully")
        out.detail = (f"Restored {self.entry.filename} into {self.work} ({self.entry.name.format} format, "
                      f"{spec.jobs if spec.via_file else 1} job(s))")

    def _verify_restored(self, out: StepOutcome) -> None:
        check = check_restored(self.target, self.work, self.entry.meta, self.p.options.tables, self.r,
                               "verify_restored")
        if check.status == Status.FAIL:
            raise OpsError(f"The restored database failed its checks: {check.detail}", "", "")
        self.r.log("verify_restored", "Database verification completed")
        out.detail, out.data = check.detail, {k: v for k, v in check.data.items() if k != "row_counts"}

    def _maintain(self, kind: str, out: StepOutcome) -> None:
        sql = maintenance_sql(kind, self.work)
        self.r.log(kind, f"{sql} in {self.work}")
        run_cancellable(self.target, self.work, sql, self.cancel)
        out.detail = f"{sql.split()[0]} completed"

    def _analyze(self, out: StepOutcome) -> None:
        self._maintain("analyze", out)

    def _vacuum(self, out: StepOutcome) -> None:
        self._maintain("vacuum", out)

    def _reindex(self, out: StepOutcome) -> None:
        self._maintain("reindex", out)
        self.r.log("reindex", "Post-restore tasks completed")

    def _swap(self, out: StepOutcome) -> None:
        with admin(self.target, self.live) as conn:
            terminate_sessions(conn, self.work, self.r, "swap")  # e.g. an autovacuum worker on the new database
            if self.p.mode == "swap":
                assert self.blocked is not None
                if db_exists(conn, self.old or ""):
                    taken, self.old = self.old, free_name(conn, self.old or "")
                    self.r.log("swap", f"Database name {taken} is already taken; keeping the old database as {self.old}",
                               "WARN")
                terminate_sessions(conn, self.live, self.r, "swap")
                statements = swap_statements(self.live, self.work, self.old or "", self.blocked)
            else:
                if db_exists(conn, self.live):
                    raise OpsError(f"A database named {self.live} appeared during the restore", "", "")
                statements = in_place_statements(self.work, self.live, self.props.conn if self.props else None)
            self.cancel.check()  # the last moment a cancel can still be honoured
            in_transaction(conn, statements)
            self.done = True
        for sql in statements:
            self.r.log("swap", sql)
        if self.p.mode == "swap":
            out.detail = f"{self.live} now holds the restored data; the previous database is kept as {self.old}"
        else:
            out.detail = f"{self.work} renamed to {self.live}"

    # -- rollback -----------------------------------------------------------------------------
    def _rollback(self) -> None:
        if self.done:
            return
        touched = self.work_created or self.blocked is not None or self.live_dropped
        if not touched:
            return
        self.r.started("rollback", "Rolling back")
        t0 = time.monotonic()
        notes: list[str] = []
        quiet = Reporter(self.sink, CancelToken())  # a rollback is not cancellable
        try:
            with admin(self.target, self.live) as conn:
                if self.work_created and db_exists(conn, self.work):
                    conn.execute(drop_sql(self.work))
                    quiet.log("rollback", drop_sql(self.work))
                    notes.append(f"the unfinished database {self.work} was dropped")
                if self.live_dropped:
                    notes.append(self._reload_pre_restore(conn, quiet))
                elif self.blocked is not None:
                    sql = unblock_connections(conn, self.live, self.blocked)
                    quiet.log("rollback", sql)
                    notes.append(f"connections to {self.live} are allowed again")
            self.rollback_note = "; ".join(notes)
            self.r.finished("rollback", Status.PASS, f"Rolled back: {self.rollback_note}", time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 - the sentence must say exactly what is left
            self.rollback_failed = getattr(exc, "sentence", None) or first_line(exc)
            self.rollback_note = "; ".join(notes)
            self.r.finished("rollback", Status.FAIL, f"Rollback failed: {self.rollback_failed}", time.monotonic() - t0)

    def _reload_pre_restore(self, conn: Any, quiet: Reporter) -> str:
        """In-place: put the live database back from the pre-restore backup and check its rows."""
        pre = self.pre_restore
        assert pre is not None and self.p.tools is not None
        work = free_name(conn, derived_name(self.live, f"_rollback_{self.p.stamp}"))
        quiet.log("rollback", f"Restoring {self.live} from the pre-restore backup {pre.path}")
        create_database(conn, work, self.props, quiet, "rollback")
        try:
            for sql in apply_props_sql(work, self.props) if self.props is not None else []:
                conn.execute(sql)
            entry = CatalogEntry(pre.name, pre.path.stat().st_size, local_path=pre.path, meta=pre.meta)
            load(self.settings, self.target, self.p.tools, entry, LoadSpec(pre.name, work), quiet, "rollback")
            check = check_restored(self.target, work, pre.meta, None, quiet, "rollback")
            if check.status == Status.FAIL:
                raise OpsError(f"the reloaded pre-restore backup failed its checks: {check.detail}", "", "")
            in_transaction(conn, in_place_statements(work, self.live, self.props.conn if self.props else None))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute(drop_sql(work))
            raise
        rows = check.data.get("rows", 0)
        return (f"{self.live} was put back from the pre-restore backup {pre.name.filename} "
                f"({check.data.get('tables', 0)} tables, {rows:,} rows, as before the restore)")

    # -- the one sentence ------------------------------------------------------------------------
    def _sentence(self, result: RestoreResult, error: BaseException | None) -> str:
        p, file = self.p, self.entry.filename
        took = fmt.duration(result.total_seconds)
        if result.margin_seconds >= 0:
            rto = f"{fmt.duration(result.margin_seconds)} left of the {p.rto_minutes}-minute RTO"
        else:
            rto = f"{fmt.duration(-result.margin_seconds)} OVER the {p.rto_minutes}-minute RTO"
        if result.ok:
            if p.mode == "swap":
                return (f"Restored {self.live} from {file} in {took} ({rto}). The previous database is kept as "
                        f"{self.old}: once the application is checked, discard it with "
                        f"`opstower restore --discard-old {self.old}`.")
            if p.mode == "in_place":
                return (f"Restored {self.live} in place from {file} in {took} ({rto}). The pre-restore backup "
                        f"{result.pre_restore_artifact} is kept for {self.settings.pre_restore_retention_days} days.")
            if p.mode == "new_db":
                return f"Restored {file} into the new database {self.live} in {took} ({rto}); nothing else was touched."
            return (f"Restored tables {', '.join(p.options.tables or [])} from {file} into {self.work} in {took}; "
                    f"the live tables were not touched. Merge the rows you need back from {self.work}, then drop it.")
        title = next((s.title for s in p.steps if s.id == self.current), "")
        if isinstance(error, ConfirmDeclined):
            return error.sentence
        if isinstance(error, Cancelled | KeyboardInterrupt):
            what = f"Restore cancelled at step \"{title}\"" if title else "Restore cancelled before it started"
            nxt = "run the restore again when ready"
        else:
            reason = getattr(error, "what", None) or (first_line(error) if error else "unknown error")
            what = (f"Restore failed at step \"{title}\": {reason.rstrip('.')}" if title
                    else f"Restore could not start: {reason.rstrip('.')}")
            nxt = getattr(error, "next_step", "") or "fix the cause shown above and run the restore again"
        if self.rollback_failed:
            pre = self.pre_restore.path if self.pre_restore else None
            state = f"ROLLBACK FAILED ({self.rollback_failed.rstrip('.')})"
            if self.live_dropped and pre:
                state += f"; {self.live} does not exist now; the pre-restore backup {pre} is intact"
                nxt = f"restore it now with `opstower restore {pre} --force`"
            elif self.blocked is not None:
                state += f"; {self.live} is unchanged but may still refuse connections"
                nxt = (f"run ALTER DATABASE \"{self.live}\" WITH ALLOW_CONNECTIONS {str(self.blocked.allow).lower()} "
                       f"CONNECTION LIMIT {self.blocked.limit}; and drop {self.work} if it exists")
            else:
                nxt = f"drop {self.work} if it exists; {self.live} was not touched"
        elif self.rollback_note:
            if self.live_dropped:
                state = self.rollback_note
            elif p.mode in ("swap", "in_place"):
                state = f"{self.live} is unchanged and in service; {self.rollback_note}"
            else:
                state = f"nothing else was touched; {self.rollback_note}"
        else:
            state = "nothing was changed" + (f" ({self.live} was not touched)" if p.live_exists else "")
        return OpsError(what, state, nxt).sentence


def run_restore(settings: Settings, plan: RestorePlan, confirm=None, on_event=None, cancel=None,
                state=None) -> RestoreResult:
    """Run a plan. Never leaves the operator without a working database; see RestoreResult.sentence.

    `confirm(plan)` returns the database name the operator typed; it must equal
    `plan.live_db` unless `--force`. Failures and cancellation do not raise: the result
    says what was rolled back (ok False, status failed/cancelled).
    """
    return RestoreRun(settings, plan, confirm, on_event, cancel, state).run()
