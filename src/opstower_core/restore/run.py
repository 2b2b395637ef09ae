"""Running a restore plan: each step timed, everything touched remembered, rolled back on failure.

The steps are plain functions `step(ctx, out)` (source.py: before the server is touched;
server.py: after), looked up by id in STEPS; the plan decides their order.

What the run has touched decides the rollback, never the step that failed:
- the staging / work database it created is dropped;
- a live database whose connections were blocked gets its connection settings back;
- an in-place run that dropped the live database reloads the pre-restore backup into it
  and checks its row counts.
The swap itself is one transaction, so after it commits there is nothing left to undo and
a cancel request is no longer honoured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opstower_core import fmt
from opstower_core.advice import say
from opstower_core.config import Settings
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status, StepOutcome, StepResult
from opstower_core.pg.admin import (
    admin,
    db_exists,
    drop_database,
    first_line,
    guarded,
    unblock_connections,
)
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.repo.holds import hold
from opstower_core.restore import journal, parallel, server, source
from opstower_core.restore.context import RunContext, Step
from opstower_core.restore.model import RestorePlan, RestoreResult
from opstower_core.restore.recover import reload_pre_restore
from opstower_core.runs.history import StateStore
from opstower_core.runs.runlog import RunLog, tee
from opstower_core.storage.local import LocalStore

# Every step a plan may hold, by id (in the in-place order; a swap moves "terminate" late).
STEPS: dict[str, Step] = {
    "verify": source.verify_artifact,
    "download": source.download_artifact,
    "confirm": source.confirm_with_operator,
    "roles": source.create_missing_roles,
    "pre_backup": source.pre_restore_backup,
    "terminate": server.terminate_connections,
    "drop_create": server.create_work_database,
    "restore": server.load_artifact,
    "verify_restored": server.verify_restored,
    "analyze": server.analyze,
    "vacuum": server.vacuum,
    "reindex": server.reindex,
    "swap": server.switch_into_place,
}

# Steps that change databases on the server: the journal is written before each (journal.py).
JOURNALED = {"terminate", "drop_create", "restore", "verify_restored", "analyze", "vacuum", "reindex", "swap"}


def run_restore(settings: Settings, plan: RestorePlan, confirm: Callable[[RestorePlan], str] | None = None,
                on_event: EventSink | None = None, cancel: CancelToken | None = None,
                state: StateStore | None = None) -> RestoreResult:
    """Run a plan. Never leaves the operator without a working database; see RestoreResult.sentence.

    `confirm(plan)` returns the database name the operator typed; it must equal
    `plan.live_db` unless `--force`. Failures and cancellation do not raise: the result
    says what was rolled back (ok False, status failed/cancelled).
    """
    ctx = _context(settings, plan, confirm, on_event, cancel, state)
    t0, started = ctx.started_mono, time.time()
    ctx.log.line("INFO", f"OpsTower Database Restore - Started ({plan.entry.filename} -> {plan.live_db}, "
                 f"mode {plan.mode})")
    # Held for the whole run: the pre-restore backup applies retention, which must never delete
    # the very artifact being restored (an old backup, an 8-day-old pre-restore copy).
    with hold(settings, plan.entry.filename, f"restore into {plan.live_db}"):
        status, error = _run_steps(ctx)
    result = _result(ctx, status, error, time.monotonic() - t0)
    _record(ctx, result, started)
    return result


def _context(settings: Settings, plan: RestorePlan, confirm: Callable[[RestorePlan], str] | None,
             on_event: EventSink | None, cancel: CancelToken | None, state: StateStore | None) -> RunContext:
    cancel = cancel or CancelToken()
    LocalStore(settings.backup_dir).ensure()
    log = RunLog(settings.backup_dir, "restore", time.strftime("%Y%m%d_%H%M%S"), settings.syslog)
    sink = tee(log, on_event)
    return RunContext(settings=settings, plan=plan, reporter=Reporter(sink, cancel), cancel=cancel,
                      state=state or StateStore(settings.state_dir), log=log, sink=sink, confirm=confirm,
                      entry=plan.entry, work_db=plan.work_db, old_db=plan.old_db, no_owner=plan.no_owner,
                      roles=dict(plan.roles))


def _run_steps(ctx: RunContext) -> tuple[str, BaseException | None]:
    """Every step of the plan in order; on any failure or cancel, the rollback. (status, error)."""
    r, total = ctx.reporter, len(ctx.plan.steps)
    status, error = "success", None
    besides: list[parallel.Beside] = []  # steps running beside the others (parallel.py)
    try:
        ctx.lock(f"{ctx.live_db}.restore")
        if ctx.plan.mode in ("new_db", "tables"):
            ctx.lock(ctx.live_db)
        _refuse_if_interrupted(ctx)
        for index, step in enumerate(ctx.plan.steps, 1):
            for beside in [b for b in besides if parallel.due(b, step.id)]:
                besides.remove(beside)
                parallel.join(ctx, beside)
            ctx.current_step = step.id
            if step.id == "verify" and ctx.plan.verify_in_load:
                continue  # run by the restore step, in the same read as the load (server.load_artifact)
            if step.parallel_with and not step.skip:
                ctx.cancel.check()
                besides.append(parallel.start(ctx, step, STEPS[step.id], index, total))
                ctx.cancel.check()  # a cancel asked for as it started is this step's
                continue
            if step.skip:
                r.started(step.id, step.title, index, total)
                r.finished(step.id, Status.SKIP, step.skip, 0.0)
                continue
            if step.after_service and ctx.touched.done:
                _after_service(ctx, step, index, total)
                continue
            with r.step(step.id, step.title, index, total) as out:
                ctx.cancel.check()
                if step.id in JOURNALED:
                    ctx.checkpoint(step.id)
                STEPS[step.id](ctx, out)
            if step.id == "swap" and ctx.touched.done:
                # The restored database is in service: the RTO clock stops, and the server holds nothing
                # a later run would have to finish or undo, so the journal goes now (steps after this
                # one only maintain the live database).
                ctx.service_seconds = time.monotonic() - ctx.started_mono
                journal.remove(ctx.journal)
                ctx.journal = None
        while besides:
            parallel.join(ctx, besides.pop(0))
        journal.remove(ctx.journal)
    except (Cancelled, KeyboardInterrupt) as exc:
        status, error = "cancelled", exc
        parallel.stop(ctx, besides)
        _rollback(ctx)
    except Exception as exc:  # noqa: BLE001 - every failure ends in a rollback and one sentence
        status, error = "failed", exc
        parallel.stop(ctx, besides)
        _rollback(ctx)
    finally:
        for lock in reversed(ctx.locks):
            lock.release()
    return status, error


def _after_service(ctx: RunContext, step: Any, index: int, total: int) -> None:
    """A step after the switch: the restore is done whatever happens here, so a failure or a cancel is
    reported (WARN / SKIP, with what to run later) instead of rolling anything back."""
    r = ctx.reporter
    r.started(step.id, step.title, index, total)
    out, t0 = StepOutcome(), time.monotonic()
    data = {"after_service": True}
    try:
        ctx.cancel.check()
        STEPS[step.id](ctx, out)
    except (Cancelled, KeyboardInterrupt):
        r.finished(step.id, Status.SKIP, f"cancelled; {ctx.live_db} is restored and in service (run "
                   f"{step.id.upper()} on it later)", time.monotonic() - t0, data)
        return
    except Exception as exc:  # noqa: BLE001 - the restore is done: reported, not rolled back
        reason = getattr(exc, "what", None) or first_line(exc)
        r.finished(step.id, Status.WARN, f"{reason}; {ctx.live_db} is restored and in service (run "
                   f"{step.id.upper()} on it later)", time.monotonic() - t0, data)
        return
    r.finished(step.id, out.status, f"{out.detail} (after the switch, with {ctx.live_db} in service)",
               time.monotonic() - t0, {**out.data, **data})


def _refuse_if_interrupted(ctx: RunContext) -> None:
    """A journal left for this database by a killed run: finish or undo that one first.

    We hold the restore lock of this database, so the journal's writer cannot be running."""
    j = journal.read(journal.journal_path(ctx.settings.state_dir, ctx.target.name, ctx.live_db))
    if j is not None and not j.alive:
        raise OpsError(f"An interrupted {j.describe()} is not finished", "this run changed nothing",
                       f"{say('recover_interrupted')} first")


