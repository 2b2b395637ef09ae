"""Planning a restore: everything it will do, step by step, with the exact commands; nothing is changed."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import humanize

from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError, UsageError
from opstower_core.events import Reporter
from opstower_core.pg.admin import (
    ConnState,
    admin,
    apply_props_sql,
    block_sql,
    create_sql,
    database_size,
    db_exists,
    derived_name,
    drop_sql,
    free_name,
    in_place_statements,
    prepared_transactions,
    read_props,
    sessions,
    swap_statements,
    terminate_sql,
)
from opstower_core.pg.load import identities_for, read_toc
from opstower_core.pg.tools import PgTools, select_tools, server_info
from opstower_core.repo.catalog import CatalogEntry, fetch_s3_metadata, resolve
from opstower_core.restore.checks import existing_roles, maintenance_sql, parse_roles
from opstower_core.restore.model import STEP_TITLES, PlannedStep, RestoreOptions, RestorePlan
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import S3Store

PARALLEL_THRESHOLD = 256 * 1024**2  # below this a single streamed pg_restore is as fast

def safe_destination(backup_dir: Path, key: str) -> Path:
    """Where an S3 object may be downloaded: a plain artifact file name directly in the backup dir."""
    from opstower_core.artifacts.names import parse_name

    base = key.rsplit("/", 1)[-1]
    bad = (not base or base.startswith(".") or "\\" in base or "\x00" in base
           or (parse_name(base) is None and not base.endswith((".meta.json", ".globals.sql"))))
    dest = (backup_dir / base).resolve() if not bad else None
    if bad or dest is None or dest.parent != backup_dir.resolve():
        raise OpsError(f"S3 key {key!r} does not name a backup file", "nothing was downloaded",
                       "pick a backup from `opstower list`")
    return dest


def _resolve(settings: Settings, ref: str, from_s3: bool) -> CatalogEntry:
    try:
        return resolve(settings, ref)
    except OpsError:
        if not from_s3 or "/" not in ref:
            raise
        # An S3 key as the reference wrote it (database/YYYYMMDD/file) while a prefix is set.
        return resolve(settings, ref.rsplit("/", 1)[-1])


def _target_for(settings: Settings, target_name: str | None, database: str) -> Target:
    if target_name:
        return settings.target(target_name)
    for t in settings.targets.values():
        if database in (t.dbname, t.name):
            return t
    return settings.target()


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d_%H%M%S")


PROTECTED_DATABASES = {"template0", "template1", "postgres"}


def plan_restore(settings: Settings, artifact: str | CatalogEntry, target_name: str | None = None,
                 options: RestoreOptions | None = None) -> RestorePlan:
    """Everything a restore will do, step by step, with the exact commands; changes nothing.

    Raises OpsError (nothing changed) when a prerequisite is missing: the server or the
    bucket unreachable, no compatible client tools, a bad option combination.
    """
    o = options or RestoreOptions()
    entry = artifact if isinstance(artifact, CatalogEntry) else _resolve(settings, os.fspath(artifact), o.from_s3)
    name = entry.name
    if o.tables is not None:
        o.tables = [t.strip() for t in o.tables if t.strip()]
        if not o.tables:
            raise UsageError("--tables needs at least one table name", "nothing was changed", "e.g. --tables public.orders")
        if name.format != "custom":
            raise UsageError(f"Selective restore needs a custom-format backup; {entry.filename} is plain SQL",
                             "nothing was changed", "restore the whole backup with --target-db NAME instead")
        if o.in_place:
            raise UsageError("--tables and --in-place cannot be combined: live tables are never overwritten",
                             "nothing was changed", "drop --in-place")
    if o.jobs is not None and o.jobs < 1:
        raise UsageError("--jobs must be at least 1", "nothing was changed", "")
    identities_for(settings, name)  # an encrypted artifact needs the identity: say so before anything runs
    target = _target_for(settings, target_name, entry.database)
    LocalStore(settings.backup_dir).ensure()
    stamp = _stamp()
    notes: list[str] = []

    # Where the bytes come from.
    key = None
    local_ok = entry.local_path is not None and entry.local_path.exists()
    if o.from_s3 or not local_ok:
        if not settings.s3.enabled:
            where = f"{entry.local_path} does not exist" if entry.local_path else f"{entry.filename} is not local"
            raise OpsError(f"{where} and S3 is not configured", "nothing was changed",
                           "give the path of a local backup or configure S3_BUCKET")
        key = entry.s3_key or name.s3_key(settings.s3.prefix)
        store = S3Store(settings.s3)
        store.check_reachable()
        head = store.head(key)
        if head is None:
            raise OpsError(f"Backup s3://{settings.s3.bucket}/{key} does not exist", "nothing was changed",
                           "pick a backup from `opstower list`")
        entry = CatalogEntry(name, int(head["ContentLength"]), local_path=None, s3_key=key,
                             s3_size=int(head["ContentLength"]), meta=None, meta_problem="metadata in S3 (not fetched)")
        fetch_s3_metadata(settings, entry)
    dest = safe_destination(settings.backup_dir, key) if key else None
    meta = entry.meta or {}

    if (o.target_db or target.dbname) in PROTECTED_DATABASES:
        raise UsageError(f"Refusing to restore into {o.target_db or target.dbname}: it is a PostgreSQL system database "
                       "(every CREATE DATABASE copies template1; postgres is the maintenance database)",
                       "nothing was changed", "choose another --target-db")
    with admin(target, o.target_db or target.dbname) as conn:
        info = server_info(conn)
        tools = select_tools(settings, info.major)
        live = o.target_db or target.dbname
        live_exists = db_exists(conn, live)
        if o.tables:
            mode = "tables"
        elif live_exists:
            mode = "in_place" if o.in_place else "swap"
        else:
            mode = "new_db"
        if o.tables:
            if o.target_db and live_exists:
                raise UsageError(f"Database {live} exists; a selective restore only creates a new database",
                                 "nothing was changed", "choose a new --target-db name or leave it out")
            work = o.target_db or free_name(conn, derived_name(live, f"_tables_{stamp}"))
            live_exists = False
        elif mode == "new_db" and o.in_place:
            notes.append(f"{live} does not exist: --in-place has nothing to replace, it is created")
        work = work if o.tables else free_name(conn, derived_name(live, f"_restore_{stamp}"))
        old = free_name(conn, derived_name(live, f"_pre_restore_{stamp}")) if mode == "swap" else None
        live_sessions = sessions(conn, live) if live_exists else []
        live_size = database_size(conn, live) if live_exists else None
        prepared = prepared_transactions(conn, live) if live_exists else []
        live_props = read_props(conn, live) if live_exists else None
        roles_on_server = existing_roles(conn)
    if prepared and mode in ("swap", "in_place"):
        raise OpsError(f"Database {live} has prepared transactions ({', '.join(prepared)}): it cannot be renamed or "
                       "dropped", "nothing was changed", "COMMIT PREPARED or ROLLBACK PREPARED them, then retry")

    # Roles: from the globals file beside the artifact (when the backup made one).
    roles: dict[str, list[str]] = {}
    gfile = meta.get("globals_file") if meta.get("globals_dumped") else None
    if gfile:
        gpath = (entry.local_path.parent if entry.local_path else settings.backup_dir) / gfile
        if gpath.is_file():
            roles = parse_roles(gpath.read_text(encoding="utf-8", errors="replace"))
        elif key:
            notes.append(f"globals file {gfile} is read after the download")
    missing = sorted(r for r in roles if r not in roles_on_server)
    no_owner = name.format == "custom" and bool(missing) and not o.create_roles
    if name.format == "custom" and local_ok and not key and not o.create_roles:
        owners = toc_owners(settings, entry, tools, target)
        absent = sorted(owners - roles_on_server)
        if absent:
            no_owner = True
            missing = sorted(set(missing) | set(absent))
    if no_owner:
        notes.append(f"roles missing on this server: {', '.join(missing)}; objects will be owned by the restoring "
                     "user (--no-owner --no-acl); use --create-roles to create them first")

    uncompressed = meta.get("uncompressed_bytes")
    jobs = _jobs(settings, o, name.format, entry.size, uncompressed, notes)
    plan = RestorePlan(entry=entry, target=target, live_db=live, work_db=work, mode=mode, steps=[],
                       sessions=live_sessions, artifact_size=entry.size, rto_minutes=target.rto_minutes, options=o,
                       old_db=old, live_exists=live_exists, live_size=live_size,
                       uncompressed_size=int(uncompressed) if isinstance(uncompressed, int) else None, jobs=jobs,
                       no_owner=no_owner, roles=roles, missing_roles=missing, download_key=key, download_dest=dest,
                       server_version=info.version, tools=tools, notes=notes, stamp=stamp, live_props=live_props)
    if entry.database != live and mode != "tables":
        notes.append(f"the backup is of database {entry.database}; it will become {live}")
    if mode == "swap":
        notes.append(f"{live} stays in service during the restore; writes made to it meanwhile stay in "
                     f"{old} after the switch")
    if mode == "swap" and live_size:
        notes.append(f"the server needs room for a second copy of {live} "
                     f"(~{humanize.naturalsize(live_size, binary=True)}) until the old one is discarded; "
                     "use --in-place when it has not")
    if live_sessions:
        notes.append(f"{len(live_sessions)} session(s) connected to {live} will be terminated at the switch")
    plan.steps = _steps(settings, plan)
    return plan


def toc_owners(settings: Settings, entry: CatalogEntry, tools: PgTools, target: Target) -> set[str]:
    """Roles owning objects in a custom archive (the last field of its schema/table entries)."""
    try:
        toc = read_toc(settings, entry, tools, target, Reporter(), "plan")
    except OpsError:
        return set()  # verification reports an unreadable archive
    owners = set()
    for line in toc:
        if line.startswith(";") or "; " not in line:
            continue
        parts = line.split()
        if len(parts) >= 6 and parts[3] in ("SCHEMA", "TABLE", "SEQUENCE", "VIEW", "FUNCTION", "TYPE") and \
                parts[4] != "DATA":
            owners.add(parts[-1])
    return owners


def _jobs(settings: Settings, o: RestoreOptions, fmt: str, size: int, uncompressed: Any, notes: list[str]) -> int:
    if fmt != "custom" or o.tables:
        if o.jobs and o.jobs > 1:
            notes.append("--jobs applies to whole custom-format restores only; this one runs as one stream")
        return 1
    jobs = o.jobs or (min(4, os.cpu_count() or 1) if size >= PARALLEL_THRESHOLD else 1)
    if jobs > 1:
        need = int(uncompressed) if isinstance(uncompressed, int) else size * 4
        free = LocalStore(settings.backup_dir).free_bytes()
        if free < need * 1.1:
            notes.append(f"not enough room in {settings.backup_dir} for the {humanize.naturalsize(need, binary=True)} "
                         "seekable copy parallel pg_restore needs: restoring with one streamed job")
            return 1
    return jobs


def _steps(settings: Settings, p: RestorePlan) -> list[PlannedStep]:
    e, live, work, mode = p.entry, p.live_db, p.work_db, p.mode
    source = str(p.download_dest or e.local_path)
    size = humanize.naturalsize(p.artifact_size, binary=True)
    replaced = mode in ("swap", "in_place")
    spec = p.load_spec
    steps: dict[str, PlannedStep] = {}

    def add(step_id: str, commands: list[str], detail: str, skip: str | None = None) -> None:
        steps[step_id] = PlannedStep(step_id, STEP_TITLES[step_id], commands, detail, skip)

    where = f"s3://{settings.s3.bucket}/{p.download_key}" if p.download_key else str(e.local_path)
    add("verify", [f"opstower verify {where} (checks 1-7)"],
        f"exists, readable, not empty, {e.name.compression} integrity, dump content, metadata, S3 copy; "
        f"{size}; a failed check stops here, before anything is touched")
    if p.download_key:
        add("download", [f"GET s3://{settings.s3.bucket}/{p.download_key} -> {p.download_dest}"],
            f"{size} with sha256 check, written under a temporary name then renamed; metadata and globals beside it")
    else:
        add("download", [], "", skip=f"not needed: the backup is local ({e.local_path})")
    if replaced and not p.options.force:
        add("confirm", [f"type the database name: {live}"],
            f"WARNING: database {live} on {p.target.display_host} will be replaced by {e.filename}")
    else:
        add("confirm", [], "", skip="--force given" if replaced else f"nothing existing is replaced ({mode})")
    if p.options.create_roles:
        cmds = [s for r in p.missing_roles for s in p.roles.get(r, [])]
        add("roles", cmds or ["(roles are read from the globals file)"],
            f"create missing roles {', '.join(p.missing_roles) or '(none known yet)'}; existing roles are not altered")
    else:
        add("roles", [], "", skip="missing roles: " + ", ".join(p.missing_roles) + " (use --create-roles)"
            if p.missing_roles else "not requested (--create-roles)")
    if replaced:
        dump = p.tools.pg_dump if p.tools else "pg_dump"
        add("pre_backup", [f"{dump} --format=custom --snapshot=<exported> --verbose --dbname={live} --compress=0 "
                           f"| zstd > {settings.backup_dir}/pre_restore_{live}_<YYYYMMDD_HHMMSS>.dump.zst"],
            f"safety copy of {live} ({humanize.naturalsize(p.live_size or 0, binary=True)}) through the backup engine")
    else:
        add("pre_backup", [], "", skip=f"{live} does not exist: nothing to back up" if mode == "new_db"
            else "the live database is not touched")
    sess = [f"pid {s['pid']} {s['user']} {s['application'] or '-'} {s['client'] or '-'} {s['state']}"
            for s in p.sessions]
    if replaced:
        add("terminate", block_sql(live) + [terminate_sql(live)],
            f"{len(p.sessions)} session(s) now: " + ("; ".join(sess) if sess else "none")
            + "; connection settings are put back afterwards")
    else:
        add("terminate", [], "", skip="no existing database is replaced")
    create = [create_sql(work, p.live_props)] + (apply_props_sql(work, p.live_props) if p.live_props else [])
    before = p.live_props.conn if p.live_props else None
    if mode == "in_place":
        add("drop_create", [drop_sql(live), *create], f"{live} is dropped (the pre-restore backup is the way back), "
            f"then the restore goes into {work}")
    else:
        add("drop_create", create, f"staging database {work}; {live} is not touched")
    add("restore", spec.commands(p.tools, source) if p.tools else [],
        f"{e.name.format} format, {p.jobs} job(s); decompression runs in-process (as zstd/gzip -dc would)" + (f", tables {', '.join(p.options.tables)}" if p.options.tables
                                                      else "") + ("; owners/ACLs skipped" if p.no_owner else ""))
    add("verify_restored", ["SELECT count(*) FROM ONLY <each table>  -- vs the metadata's row_counts",
                            "SELECT indexrelid FROM pg_index WHERE NOT indisvalid",
                            "CREATE EXTENSION amcheck; SELECT bt_index_check(<each btree index>)  -- when available",
                            f"SELECT pg_database_size({work!r})"],
        "tables and row counts against the metadata, index integrity, database size")
    for kind in ("analyze", "vacuum", "reindex"):
        add(kind, [f"{maintenance_sql(kind, work)}  -- in {work}"], "post-restore optimization")
    if mode == "swap":
        add("swap", ["BEGIN", *swap_statements(live, work, p.old_db or "", before or ConnState(True, -1)),
                     "COMMIT"],
            f"one transaction (connection settings as {live} had them before the switch); {live} becomes {p.old_db} (kept until `opstower restore --discard-old {p.old_db}`); {work} becomes {live}")
    elif mode in ("in_place", "new_db"):
        add("swap", ["BEGIN", *in_place_statements(work, live, before),
                     "COMMIT"], f"{work} becomes {live}")
    else:
        add("swap", [], "", skip=f"the tables stay in {work} for you to merge back")
    order = (["verify", "download", "confirm", "roles", "pre_backup", "drop_create", "restore", "verify_restored",
              "analyze", "vacuum", "reindex", "terminate", "swap"] if mode == "swap" else
             ["verify", "download", "confirm", "roles", "pre_backup", "terminate", "drop_create", "restore",
              "verify_restored", "analyze", "vacuum", "reindex", "swap"])
    return [steps[s] for s in order]
