"""The restore steps that touch the server: terminate, create, load, check, maintain, switch.

Each step records in `ctx.touched` what it changed before it changes the next thing, so
the rollback (run.py) always knows what to undo."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import humanize

from opstower_core.advice import say
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import Status, StepOutcome
from opstower_core.pg.admin import (
    DbProps,
    admin,
    apply_props_sql,
    block_connections,
    create_database,
    db_exists,
    describe_session,
    drop_sql,
    free_name,
    guarded,
    in_place_statements,
    in_transaction,
    open_state,
    read_props,
    server_free_bytes,
    sessions,
    swap_statements,
    terminate_sessions,
)
from opstower_core.pg.load import LoadSpec, load
from opstower_core.restore.checks import (
    IndexCheck,
    analyze_sql,
    check_indexes,
    check_restored,
    maintenance_sql,
    run_cancellable,
    tables_without_statistics,
)
from opstower_core.restore.context import RunContext
from opstower_core.restore.old import drop_abandoned
from opstower_core.restore.source import judge_verification


def _live_props(ctx: RunContext, conn: Any) -> DbProps:
    if ctx.touched.live_props is None:
        props = read_props(conn, ctx.live_db)
        if props.conn is not None and open_state(props.conn) != props.conn:
            # A block left by a killed run (ours or another tool's) is not a setting to carry over:
            # copied, it would leave the restored database refusing every connection.
            ctx.reporter.log(ctx.current_step, f"{ctx.live_db} refuses connections now (ALLOW_CONNECTIONS "
                             f"{str(props.conn.allow).lower()}, CONNECTION LIMIT {props.conn.limit}), probably left "
                             "by an interrupted run; it will accept connections again after this restore", "WARN")
            props.conn = open_state(props.conn)
        ctx.touched.live_props = props
    return ctx.touched.live_props


@contextmanager
def _admin(ctx: RunContext, names: list[str]) -> Iterator[Any]:
    """An admin connection whose statements wait for locks at most --wait-for-locks and stop on cancel."""
    with admin(ctx.target, ctx.live_db) as conn, guarded(conn, ctx.cancel, ctx.lock_wait, names):
        yield conn


def terminate_connections(ctx: RunContext, out: StepOutcome) -> None:
    r, live = ctx.reporter, ctx.live_db
    with _admin(ctx, [live]) as conn:
        props = _live_props(ctx, conn)
        now = sessions(conn, live)
        for s in now:
            r.log("terminate", f"Connected: {describe_session(s)}")
        before = block_connections(conn, live, r, "terminate")
        ctx.touched.blocked = props.conn if props.conn and open_state(before) != before else before
        n = terminate_sessions(conn, live, r, "terminate")
    r.log("terminate", "Existing connections terminated")
    out.detail = f"Existing connections terminated ({n}); new connections to {live} are blocked"
    out.data = {"sessions": now}


def create_work_database(ctx: RunContext, out: StepOutcome) -> None:
    r, live, plan = ctx.reporter, ctx.live_db, ctx.plan
    with _admin(ctx, [live, ctx.work_db]) as conn:
        props = _live_props(ctx, conn) if plan.live_exists else None
        if plan.mode == "in_place":
            r.log("drop_create", "Dropping existing database...")
            conn.execute(drop_sql(live))
            ctx.touched.live_dropped = True
            r.log("drop_create", drop_sql(live))
        if db_exists(conn, ctx.work_db):
            if plan.options.target_db and plan.mode == "tables":
                raise OpsError(f"Database {ctx.work_db} exists now", "nothing was changed", say("other_target_db"))
            taken = ctx.work_db
            ctx.work_db = free_name(conn, taken)
            r.log("drop_create", f"Database name {taken} is already taken (left as it is); "
                  f"restoring into {ctx.work_db} instead", "WARN")
            ctx.checkpoint()  # the journal must name the database we are about to create
        if plan.mode != "in_place":
            _check_room(ctx, conn)
        for name in drop_abandoned(conn, ctx.settings, live):
            r.log("drop_create", f"Dropped {name}, left by a killed run (no running restore names it, nobody "
                  "connected)", "WARN")
        r.log("drop_create", "Creating fresh database...")
        create_database(conn, ctx.work_db, props, r, "drop_create")
        ctx.touched.work_created = True
        for sql in apply_props_sql(ctx.work_db, props) if props is not None else []:
            conn.execute(sql)  # settings and grants are kept by oid: they follow the later rename
            r.log("drop_create", sql)
    out.detail = (f"Dropped {live}; created {ctx.work_db}" if ctx.touched.live_dropped
                  else f"Created {ctx.work_db}; {live} untouched")


def _check_room(ctx: RunContext, conn: Any) -> None:
    """Refuse a staging copy the server's disk cannot hold: a full data disk takes the whole server down."""
    plan, r = ctx.plan, ctx.reporter
    need = max(plan.live_size or 0, plan.uncompressed_size or 0)
    free, where = server_free_bytes(conn, ctx.target, ctx.live_db if plan.live_exists else None)
    if free is None:
        r.log("drop_create", f"Free space on the server not checked: {where}", "WARN")
        return
    reserve = int((ctx.settings.min_free_gb or 0) * 1024**3)
    size = humanize.naturalsize
    if need * 1.1 + reserve > free:
        raise OpsError(f"The server has {size(free, binary=True)} free in {where}, not enough for a "
                       f"{size(need, binary=True)} copy of {ctx.live_db}"
                       + (f" plus the {ctx.settings.min_free_gb:g} GB min_free_gb reserve" if reserve else ""),
                       "nothing was changed", f"free space on the server, or {say('in_place')}")
    r.log("drop_create", f"Free space on the server: {size(free, binary=True)} in {where}; the copy needs about "
          f"{size(need, binary=True)}")


