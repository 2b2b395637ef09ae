"""A table recovery run: verify the backup, restore it into a scratch source, compare, confirm,
copy the live tables, change them in one transaction, prove, drop the scratch database.

`RecoverySession` is the engine's API, in the order the console's screen walks it:
`open()` (verify, download, scratch restore and its proof), `preview()` (per table counts,
nothing touched), `apply(plan, confirm)` (confirmation, pre-change copy, the transaction,
the proof, the commit), `close()` (the scratch database dropped; always). `run_recovery`
walks all of it for the CLI and a drill and returns one RecoveryResult.

The origin is a backup (a reference or a catalog entry) or a ready `RecoverySource` (a
recovered PITR cluster's database, pitr.PitrSource): then verify, download, scratch restore
and its proof are skipped, saying why, the source is the caller's to release, and the proof
compares with the source's own tables. `recover_tables_from_cluster` is that path for the
console's recovery screen.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from opstower_core import fmt
from opstower_core.advice import say
from opstower_core.artifacts.names import new_stamp
from opstower_core.config import Settings
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status, StepOutcome
from opstower_core.pg.admin import first_line, guarded
from opstower_core.pg.tools import connect, select_tools, server_info
from opstower_core.recover.model import (
    STEP_TITLES,
    RecoverOptions,
    RecoveryPlan,
    RecoveryResult,
    TableOutcome,
)
from opstower_core.recover.plan import check_options, plan_works
from opstower_core.recover.prove import prove
from opstower_core.recover.source import RecoverySource, ScratchRestore, drop_leftover_scratch
from opstower_core.recover.stage import Stage, Work
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.runs.history import StateStore
from opstower_core.runs.lock import RunLock

if TYPE_CHECKING:
    from opstower_core.config import Target
    from opstower_core.pitr import ScratchCluster

ORDER = list(STEP_TITLES)
Confirm = Callable[[RecoveryPlan], str]


Origin = str | CatalogEntry | RecoverySource  # a backup (reference, catalog entry) or a ready source


class RecoverySession:
    """One recovery of tables from one backup (or one ready source) into one live database (see the module doc)."""

    def __init__(self, settings: Settings, origin: Origin, options: RecoverOptions,
                 target_name: str | None = None, on_event: EventSink | None = None,
                 cancel: CancelToken | None = None, state: StateStore | None = None) -> None:
        self.settings, self.options = settings, check_options(options)
        self.cancel = cancel or CancelToken()
        self.reporter = Reporter(on_event, self.cancel)
        self.state = state or StateStore(settings.state_dir)
        base = settings.target(target_name)
        self.live_db = options.target_db or base.dbname
        self.target = dataclasses.replace(base, dbname=self.live_db)
        self.given: RecoverySource | None = None  # a ready source: the caller's, never closed here
        if not isinstance(origin, str | CatalogEntry):
            if not isinstance(origin, RecoverySource):
                raise TypeError(f"not a backup nor a RecoverySource: {origin!r}")
            self.given = origin
        self.artifact = origin if self.given is None else None
        self.entry: CatalogEntry | None = origin if isinstance(origin, CatalogEntry) else None
        self.stamp = new_stamp()
        self.source: ScratchRestore | RecoverySource | None = None
        self.artifact_proof: Any = None
        self.works: list[Work] = []
        self.plan: RecoveryPlan | None = None
        self.pre_change: str | None = None
        self.lock: RunLock | None = None
        self.tools = None

    # -- steps -----------------------------------------------------------------------------
    def _step(self, step_id: str) -> Any:
        return self.reporter.step(step_id, STEP_TITLES[step_id], ORDER.index(step_id) + 1, len(ORDER))

    def _skip(self, step_id: str, why: str) -> None:
        self.reporter.started(step_id, STEP_TITLES[step_id], ORDER.index(step_id) + 1, len(ORDER))
        self.reporter.finished(step_id, Status.SKIP, why, 0.0)

    def open(self) -> None:
        """Verify the backup, fetch it when remote, restore it into the scratch database, prove that copy
        (a ready source: those four steps are skipped, saying why)."""
        self.lock = RunLock(self.settings.state_dir, f"{self.live_db}.restore", "table recovery").acquire()
        if self.given is not None:
            self._open_given(self.given)
            return
        if self.entry is None:
            self.entry = _resolve(self.settings, str(self.artifact), self.live_db)
        self._check_identity()
        with connect(self.target, dbname=self.live_db) as conn:
            self.tools = select_tools(self.settings, server_info(conn).major)
        with self._step("verify") as out:
            self._verify(out)
        self._download()
        with self._step("scratch") as out:
            drop_leftover_scratch(self.target, self.live_db, self.reporter, "scratch")
            self.source = ScratchRestore(self.settings, self.target, self.entry, self.live_db, self.tools, self.stamp)
            self.source.create(self.reporter, "scratch")
            self.source.load(self.reporter, "scratch", self.artifact_proof)
            out.detail = f"{self.entry.filename} restored into {self.source.dbname}" + (
                "" if self.source.with_acl else " (without owners and grants)")
        with self._step("prove_scratch") as out:
            out.status, out.detail = self.source.prove(self.artifact_proof, self.cancel)
            if out.status == Status.FAIL:
                raise OpsError(f"The scratch copy differs from the backup: {out.detail}", "the live tables were not "
                               "touched", say("list_backups"))

    def _open_given(self, source: RecoverySource) -> None:
        if source.dbname != self.live_db and not self.options.target_db:
            raise OpsError(f"{source.label} is database {source.dbname}, not {self.live_db}", "nothing was changed",
                           say("recover_other_db", db=self.live_db))
        with connect(self.target, dbname=self.live_db) as conn:
            self.tools = select_tools(self.settings, server_info(conn).major)
        with connect(source.target, dbname=source.dbname) as conn:  # reachable before anything is compared
            conn.execute("SELECT 1")
        self.source = source
        why = f"the source is not a backup file: {source.label}"
        self._skip("verify", f"not applicable: {why}")
        self._skip("download", "not applicable: nothing to download, the source is a running database")
        self._skip("scratch", f"not needed: the source is ready ({source.dbname} on "
                              f"{source.target.display_host}:{source.target.display_port})")
        self._skip("prove_scratch", f"no backup to prove it against: the proof compares the live tables with "
                                    f"{source.record}'s own tables, the independent record")

    def _check_identity(self) -> None:
        assert self.entry is not None
        db = (self.entry.meta or {}).get("database") or (self.entry.name.database if self.entry.name.conventional
                                                          else None)
        if db and db != self.live_db and not self.options.target_db:
            raise OpsError(f"{self.entry.filename} is a backup of database {db}, not of {self.live_db}",
                           "nothing was changed", say("recover_other_db", db=self.live_db))

    def _verify(self, out: StepOutcome) -> None:
        from opstower_core.verify import verify

        assert self.entry is not None
        res = verify(self.settings, self.entry, on_event=self.reporter.folded("verify"), cancel=self.cancel,
                     state=self.state, upto=7)
        self.artifact_proof = res.proof
        blocking = [f for f in res.failed if f.step != "s3"]
        if blocking:
            raise OpsError(f"Backup verification failed: {blocking[0].title}: {blocking[0].detail}",
                           "nothing was changed", say("list_backups"))
        out.status = Status.WARN if res.failed else Status.PASS
        out.detail = f"{self.entry.filename} verified ({sum(1 for r in res.results if r.status == Status.PASS)} " \
                     "checks passed)"

    def _download(self) -> None:
        assert self.entry is not None
        if self.entry.local_path is not None and self.entry.local_path.exists() and not self.options.from_s3:
            self._skip("download", f"not needed: the backup is local ({self.entry.local_path})")
            return
        from opstower_core.repo.download import download

        with self._step("download") as out:
            got = download(self.settings, self.entry, reporter=self.reporter, step="download")
            self.entry = got.entry
            out.detail = f"Downloaded to {got.path} (sha256 checked)"

    def preview(self) -> RecoveryPlan:
        """Per table: rows in the backup, live, missing, changed, only live, and what will be done. Changes nothing."""
        assert self.source is not None and (self.entry is not None or self.given is not None)
        with self._step("preview") as out:
            with connect(self.target, dbname=self.live_db, autocommit=False) as conn:
                try:
                    stage = self._stage(conn, "preview")
                    stage.load()
                    stage.compare()
                finally:
                    conn.rollback()
            self.plan = RecoveryPlan(
                artifact=self.entry.filename if self.entry else None, live_db=self.live_db,
                source=self.source.label if self.given else
                f"{self.source.label} in scratch database {self.source.dbname}",
                host=f"{self.target.display_host}:{self.target.display_port}", mode=self.options.mode,
                options=self.options, tables=[w.plan for w in self.works if w.plan], notes=self._notes,
                rto_minutes=self.target.rto_minutes)
            out.detail = "; ".join(t.describe() for t in self.plan.tables)
            out.status = Status.WARN if self.plan.blocked else Status.PASS
        return self.plan

    def _stage(self, conn: psycopg.Connection, step: str) -> Stage:
        assert self.source is not None and self.tools is not None
        with connect(self.source.target, dbname=self.source.dbname) as src:
            self.works, self._notes = plan_works(src, conn, self.options)
        return Stage(conn, self.source, self.tools, self.works, self.options, self.reporter, step, self.cancel)

    def apply(self, plan: RecoveryPlan, confirm: Confirm | None) -> list[TableOutcome]:
        """Confirm, copy the live tables, change them in one transaction, prove, commit."""
        if plan.blocked:
            t = plan.blocked[0]
            raise OpsError(f"Table {t.table} cannot be recovered this way: {'; '.join(t.notes)}",
                           "nothing was changed", say("recover_mode_change"))
        self._confirm(plan, confirm)
        self._pre_change_copy(plan)
        with connect(self.target, dbname=self.live_db, autocommit=False) as conn:
            lock_wait = self.settings.wait_for_locks_seconds or 60.0
            try:
                with guarded(conn, self.cancel, lock_wait, [self.live_db], "the table recovery"):
                    with self._step("apply") as out:
                        stage = self._stage(conn, "apply")
                        stage.load()
                        stage.lock()
                        stage.compare()
                        stage.apply()
                        out.detail = "; ".join(w.plan.describe() for w in self.works if w.plan)
                    with self._step("prove") as out:
                        assert self.source is not None
                        outcomes = prove(conn, self.source, self.works, self.options)
                        bad = [t for t in outcomes if not t.proven]
                        if bad:
                            raise OpsError(f"The proof failed for {bad[0].table}: {bad[0].proof}",
                                           "the transaction was rolled back; the live tables were not changed",
                                           f"report this; {say('recover_mode_copy')}")
                        conn.commit()
                        out.detail = "Committed. " + "; ".join(f"{t.table}: {t.proof}" for t in outcomes)
            except BaseException:
                _rollback(conn)
                raise
        return outcomes

    def _confirm(self, plan: RecoveryPlan, confirm: Confirm | None) -> None:
        if self.options.force:
            self._skip("confirm", say("force_given"))
            return
        with self._step("confirm") as out:
            if confirm is None:
                raise OpsError(f"Changing tables of {self.live_db} needs the operator to type its name",
                               "nothing was changed", say("confirm_on_terminal"))
            try:
                typed = confirm(plan)
            except KeyboardInterrupt:
                self.cancel.cancel()
                raise Cancelled("interrupted at the confirmation; nothing was changed") from None
            if (typed or "").strip() != self.live_db:
                raise OpsError("Recovery cancelled: the name typed did not match the database name",
                               "nothing was changed")
            out.detail = f"Confirmed: the operator typed {self.live_db}"

    def _pre_change_copy(self, plan: RecoveryPlan) -> None:
        from opstower_core.backup import BackupOptions, run_backup

        tables = self._live_members([t.table for t in plan.tables if t.live_rows is not None
                                     and t.action in ("merge", "replace")])
        if not tables:
            self._skip("pre_change", "no live table is changed (restored or copied tables are new)")
            return
        with self._step("pre_change") as out:
            targets = dict(self.settings.targets)
            targets[self.live_db] = dataclasses.replace(self.target, name=self.live_db)
            bsettings = self.settings.with_changes(targets=targets, default_target=self.live_db)
            res = run_backup(bsettings, self.live_db, BackupOptions(pre_restore=True, tables=tables),
                             on_event=self.reporter.folded("pre_change"), cancel=self.cancel, state=self.state)
            self.pre_change = res.name.filename
            out.detail = f"{res.path} ({', '.join(tables)})"
            out.data = {"artifact": res.name.filename}

    def _live_members(self, tables: list[str]) -> list[str]:
        """The tables and, for partitioned ones, their partitions (pg_dump -t takes each by name)."""
        if not tables:
            return []
        with connect(self.target, dbname=self.live_db) as conn:
            rows = conn.execute(
                "SELECT DISTINCT n.nspname || '.' || c.relname FROM unnest(%s::text[]) AS t(name) "
                "CROSS JOIN LATERAL pg_catalog.pg_partition_tree(pg_catalog.to_regclass("
                "pg_catalog.quote_ident(split_part(t.name, '.', 1)) || '.' || "
                "pg_catalog.quote_ident(substr(t.name, length(split_part(t.name, '.', 1)) + 2)))) p "
                "JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace ORDER BY 1", (tables,)).fetchall()
        return sorted(set(tables) | {r[0] for r in rows})  # a plain table has no partition tree

    @property
    def compared(self) -> str | None:
        """What the proof compared the live tables with, in words."""
        if self.source is None:
            return None
        if self.given is not None:
            return (f"the live tables against {self.source.record}'s tables ({self.source.label}); there is no "
                    "backup file behind them: they are the independent record")
        return f"the live tables against the scratch copy of {self.source.label}, itself proven against the backup"

    def close(self) -> str | None:
        """Drop the scratch database (always); a sentence when it could not be. A ready source is the caller's."""
        problem = None
        if isinstance(self.source, ScratchRestore) and self.source.created:
            t0 = time.monotonic()
            self.reporter.started("cleanup", STEP_TITLES["cleanup"], len(ORDER), len(ORDER))
            problem = self.source.close(self.reporter, "cleanup")
            self.reporter.finished("cleanup", Status.WARN if problem else Status.PASS,
                                   problem or f"Dropped {self.source.dbname}", time.monotonic() - t0)
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        return problem