def _result(ctx: RunContext, status: str, error: BaseException | None, seconds: float) -> RestoreResult:
    plan = ctx.plan
    rto = plan.rto_minutes * 60.0
    result = RestoreResult(
        ok=status == "success", plan=plan, steps=_in_plan_order(ctx), total_seconds=seconds, rto_seconds=rto,
        margin_seconds=rto - (ctx.service_seconds if ctx.service_seconds is not None else seconds),
        service_seconds=ctx.service_seconds,
        old_database=ctx.old_db if ctx.touched.done and plan.mode == "swap" else None,
        pre_restore_artifact=ctx.pre_restore.name.filename if ctx.pre_restore else None, sentence="",
        status=status, rolled_back=bool(ctx.rollback_note) and not ctx.rollback_failed,
        database=(ctx.work_db if plan.mode == "tables" else ctx.live_db) if status == "success" else None,
        left_out=plan.left_out if status == "success" else None, proof=ctx.proof,
        commands=list(ctx.reporter.commands),
    )
    result.sentence = _sentence(ctx, result, error)
    return result


def _in_plan_order(ctx: RunContext) -> list[StepResult]:
    """The steps as planned (one that ran beside others finishes out of order), then the rollback."""
    order = {s.id: i for i, s in enumerate(ctx.plan.steps)}
    return sorted(ctx.reporter.results, key=lambda s: order.get(s.step, len(order)))