def load_artifact(ctx: RunContext, out: StepOutcome) -> None:
    plan, entry = ctx.plan, ctx.entry
    assert plan.tools is not None
    spec = replace(plan.load_spec, dbname=ctx.work_db, no_owner=ctx.no_owner)  # both may change while it runs
    ctx.reporter.log("restore", "Restoring data from backup...")
    early = _early_digests(ctx, spec)
    ctx.early_digests = early
    on_line = early.on_line if early is not None else None
    on_block = early.on_block if early is not None and spec.in_blocks else None
    if plan.verify_in_load:
        _load_verified(ctx, spec, on_line, on_block)
    else:
        load(ctx.settings, ctx.target, plan.tools, entry, spec, ctx.reporter, "restore", on_line=on_line,
             on_block=on_block)
    ctx.reporter.log("restore", "Database restore completed successfully")
    out.detail = (f"Restored {entry.filename} into {ctx.work_db} ({entry.name.format} format, "
                  f"{spec.jobs if spec.via_file else 1} job(s))"
                  + ("; verified in the same read" if plan.verify_in_load else "")
                  + ("; the data in committed blocks, each read back beside the next" if on_block else ""))


def _load_verified(ctx: RunContext, spec: LoadSpec, on_line: Any, on_block: Any) -> None:
    """The load fed by the verification's own read (checks 1-7): the artifact is read once.

    A failed check raises FeedRefused from the reader before pg_restore / psql gets the end of
    its input (it is killed first), so the load fails and the rollback drops the database this
    run created; the live database has not been touched (a swap touches it only at the switch),
    which keeps "a failed check never touches live" true. The verify step is reported here, as
    a step that ran in parallel with this one (its `waited` is 0: the restore step's own time
    holds any wait for the verdict). When pg_restore / psql fails first, the read stops there
    (ToolStopped) and the tool's error is the one reported."""
    from opstower_core.pg.load import ToolStopped
    from opstower_core.verify import verify

    plan, r = ctx.plan, ctx.reporter
    index = next(i for i, s in enumerate(plan.steps, 1) if s.id == "verify")
    title = next(s.title for s in plan.steps if s.id == "verify")
    verdict = StepOutcome()
    times: dict[str, float] = {}

    job = _digest_job(ctx, in_blocks=on_block is not None)

    def reader(sink: Any) -> None:
        t0 = time.monotonic()
        r.started("verify", title, index, len(plan.steps))
        try:
            res = verify(ctx.settings, ctx.entry, on_event=ctx.forward("verify"), cancel=ctx.cancel, state=ctx.state,
                         upto=7, tee=sink, digest=job is None)
            judge_verification(ctx, res, verdict, in_load=True)
        except ToolStopped:
            r.finished("verify", Status.SKIP, "not finished: the load failed", time.monotonic() - t0,
                       {"parallel_with": ["restore"], "waited": 0.0})
            raise
        except BaseException as exc:
            ctx.current_step = "verify"  # the sentence names the verification, not the load
            detail = getattr(exc, "what", None) or str(exc) or type(exc).__name__
            r.finished("verify", Status.SKIP if isinstance(exc, Cancelled) else Status.FAIL, detail,
                       time.monotonic() - t0, {"parallel_with": ["restore"], "waited": 0.0})
            raise
        times["verify"] = time.monotonic() - t0

    assert plan.tools is not None
    try:
        load(ctx.settings, ctx.target, plan.tools, ctx.entry, spec, r, "restore", reader=reader, on_line=on_line,
             on_block=on_block, data_tap=job.tap if job is not None else None)
    except BaseException:
        if job is not None:
            job.kill()
        raise
    finally:
        if "verify" in times:  # the verdict was reached (also when the load failed after it)
            # Inside the restore step, whose time already holds any wait for the verdict: nothing more on the clock.
            r.finished("verify", verdict.status, f"{verdict.detail} (ran in parallel with: restore, in the same "
                       "read)", times["verify"], {"parallel_with": ["restore"], "waited": 0.0})