def _resolve(settings: Settings, ref: str, live: str) -> CatalogEntry:
    """`latest` (or `<db>_latest`): the newest backup of the live database; else a path, name or S3 key."""
    from opstower_core.repo.catalog import list_catalog, resolve

    if ref in ("latest", f"{live}_latest"):
        for e in list_catalog(settings, database=live).entries:
            if not e.name.pre_restore and e.database == live and e.name.format in ("custom", "plain"):
                return e
        raise OpsError(f"No backup of {live} in {settings.backup_dir}" + (" or S3" if settings.s3.enabled else ""),
                       "nothing was changed", say("take_backup"))
    return resolve(settings, ref)


def _rollback(conn: psycopg.Connection) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        pass  # a broken connection: the server rolls back on its own


def preview_recovery(settings: Settings, origin: Origin, options: RecoverOptions,
                     target_name: str | None = None, on_event: EventSink | None = None,
                     cancel: CancelToken | None = None) -> RecoveryPlan:
    """The preview alone (`--plan`): the scratch copy is made, compared with live, and dropped (a ready
    source is only read)."""
    session = RecoverySession(settings, origin, options, target_name, on_event, cancel)
    try:
        session.open()
        return session.preview()
    finally:
        session.close()


def run_recovery(settings: Settings, origin: Origin, options: RecoverOptions,
                 target_name: str | None = None, confirm: Confirm | None = None, on_event: EventSink | None = None,
                 cancel: CancelToken | None = None, state: StateStore | None = None) -> RecoveryResult:
    """The whole recovery; never raises for an operator error: the result says what happened and the
    state things are in (a failure before the commit leaves the live tables unchanged)."""
    session = RecoverySession(settings, origin, options, target_name, on_event, cancel, state)
    t0, started = time.monotonic(), time.time()
    outcomes: list[TableOutcome] = []
    status, error = "success", None
    try:
        session.open()
        plan = session.preview()
        outcomes = session.apply(plan, confirm)
    except (Cancelled, KeyboardInterrupt) as exc:
        status, error = "cancelled", exc
    except Exception as exc:  # noqa: BLE001 - every failure ends in one sentence
        status, error = "failed", exc
    finally:
        cleanup = session.close()
    seconds = time.monotonic() - t0
    result = RecoveryResult(ok=status == "success", status=status, plan=session.plan,
                            steps=list(session.reporter.results), total_seconds=seconds,
                            rto_seconds=session.target.rto_minutes * 60.0, sentence="", tables=outcomes,
                            pre_change_artifact=session.pre_change,
                            scratch_database=session.source.dbname if isinstance(session.source, ScratchRestore)
                            else None,
                            scratch_proof=session.source.proof.sentence if isinstance(session.source, ScratchRestore)
                            and session.source.proof else None,
                            source=session.plan.source if session.plan else session.given.label if session.given
                            else None,
                            compared=session.compared)
    result.sentence = _sentence(session, result, error, cleanup)
    session.state.record("restore", session.live_db, status, artifact=session.entry.filename if session.entry else None,
                         started_at=started, duration_seconds=seconds, error=None if result.ok else result.sentence,
                         details={"kind": "table_recovery", **result.as_dict()})
    return result