def _record(ctx: RunContext, result: RestoreResult, started: float) -> None:
    """The run log, the run history and (unless cancelled) the alert channels."""
    ctx.log.line("INFO" if result.ok else "ERROR", result.sentence)
    ctx.log.close()
    live, filename = ctx.live_db, ctx.entry.filename
    ctx.state.record(
        "restore", live, result.status, artifact=filename, started_at=started,
        duration_seconds=result.total_seconds, size_bytes=ctx.entry.size, error=None if result.ok else result.sentence,
        details={**result.as_dict(), "work_db": ctx.work_db, "log": str(ctx.log.path),
                 # What the forecast (opstower_core.forecast) fits each step's seconds against.
                 "uncompressed_bytes": ctx.plan.uncompressed_size, "live_bytes": ctx.plan.live_size,
                 "restored_bytes": next((s.data.get("size_bytes") for s in result.steps
                                         if s.step == "verify_restored"), None)},
    )
    if result.status != "cancelled":
        from opstower_core.alerts import send_safely

        # A finished restore is always worth telling, success included (rare and deliberate).
        send_safely(ctx.settings, "restore", "success" if result.ok else "failed",
                    f"OpsTower Restore {'FINISHED' if result.ok else 'FAILED'}: {live}", result.sentence,
                    live, {"artifact": filename, "seconds": round(result.total_seconds, 1),
                           "rto_margin_seconds": round(result.margin_seconds)}, force=True)


# -- rollback -----------------------------------------------------------------------------

def _rollback(ctx: RunContext) -> None:
    if ctx.digest_job is not None:  # the artifact's digests are not needed any more
        ctx.digest_job.kill()
        ctx.digest_job = None
    touched = ctx.touched
    if touched.done or not (touched.work_created or touched.blocked is not None or touched.live_dropped):
        journal.remove(ctx.journal)  # nothing on the server to undo
        return
    ctx.reporter.started("rollback", "Rolling back")
    if ctx.journal is not None:
        ctx.checkpoint(phase="rolling_back")
    t0 = time.monotonic()
    notes: list[str] = []
    quiet = Reporter(ctx.sink, CancelToken())  # a rollback is not cancellable
    live, work = ctx.live_db, ctx.work_db
    try:
        with admin(ctx.target, live) as conn, guarded(conn, None, ctx.lock_wait, [live, work], "the rollback"):
            if touched.work_created and db_exists(conn, work):
                quiet.log("rollback", drop_database(conn, work))
                notes.append(f"the unfinished database {work} was dropped")
            if touched.live_dropped:
                notes.append(_reload_pre_restore(ctx, conn, quiet))
            elif touched.blocked is not None:
                sql = unblock_connections(conn, live, touched.blocked)
                quiet.log("rollback", sql)
                notes.append(f"connections to {live} are allowed again")
        ctx.rollback_note = "; ".join(notes)
        journal.remove(ctx.journal)
        ctx.reporter.finished("rollback", Status.PASS, f"Rolled back: {ctx.rollback_note}", time.monotonic() - t0)
    except Exception as exc:  # noqa: BLE001 - the sentence must say exactly what is left
        ctx.rollback_failed = getattr(exc, "sentence", None) or first_line(exc)
        ctx.rollback_note = "; ".join(notes)
        if ctx.journal is not None:
            ctx.checkpoint(phase="rollback_failed")  # `opstower restore --recover` takes it from here
        ctx.reporter.finished("rollback", Status.FAIL, f"Rollback failed: {ctx.rollback_failed}",
                              time.monotonic() - t0)


def _reload_pre_restore(ctx: RunContext, conn: Any, quiet: Reporter) -> str:
    """In-place: put the live database back from the pre-restore backup and check its rows."""
    pre, tools = ctx.pre_restore, ctx.plan.tools
    assert pre is not None and tools is not None
    entry = CatalogEntry(pre.name, pre.path.stat().st_size, local_path=pre.path, meta=pre.meta)
    return reload_pre_restore(ctx.settings, ctx.target, conn, tools, entry, ctx.live_db, ctx.touched.live_props,
                              ctx.plan.stamp, quiet, "rollback")