def _digest_job(ctx: RunContext, in_blocks: bool) -> Any:
    """The artifact's table digests beside the load (pg/digest_job.py), for a local, unencrypted artifact
    whose metadata records its sha256: from a block load's own data stream (`in_blocks`), else by an
    idle-priority process; None otherwise (digested in the read)."""
    from opstower_core.pg.digest_job import DigestJob

    e = ctx.entry
    if e.local_path is None or e.name.encrypted or not (e.meta or {}).get("sha256") or ctx.plan.mode == "tables":
        return None
    ctx.digest_job = DigestJob.beside_load(e.local_path, e.name.compression, e.name.format, ctx.plan.tools,
                                           in_blocks=in_blocks)
    return ctx.digest_job


def _job_digests(ctx: RunContext) -> None:
    """Put the digest process's table digests into the artifact's proof (waits for it); without them the
    proof is not made and says why."""
    job, proof = ctx.digest_job, ctx.artifact_proof
    ctx.digest_job = None
    if job is None or proof is None:
        return
    got, why = job.result(str(ctx.entry.meta["sha256"]), ctx.cancel)
    ctx.cancel.check("the restored database was left as it is")
    if got is None:
        ctx.reporter.log("verify_restored", f"Restore proof not possible: {why}", "WARN")
        ctx.artifact_proof = None
        ctx.proof_missing = why
        return
    proof.tables, proof.copy_columns, proof.digested = got.tables, got.copy_columns, True
    proof.multisets = job.with_sums(str(ctx.entry.meta["sha256"]), ctx.cancel)
    ctx.reporter.log("verify_restored", got.how())


def _early_digests(ctx: RunContext, spec: LoadSpec) -> Any:
    """verify.EarlyDigests for a whole custom archive streamed into one pg_restore (its order is the
    archive's), when the dump's zone is recorded; else None (the proof reads every table after the load)."""
    from opstower_core.verify import EarlyDigests

    tools = ctx.plan.tools
    if spec.name.format != "custom" or spec.via_file or spec.tables or tools is None or ctx.plan.mode == "tables":
        return None
    return EarlyDigests.for_load(ctx.target, ctx.work_db, ctx.entry.meta, tools.psql, ctx.cancel,
                                 lambda line: ctx.reporter.log("restore", line, "DEBUG"))


def verify_restored(ctx: RunContext, out: StepOutcome) -> None:
    """The proof (per-table digests and the object inventory of the restored database against the
    artifact's own), index integrity, then row counts against the metadata.

    The index checks (pg_index validity, amcheck) run on a connection of their own beside the proof's
    table digests (both are mostly server work: two backends on two cores); the proof's inventory is
    read after them, since amcheck may create and drop its extension meanwhile. The row counts come
    last: the tables the proof read are not scanned again."""
    from opstower_core.verify import prove_restored

    r = ctx.reporter
    checked: list[IndexCheck] = []
    failed: list[BaseException] = []

    def run_checks() -> None:
        try:
            checked.append(check_indexes(ctx.target, ctx.work_db, r, "verify_restored"))
        except BaseException as exc:  # noqa: BLE001 - raised in the step's thread below
            failed.append(exc)

    checks = threading.Thread(target=run_checks, name="restore-checks", daemon=True)
    checks.start()

    def checks_done() -> None:
        while checks.is_alive():
            checks.join(0.1)  # the checks' statements are short; a cancel is honoured after them
        if failed:
            raise failed[0]

    _job_digests(ctx)  # may leave no artifact proof (with the reason): decided after it
    prove = ctx.plan.mode != "tables" and ctx.artifact_proof is not None
    early = ctx.early_digests.result() if ctx.early_digests is not None else {}
    if early:
        r.log("verify_restored", f"{len(early)} restored table(s) were read beside the load "
              f"({ctx.early_digests.seconds:.1f} s)")
    if prove:
        r.log("verify_restored", "Comparing table digests and the object inventory with the artifact")
        # Database-level settings come from the live database here (apply_props_sql), not from the dump.
        try:
            ctx.proof = prove_restored(ctx.target, ctx.work_db, ctx.artifact_proof, tables=ctx.plan.options.tables,
                                       cancel=ctx.cancel, no_acl=ctx.no_owner, database_settings=False,
                                       before_inventory=checks_done, pre=early)
        finally:
            checks.join()
        if ctx.proof.status == Status.FAIL:
            shown = "; ".join(ctx.proof.differences[:5])
            more = f" (+{len(ctx.proof.differences) - 5} more)" if len(ctx.proof.differences) > 5 else ""
            raise OpsError(f"The restored database differs from the artifact: {shown}{more}", "", "")
    checks_done()
    check = check_restored(ctx.target, ctx.work_db, ctx.entry.meta, ctx.plan.options.tables, r, "verify_restored",
                           known=ctx.proof.counts if prove else None, indexes=checked[0])
    if check.status == Status.FAIL:
        raise OpsError(f"The restored database failed its checks: {check.detail}", "", "")
    detail = check.detail
    if ctx.plan.mode == "tables":
        # A selective load leaves out FK constraints (their other table may not be restored) while the
        # proof's inventory expects every constraint of the chosen tables: not compared until they agree.
        detail += "; restore proof not made for a selective restore (row counts compared)"
    elif ctx.artifact_proof is None:
        out.status = Status.WARN
        detail += f"; restore proof not made ({ctx.proof_missing or 'the verification could not digest the artifact'})"
    else:
        r.log("verify_restored", f"Restore proof: {ctx.proof.sentence}")
        detail = f"{ctx.proof.sentence}; {detail}"
        if ctx.proof.status == Status.WARN:
            out.status = Status.WARN
    r.log("verify_restored", "Database verification completed")
    out.detail, out.data = detail, {k: v for k, v in check.data.items() if k != "row_counts"}