def _sentence(s: RecoverySession, result: RecoveryResult, error: BaseException | None, cleanup: str | None) -> str:
    tail = f" The scratch database is left: {cleanup}; drop it by hand." if cleanup else ""
    if result.ok:
        took = fmt.duration(result.total_seconds)
        margin = result.margin_seconds
        rto = (f"{fmt.duration(margin)} left of the {s.target.rto_minutes}-minute RTO" if margin >= 0 else
               f"{fmt.duration(-margin)} OVER the {s.target.rto_minutes}-minute RTO")
        what = "; ".join(t.describe() for t in result.tables)
        pre = (f" The live tables as they were before are in {s.pre_change} "
               f"({say('recover_put_back', artifact=s.pre_change)})." if s.pre_change else "")
        origin = result.plan.artifact if result.plan and result.plan.artifact else result.source or "?"
        against = f" against {s.source.record}'s tables" if s.given is not None and s.source is not None else ""
        return f"Recovered from {origin} into {s.live_db} in {took} ({rto}): {what}; proven{against}.{pre}{tail}"
    if isinstance(error, Cancelled | KeyboardInterrupt):
        return OpsError("Table recovery cancelled", "the live tables were not changed",
                        "run it again when ready").sentence + tail
    reason = getattr(error, "what", None) or (first_line(error) if error else "unknown error")
    state = getattr(error, "state", "") or "the live tables were not changed (the transaction was rolled back)"
    nxt = getattr(error, "next_step", "") or "fix the cause shown and run it again"
    return OpsError(f"Table recovery failed: {reason.rstrip('.')}", state, nxt).sentence + tail