# -- the one sentence ------------------------------------------------------------------------

def _sentence(ctx: RunContext, result: RestoreResult, error: BaseException | None) -> str:
    if result.ok:
        return _success_sentence(ctx, result)
    plan = ctx.plan
    title = next((s.title for s in plan.steps if s.id == ctx.current_step), "")
    if isinstance(error, source.ConfirmDeclined | source.Interrupted):
        return error.sentence
    if isinstance(error, Cancelled | KeyboardInterrupt):
        what = f"Restore cancelled at step \"{title}\"" if title else "Restore cancelled before it started"
        nxt = "run the restore again when ready"
    else:
        reason = getattr(error, "what", None) or (first_line(error) if error else "unknown error")
        what = (f"Restore failed at step \"{title}\": {reason.rstrip('.')}" if title
                else f"Restore could not start: {reason.rstrip('.')}")
        nxt = getattr(error, "next_step", "") or "fix the cause shown above and run the restore again"
    state, nxt = _state_after_failure(ctx, nxt)
    return OpsError(what, state, nxt).sentence


def _success_sentence(ctx: RunContext, result: RestoreResult) -> str:
    text = _restored_sentence(ctx, result)
    if result.left_out:
        text += f" Left out on request ({say('no_acl_aside')}): {result.left_out}."
    return text


def _restored_sentence(ctx: RunContext, result: RestoreResult) -> str:
    plan, file, live = ctx.plan, ctx.entry.filename, ctx.live_db
    took = fmt.duration(result.service_seconds if result.service_seconds is not None else result.total_seconds)
    after = [s for s in result.steps if s.data.get("after_service")]
    if after:  # maintenance once the database was in service: named, off the RTO clock
        took += " to service, then " + ", ".join(f"{s.step.upper()} {fmt.duration(s.seconds)}" for s in after)
    if result.margin_seconds >= 0:
        rto = f"{fmt.duration(result.margin_seconds)} left of the {plan.rto_minutes}-minute RTO"
    else:
        rto = f"{fmt.duration(-result.margin_seconds)} OVER the {plan.rto_minutes}-minute RTO"
    if plan.mode == "swap":
        return (f"Restored {live} from {file} in {took} ({rto}). The previous database is kept as "
                f"{ctx.old_db}: once the application is checked, discard it with "
                f"{say('discard_old', db=ctx.old_db)}.")
    if plan.mode == "in_place":
        return (f"Restored {live} in place from {file} in {took} ({rto}). The pre-restore backup "
                f"{result.pre_restore_artifact} is kept for {ctx.settings.pre_restore_retention_days} days.")
    if plan.mode == "new_db":
        return f"Restored {file} into the new database {live} in {took} ({rto}); nothing else was touched."
    return (f"Restored tables {', '.join(plan.options.tables or [])} from {file} into {ctx.work_db} in {took}; "
            f"the live tables were not touched. Merge the rows you need back from {ctx.work_db}, then drop it.")


def _state_after_failure(ctx: RunContext, nxt: str) -> tuple[str, str]:
    """(the state things are in, what to do next) after a failed or cancelled run."""
    live, work, touched = ctx.live_db, ctx.work_db, ctx.touched
    if ctx.rollback_failed:
        pre = ctx.pre_restore.path if ctx.pre_restore else None
        state = f"ROLLBACK FAILED ({ctx.rollback_failed.rstrip('.')})"
        if touched.live_dropped and pre:
            state += f"; {live} does not exist now; the pre-restore backup {pre} is intact"
            nxt = say("restore_artifact", artifact=pre)
        elif touched.blocked is not None:
            state += f"; {live} is unchanged but may still refuse connections"
            nxt = (f"run ALTER DATABASE \"{live}\" WITH ALLOW_CONNECTIONS {str(touched.blocked.allow).lower()} "
                   f"CONNECTION LIMIT {touched.blocked.limit}; and drop {work} if it exists")
        else:
            nxt = f"drop {work} if it exists; {live} was not touched"
        return state, nxt
    if ctx.rollback_note:
        if touched.live_dropped:
            return ctx.rollback_note, nxt
        if ctx.plan.mode in ("swap", "in_place"):
            return f"{live} is unchanged and in service; {ctx.rollback_note}", nxt
        return f"nothing else was touched; {ctx.rollback_note}", nxt
    return "nothing was changed" + (f" ({live} was not touched)" if ctx.plan.live_exists else ""), nxt
