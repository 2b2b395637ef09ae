"""The automated drill phases: the real restore and verification engines, and the cleanup.

Kept apart from drill.py so the drill's state machine can be read without the engine's
details. Each phase returns (status word or None when cancelled, one-line detail, data for
the report); an OpsError raised here becomes the phase's FAIL.
"""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg

from opstower_core.config import Settings
from opstower_core.drill.state import Drill, PhaseRun
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status
from opstower_core.repo.catalog import CatalogEntry, fetch_s3_metadata, resolve
from opstower_core.runs.history import StateStore


def drill_database_name(drill: Drill, phase: PhaseRun | None = None,
                        taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`<db>_drill_<YYYYMMDD_HHMMSS>` (with the phase number for any restore phase after the first).

    `taken`: names other drills use; two drills of one database started in the same second
    must never share (and so drop) each other's database, so the drill id is added then.
    """
    from opstower_core.pg.admin import derived_name

    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(drill.started_at))
    restores = [p.idx for p in drill.phases if p.kind in ("restore", "selective_restore")]
    suffix = f"_drill_{stamp}"
    if phase is not None and restores and phase.idx != restores[0]:
        suffix += f"_{phase.idx + 1}"
    name = derived_name(drill.database, suffix)
    return name if name not in taken else derived_name(drill.database, f"{suffix}_d{drill.id}")


def _entry(settings: Settings, drill: Drill) -> CatalogEntry:
    return resolve(settings, drill.options.get("backup_ref") or drill.backup)


def all_tables(settings: Settings, drill: Drill, entry: CatalogEntry) -> list[str]:
    """Every table in the backup ("schema.table"): from the metadata, else the archive's TOC."""
    if entry.meta is None and entry.s3_key:
        fetch_s3_metadata(settings, entry)
    counts = (entry.meta or {}).get("row_counts")
    if isinstance(counts, dict) and counts:
        return sorted(counts)
    from opstower_core.pg.load import read_toc, toc_entry
    from opstower_core.pg.tools import connect, select_tools, server_info

    target = settings.target(drill.target_name)
    with connect(target, dbname="postgres") as conn:
        tools = select_tools(settings, server_info(conn).major)
    tables = []
    for line in read_toc(settings, entry, tools, target, Reporter(), "plan"):
        e = toc_entry(line)
        if e and e[0] == "TABLE":
            tables.append(f"{e[1]}.{e[2]}")
    if not tables:
        raise OpsError(f"{entry.filename} holds no tables to restore", "nothing was restored",
                       "drill with another backup")
    return sorted(tables)


def run_restore_phase(settings: Settings, drill: Drill, phase: PhaseRun, on_event: EventSink | None,
                      cancel: CancelToken, state: StateStore) -> tuple[str | None, str, dict[str, Any]]:
    """Restore the drill's backup into the drill database (or, asked for, production); a
    selective_restore phase then rehearses the accidental deletion and its recovery there."""
    from opstower_core.restore import RestoreOptions, plan_restore, run_restore

    entry = _entry(settings, drill)
    selective = phase.kind == "selective_restore"
    if drill.options.get("into_production") and not selective:
        options = RestoreOptions(force=True)
    else:  # the deletion rehearsal deletes rows: never in production, whatever was asked
        name = phase.data["target_db"]  # chosen and saved when the phase started
        # A previous attempt of this phase (interrupted or cancelled) may have left it: it is ours.
        _drop(settings, drill, [name])
        options = RestoreOptions(target_db=name, force=True)
    plan = plan_restore(settings, entry, drill.target_name, options)
    forecast = _forecast(settings, drill, entry, plan.mode, state)  # before the run: it must not see itself
    result = run_restore(settings, plan, on_event=on_event, cancel=cancel, state=state)
    data = {"restore": result.as_dict(), "database": result.database, "mode": plan.mode,
            "tables": options.tables, "old_database": result.old_database, "forecast": forecast}
    if result.status == "cancelled":
        return None, result.sentence, data
    if not result.ok:
        return "FAIL", result.sentence, data
    warned = any(s.status == Status.WARN for s in result.steps)
    if selective:
        return run_deletion_rehearsal(settings, drill, entry, result.database, warned, on_event, cancel, state, data)
    return ("WARN" if warned else "PASS"), result.sentence, data


def _forecast(settings: Settings, drill: Drill, entry: CatalogEntry, mode: str,
              state: StateStore) -> dict[str, Any] | None:
    """The restore-time forecast for this very backup, made before the restore runs, for the report's
    forecast-vs-actual line (issue 18). A forecast that cannot be made is said, never a drill failure."""
    from opstower_core.forecast import forecast_restore

    try:
        meta = entry.meta or {}
        dump = meta.get("uncompressed_bytes")
        fc = forecast_restore(state.runs("restore", limit=200), entry.database,
                              dump_bytes=dump if isinstance(dump, int) and dump > 0 else None,
                              artifact_bytes=int(meta.get("size_bytes") or entry.size or 0) or None,
                              rto_minutes=settings.target(drill.target_name).rto_minutes,
                              mode=mode,
                              tests=state.runs("verify", entry.database, limit=50))
    except Exception as exc:  # noqa: BLE001 - a forecast is advice; the drill goes on without it
        return {"seconds": None, "reason": f"forecast failed: {exc}"}
    return {"seconds": fc.seconds, "reason": fc.reason, "runs": fc.runs,
            "steps": [{"step": st.step, "seconds": st.seconds, "basis": st.basis} for st in fc.steps]}


def run_deletion_rehearsal(settings: Settings, drill: Drill, entry: CatalogEntry, database: str, warned: bool,
                           on_event: EventSink | None, cancel: CancelToken, state: StateStore,
                           data: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    """In the drill database (the backup just restored): delete rows as the accident would, recover
    them with the table recovery engine (merge, the drill database as the live one), prove it."""
    from opstower_core.drill.deletion import check_recovered, stage_accident
    from opstower_core.pg.tools import connect
    from opstower_core.recover import RecoverOptions, run_recovery

    target = settings.target(drill.target_name)
    try:
        with connect(target, dbname=database, autocommit=False) as conn:
            accident = stage_accident(conn, drill.options.get("tables"), drill.id)
    except psycopg.Error as exc:
        return "FAIL", OpsError(f"Deleting rows in {database} failed: {str(exc).strip().splitlines()[0]}",
                                "the drill database is left as restored", "drill with other tables").sentence, data
    except OpsError as exc:
        return "FAIL", exc.sentence, data
    tables = [t.table for t in accident.tables]
    data["tables"] = tables
    data["deletion"] = {"tables": [t.as_dict() for t in accident.tables], "deleted": accident.deleted}
    data["recovery_point"] = {"backup": entry.filename, "taken_at": drill.backup_created,
                              "age_seconds": drill.started_at - drill.backup_created}
    # target_db: the drill database is the "live" one, on the target's server, under its connection settings.
    result = run_recovery(settings, entry, RecoverOptions(tables=tables, mode="merge", force=True, target_db=database),
                          drill.target_name, on_event=on_event, cancel=cancel, state=state)
    data["recovery"] = result.as_dict()
    data["rows_back"] = result.rows_back
    if result.status == "cancelled":
        return None, result.sentence, data
    if not result.ok:
        return "FAIL", result.sentence, data
    with connect(target, dbname=database) as conn:
        problems = check_recovered(conn, accident)
    data["deletion"]["problems"] = problems
    back = f"{result.rows_back:,} of {accident.deleted:,} deleted rows came back"
    if problems or result.rows_back != accident.deleted:
        return "FAIL", f"Recovery incomplete: {back}; " + "; ".join(problems or ["counts differ"]), data
    kept = [t for t in accident.tables if t.since_key is not None]
    detail = (f"{back} ({', '.join(tables)}); " + (f"{len(kept)} row(s) written since the backup kept; " if kept
                                                   else "no row written since the backup could be staged; ")
              + f"recovery point {entry.filename}. {result.sentence}")
    warned = warned or any(s.status == Status.WARN for s in result.steps) or not kept
    return ("WARN" if warned else "PASS"), detail, data


def run_verify_phase(settings: Settings, drill: Drill, on_event: EventSink | None, cancel: CancelToken,
                     state: StateStore) -> tuple[str | None, str, dict[str, Any]]:
    """The eight checks with the full restoration test, on the drill's backup."""
    from opstower_core.verify import verify

    result = verify(settings, _entry(settings, drill), full_test=True, on_event=on_event, cancel=cancel, state=state)
    counts = {s: sum(1 for r in result.results if r.status == s) for s in Status}
    detail = (f"{counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, {counts[Status.WARN]} warnings, "
              f"{counts[Status.SKIP]} skipped")
    if result.failed:
        detail += ": " + "; ".join(f"{r.title}: {r.detail}" for r in result.failed)
    data = {"verify": {"status": result.status.value, "seconds": round(result.seconds, 3),
                       "tables_in_dump": result.tables_in_dump,
                       "results": [{"step": r.step, "title": r.title, "status": r.status.value, "detail": r.detail,
                                    "seconds": round(r.seconds, 3)} for r in result.results]}}
    return result.status.value, detail, data


def _leftovers(base: str) -> re.Pattern[str]:
    # The drill database, the restore's staging copy of it and a swap's kept copy: all named after it.
    # A table recovery's scratch database in it (`_recover_<stamp>`), left only by a killed run.
    return re.compile(re.escape(base) + r"(_(pre_)?restore_\d{8}_\d{6}(_\d+)?|_recover_\d{8}_\d{6}Z?(_\d+)?)?")


def _drop(settings: Settings, drill: Drill, bases: list[str]) -> tuple[list[str], list[str]]:
    from opstower_core.pg.admin import admin, drop_database

    live = {t.dbname for t in settings.targets.values()}
    dropped, errors = [], []
    target = settings.target(drill.target_name)
    with admin(target, drill.database) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
        for base in bases:
            if base in live:  # never a production database, whatever the list says
                continue
            pattern = _leftovers(base)
            for name in names:
                if pattern.fullmatch(name) and name not in live:
                    try:
                        drop_database(conn, name)
                        dropped.append(name)
                    except Exception as exc:  # noqa: BLE001 - reported, the drill still ends
                        errors.append(f"{name}: {str(exc).strip().splitlines()[0]}")
    return dropped, errors


def drop_drill_databases(settings: Settings, drill: Drill) -> dict[str, Any]:
    """Drop the databases the drill created; {"dropped": [...], "errors": [...]} (never raises)."""
    if not drill.databases:
        return {"dropped": [], "errors": []}
    try:
        dropped, errors = _drop(settings, drill, drill.databases)
    except OpsError as exc:
        return {"dropped": [], "errors": [exc.sentence]}
    out: dict[str, Any] = {"dropped": dropped, "errors": errors}
    removed = _drop_pre_change_copies(settings, drill)
    if removed:
        out["removed"] = removed
    return out


def _drop_pre_change_copies(settings: Settings, drill: Drill) -> list[str]:
    """The table recovery's pre-change copies of drill databases' tables: meaningless once those are gone."""
    from opstower_core.artifacts.names import parse_name

    gone = []
    for p in drill.phases:
        filename = (p.data.get("recovery") or {}).get("pre_change_artifact")
        name = parse_name(filename) if filename else None
        if name is None or not name.pre_restore or name.database not in drill.databases:
            continue  # only a copy of a drill database's tables, never anything else
        for f in (filename, name.meta_filename, name.globals_filename):
            path = settings.backup_dir / f
            if path.exists():
                path.unlink()
                gone.append(f)
    return gone