def recover_tables_from_cluster(settings: Settings, cluster: ScratchCluster, dbname: str, live: Target,
                                options: RecoverOptions, confirm: Confirm | None = None,
                                on_event: EventSink | None = None, cancel: CancelToken | None = None,
                                moment: str = "", plan_only: bool = False) -> RecoveryResult | RecoveryPlan:
    """Table recovery (merge / replace / copy) from database `dbname` of a recovered PITR cluster into
    the live database `live` (a settings target). `moment` is what the cluster was recovered to, in
    words (RecoveryTarget.describe()), for the plan, the result and the history. The cluster is left
    as it was (the caller discards or keeps it). `plan_only`: the preview alone (a RecoveryPlan);
    else the whole run (a RecoveryResult, never raising for an operator error)."""
    from opstower_core.pitr import PitrSource

    source = PitrSource(cluster, dbname, moment)
    name = next((k for k, t in settings.targets.items() if t == live), None)
    if name is None:  # a target built by hand: register it for this run (the pre-change copy reads settings)
        name = live.name or live.dbname
        settings = settings.with_changes(targets={**settings.targets, name: live})
    if plan_only:
        return preview_recovery(settings, source, options, name, on_event, cancel)
    return run_recovery(settings, source, options, name, confirm, on_event, cancel)