def _maintain(ctx: RunContext, kind: str, out: StepOutcome) -> None:
    db = ctx.live_db if ctx.touched.done else ctx.work_db  # after the switch the restored data is live
    sql = maintenance_sql(kind, db)
    ctx.reporter.log(kind, f"{sql} in {db}")
    run_cancellable(ctx.target, db, sql, ctx.cancel)
    out.detail = f"{sql.split()[0]} completed"


def analyze(ctx: RunContext, out: StepOutcome) -> None:
    """ANALYZE only the tables the load brought no statistics for (pg_dump 18 --statistics carries them)."""
    tables = tables_without_statistics(ctx.target, ctx.work_db)
    if not tables:
        ctx.reporter.log("analyze", "Every table came with its optimizer statistics: nothing to analyze")
        out.detail = "statistics restored with the dump: nothing to analyze"
        return
    sql = analyze_sql(tables)
    ctx.reporter.log("analyze", f"ANALYZE of {len(tables)} table(s) without statistics in {ctx.work_db}")
    run_cancellable(ctx.target, ctx.work_db, sql, ctx.cancel)
    out.detail = f"ANALYZE completed ({len(tables)} table(s) had no statistics in the dump)"


def vacuum(ctx: RunContext, out: StepOutcome) -> None:
    _maintain(ctx, "vacuum", out)


def reindex(ctx: RunContext, out: StepOutcome) -> None:
    _maintain(ctx, "reindex", out)
    ctx.reporter.log("reindex", "Post-restore tasks completed")


def switch_into_place(ctx: RunContext, out: StepOutcome) -> None:
    r, live, touched = ctx.reporter, ctx.live_db, ctx.touched
    with _admin(ctx, [live, ctx.work_db]) as conn:
        terminate_sessions(conn, ctx.work_db, r, "swap")  # e.g. an autovacuum worker on the new database
        if ctx.plan.mode == "swap":
            assert touched.blocked is not None
            if db_exists(conn, ctx.old_db or ""):
                taken, ctx.old_db = ctx.old_db, free_name(conn, ctx.old_db or "")
                r.log("swap", f"Database name {taken} is already taken; keeping the old database as {ctx.old_db}",
                      "WARN")
                ctx.checkpoint()  # recovery looks for the old database under this name
            terminate_sessions(conn, live, r, "swap")
            statements = swap_statements(live, ctx.work_db, ctx.old_db or "", touched.blocked)
        else:
            if db_exists(conn, live):
                raise OpsError(f"A database named {live} appeared during the restore", "", "")
            before = touched.live_props.conn if touched.live_props else None
            statements = in_place_statements(ctx.work_db, live, before)
        ctx.cancel.check()  # the last moment a cancel can still be honoured
        in_transaction(conn, statements)
        touched.done = True
    for sql in statements:
        r.log("swap", sql)
    if ctx.plan.mode == "swap":
        out.detail = f"{live} now holds the restored data; the previous database is kept as {ctx.old_db}"
    else:
        out.detail = f"{ctx.work_db} renamed to {live}"
