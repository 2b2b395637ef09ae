"""Planning a restore: everything it will do, step by step, with the exact commands; nothing is changed."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import humanize

from opstower_core.advice import say
from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError, UsageError
from opstower_core.forecast import PhysicalOffer, RestoreForecast, forecast_restore, physical_offer
from opstower_core.pg.admin import (
    ConnState,
    DbProps,
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
from opstower_core.pg.load import identities_for
from opstower_core.pg.tools import PgTools, select_tools, server_info
from opstower_core.repo.catalog import CatalogEntry, fetch_s3_metadata, list_catalog, resolve
from opstower_core.repo.download import safe_destination
from opstower_core.restore.checks import maintenance_sql
from opstower_core.restore.identity import ArtifactFacts, read_facts
from opstower_core.restore.model import STEP_TITLES, MissingRoles, PlannedStep, RestoreOptions, RestorePlan
from opstower_core.restore.roles import existing_roles, parse_roles
from opstower_core.runs.history import StateStore
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import store_for

PARALLEL_THRESHOLD = 256 * 1024**2  # below this a single streamed pg_restore is as fast
# Parallel pg_restore needs the dump decompressed to a seekable file first; on 2 cores the server
# is the bottleneck and that detour made the 3 GB restore slower (31.9 s vs 27.7 s streamed, issue 18).
PARALLEL_MIN_CORES = 3
# In swap mode the pre-restore backup runs beside these steps (the live database is kept, renamed, so
# the dump is a second way back, not the only one); it is joined before the first step that touches
# the live database, so a failed safety copy still stops the restore before anything changes.

_LATEST = re.compile(r"^(?P<db>.+)_latest(?:\.(?P<ext>dump\.zst|sql\.gz|dump|sql)(?P<age>\.age)?)?$")


def resolve_artifact(settings: Settings, ref: str, database: str, from_s3: bool = False) -> CatalogEntry:
    """The backup `ref` names, for a restore of `database`.

    A path (absolute, ./, ~, or an existing file) is a local file, never an S3 key.
    `latest`, `<db>_latest` and bare names are looked up among the backups of `database`
    (`<db>_latest`: of `<db>`), never another target's. S3 keys (s3://…, database/…,
    the prefix, or anything with a slash under --from-s3) are looked up in the catalog.
    """
    path = Path(ref).expanduser()
    if _looks_local(settings, ref, path, from_s3):
        if path.is_dir():
            raise UsageError(f"{ref} is a directory, not a backup file", "nothing was changed",
                             "give the backup file's path, or a name from `opstower list`")
        if not (path.exists() or path.is_symlink()):
            raise OpsError(f"No backup file at {ref}", "nothing was changed",
                           "check the path, or give a name from `opstower list`")
        return resolve(settings, ref)
    if ref == "latest" or (m := _LATEST.match(ref)):
        return _latest(settings, database if ref == "latest" else m.group("db"), None if ref == "latest" else m)
    if "/" in ref:
        try:
            return resolve(settings, ref)
        except OpsError:
            # An S3 key as the reference wrote it (database/YYYYMMDD/file) while a prefix is set.
            return _named(settings, ref.rsplit("/", 1)[-1], database)
    return _named(settings, ref, database)


def _looks_local(settings: Settings, ref: str, path: Path, from_s3: bool) -> bool:
    s3_ref = ref.startswith(("s3://", "database/")) or bool(settings.s3.prefix) and ref.startswith(settings.s3.prefix)
    if s3_ref:
        return False
    if path.is_absolute() or ref.startswith(("./", "../", "~")) or path.exists() or path.is_symlink():
        return True
    return "/" in ref and not from_s3


def _latest(settings: Settings, db: str, m: re.Match[str] | None) -> CatalogEntry:
    catalog = list_catalog(settings, database=db)
    for e in catalog.entries:
        if e.name.pre_restore or e.database != db:
            continue
        if m is None or m.group("ext") is None or (e.name.ext == m.group("ext") and e.name.encrypted == bool(m.group("age"))):
            return e
    hint = f" ({catalog.s3_error})" if catalog.s3_error else ""
    raise OpsError(f"No backup of {db} in {settings.backup_dir}" + (" or S3" if settings.s3.enabled else "") + hint,
                   "nothing was changed", say("take_backup"))


def _named(settings: Settings, ref: str, db: str) -> CatalogEntry:
    catalog = list_catalog(settings, database=db)
    for e in catalog.entries:
        if ref in (e.filename, e.name.stem) or (e.s3_key or "").endswith("/" + ref):
            return e
    hint = f" ({catalog.s3_error})" if catalog.s3_error else ""
    raise OpsError(f"No backup named {ref!r} among the backups of {db}{hint}", "nothing was changed",
                   "run `opstower list` to see them; a backup of another database is named with -d that database "
                   "and --target-db")


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d_%H%M%S")


PROTECTED_DATABASES = {"template0", "template1", "postgres"}


@dataclass
class _Server:
    """What planning reads from the server (one connection, nothing changed)."""

    version: str
    tools: PgTools
    live: str
    live_exists: bool
    mode: str
    work: str
    old: str | None
    sessions: list[dict[str, Any]]
    live_size: int | None
    live_props: DbProps | None
    roles: set[str]


def plan_restore(settings: Settings, artifact: str | CatalogEntry, target_name: str | None = None,
                 options: RestoreOptions | None = None) -> RestorePlan:
    """Everything a restore will do, step by step, with the exact commands; changes nothing.

    Raises OpsError (nothing changed) when a prerequisite is missing: the server or the
    bucket unreachable, no compatible client tools, a bad option combination.
    """
    o = _checked_options(options or RestoreOptions())
    target = settings.target(target_name)  # the configured target's server, never guessed from the artifact
    if isinstance(artifact, CatalogEntry):
        entry = artifact
    else:
        entry = resolve_artifact(settings, os.fspath(artifact), target.dbname, o.from_s3)
    _check_format(o, entry)
    identities_for(settings, entry.name)  # an encrypted artifact needs the identity: say so before anything runs
    LocalStore(settings.backup_dir).ensure()
    stamp = _stamp()
    notes: list[str] = []
    entry, key = _locate(settings, entry, o)
    srv = _read_server(settings, target, o, stamp, notes)
    facts = read_facts(settings, entry, srv.tools)
    identity, source = _check_identity(entry, facts, srv.live, o)
    roles, missing, left_out = _plan_roles(settings, entry, key, srv, facts, o)
    uncompressed = (entry.meta or {}).get("uncompressed_bytes")
    jobs = _jobs(settings, o, entry.name.format, entry.size, uncompressed, notes)
    plan = RestorePlan(entry=entry, target=target, live_db=srv.live, work_db=srv.work, mode=srv.mode, steps=[],
                       sessions=srv.sessions, artifact_size=entry.size, rto_minutes=target.rto_minutes, options=o,
                       old_db=srv.old, live_exists=srv.live_exists, live_size=srv.live_size,
                       uncompressed_size=int(uncompressed) if isinstance(uncompressed, int) else None, jobs=jobs,
                       no_owner=o.no_acl, roles=roles, missing_roles=missing, download_key=key,
                       download_dest=safe_destination(settings.backup_dir, key) if key else None,
                       server_version=srv.version, tools=srv.tools, notes=notes, stamp=stamp,
                       live_props=srv.live_props, artifact_database=identity, identity_source=source,
                       left_out=left_out, statistics=facts.statistics)
    plan.verify_in_load = _verify_in_load(plan)
    notes.extend(_notes(plan))
    plan.steps = _steps(settings, plan)
    plan.forecast = _forecast(settings, plan)
    if plan.forecast is not None:
        notes.append(f"forecast: {plan.forecast.sentence()}" + (f" ({plan.forecast.reason})"
                                                                  if plan.forecast.known else ""))
    plan.physical = offer = _physical(settings, plan)
    if offer is not None and offer.offered and offer.sentence:
        notes.append(offer.sentence)
    return plan


def _physical(settings: Settings, p: RestorePlan) -> PhysicalOffer | None:
    """Recovery to latest instead, when [pitr] archives the target's server and past recoveries say it would be
    clearly faster (issue 18). Advice: never blocks, never fails a plan."""
    if (not settings.pitr.enabled or p.forecast is None or not p.forecast.known or p.options.tables
            or (p.target.host, p.target.port) != (settings.target().host, settings.target().port)):
        return None  # `pitr enable` archives the default target's server: another server has no archive here
    from opstower_core.pitr import base_backup_bytes, pitr_status  # barman/boto3 load only with [pitr]

    try:
        return physical_offer(StateStore(settings.state_dir), p.live_db, p.forecast, lambda: pitr_status(settings),
                              settings.pitr.server_name, lambda bid: base_backup_bytes(settings, bid))
    except Exception:  # noqa: BLE001 - advice only
        return None


def _forecast(settings: Settings, p: RestorePlan) -> RestoreForecast | None:
    """This plan's time from past restores (None when the state file cannot be read: never blocks a restore)."""
    try:
        store = StateStore(settings.state_dir)
        records, tests = store.runs("restore", limit=200), store.runs("verify", limit=50)
    except Exception:  # noqa: BLE001 - a forecast is advice; the restore does not depend on it
        return None
    meta = p.entry.meta or {}
    dump = p.uncompressed_size or (meta.get("uncompressed_bytes") if isinstance(meta.get("uncompressed_bytes"), int)
                                   else None)
    rate = meta.get("duration_seconds")
    per_byte = float(rate) / dump if dump and isinstance(rate, int | float) and rate > 0 else None
    return forecast_restore(records, p.live_db, dump_bytes=dump or p.live_size, artifact_bytes=p.artifact_size,
                            rto_minutes=p.rto_minutes, mode=p.mode, steps=[s.id for s in p.steps if not s.skip],
                            backup_seconds_per_byte=per_byte, tests=tests)


def _check_identity(entry: CatalogEntry, facts: ArtifactFacts, live: str, o: RestoreOptions) -> tuple[str, str]:
    """(the database the artifact is a dump of, where that was read); refuses any disagreement.

    The artifact's own bytes win; its metadata and its file name must agree with them, and a
    backup of another database is restored only when --target-db asks for it."""
    meta_db = (entry.meta or {}).get("database")
    meta_db = meta_db if isinstance(meta_db, str) and meta_db else None
    name_db = entry.name.database if entry.name.conventional and entry.name.database else None
    if facts.dbname:
        identity, source = facts.dbname, "archive header" if entry.name.format == "custom" else "dump header"
    elif meta_db:
        identity, source = meta_db, "metadata"
    else:
        identity, source = name_db or "", "file name"
    for other, where in ((meta_db, "its metadata"), (name_db, "its file name")):
        if other and identity and other != identity:
            raise OpsError(f"{entry.filename} holds a dump of database {identity} ({source}) but {where} says "
                           f"{other}", "nothing was changed",
                           f"do not restore it; {say('list_backups')} and check how this one was made")
    if identity and identity != live and not (o.target_db or o.tables):
        raise OpsError(f"{entry.filename} is a backup of database {identity}, not of {live}", "nothing was changed",
                       f"to restore it into {live} anyway, say so with --target-db {live}; to restore it as "
                       f"{identity}, use -d {identity}")
    return identity, source


def _checked_options(o: RestoreOptions) -> RestoreOptions:
    if o.tables is not None:
        o = dataclasses.replace(o, tables=[t.strip() for t in o.tables if t.strip()])
        if not o.tables:
            raise UsageError("--tables needs at least one table name", "nothing was changed", "e.g. --tables public.orders")
        if o.in_place:
            raise UsageError("--tables and --in-place cannot be combined: live tables are never overwritten",
                             "nothing was changed", "drop --in-place")
    if o.jobs is not None and o.jobs < 1:
        raise UsageError("--jobs must be at least 1", "nothing was changed", "")
    return o


def _check_format(o: RestoreOptions, entry: CatalogEntry) -> None:
    if o.tables and entry.name.format != "custom":
        raise UsageError(f"Selective restore needs a custom-format backup; {entry.filename} is plain SQL",
                         "nothing was changed", "restore the whole backup with --target-db NAME instead")


def _locate(settings: Settings, entry: CatalogEntry, o: RestoreOptions) -> tuple[CatalogEntry, str | None]:
    """Where the bytes come from: (entry, S3 key to download or None for the local file)."""
    local_ok = entry.local_path is not None and entry.local_path.exists()
    if not o.from_s3 and local_ok:
        return entry, None
    if not settings.s3.enabled:
        where = f"{entry.local_path} does not exist" if entry.local_path else f"{entry.filename} is not local"
        raise OpsError(f"{where} and S3 is not configured", "nothing was changed",
                       "give the path of a local backup or configure S3_BUCKET")
    key = entry.s3_key or entry.name.s3_key(settings.s3.prefix)
    store = store_for(settings.s3)
    store.check_reachable()
    head = store.head(key)
    if head is None:
        raise OpsError(f"Backup s3://{settings.s3.bucket}/{key} does not exist", "nothing was changed",
                       say("pick_backup"))
    size = int(head["ContentLength"])
    remote = CatalogEntry(entry.name, size, local_path=None, s3_key=key, s3_size=size, meta=None,
                          meta_problem="metadata in S3 (not fetched)")
    fetch_s3_metadata(settings, remote)
    return remote, key


def _read_server(settings: Settings, target: Target, o: RestoreOptions, stamp: str, notes: list[str]) -> _Server:
    """The server's side of the plan: the mode, free names, sessions and properties of the live database."""
    live = o.target_db or target.dbname
    if live in PROTECTED_DATABASES:
        raise UsageError(f"Refusing to restore into {live}: it is a PostgreSQL system database "
                         "(every CREATE DATABASE copies template1; postgres is the maintenance database)",
                         "nothing was changed", say("other_target_db"))
    with admin(target, live) as conn:
        info = server_info(conn)
        tools = select_tools(settings, info.major)
        live_exists = db_exists(conn, live)
        mode = "tables" if o.tables else ("in_place" if o.in_place else "swap") if live_exists else "new_db"
        if o.tables:
            if o.target_db and live_exists:
                raise UsageError(f"Database {live} exists; a selective restore only creates a new database",
                                 "nothing was changed", "choose a new --target-db name or leave it out")
            work = o.target_db or free_name(conn, derived_name(live, f"_tables_{stamp}"))
            live_exists = False
        else:
            if mode == "new_db" and o.in_place:
                raise UsageError(f"--in-place replaces an existing database, and {live} does not exist on "
                                 f"{target.display_host}:{target.display_port}", "nothing was changed",
                                 "check -d / --target-db, or leave --in-place out to create it")
            work = free_name(conn, derived_name(live, f"_restore_{stamp}"))
        old = free_name(conn, derived_name(live, f"_pre_restore_{stamp}")) if mode == "swap" else None
        prepared = prepared_transactions(conn, live) if live_exists else []
        srv = _Server(info.version, tools, live, live_exists, mode, work, old,
                      sessions(conn, live) if live_exists else [], database_size(conn, live) if live_exists else None,
                      read_props(conn, live) if live_exists else None, existing_roles(conn))
    if prepared and mode in ("swap", "in_place"):
        raise OpsError(f"Database {live} has prepared transactions ({', '.join(prepared)}): it cannot be renamed or "
                       "dropped", "nothing was changed", "COMMIT PREPARED or ROLLBACK PREPARED them, then retry")
    return srv


def _plan_roles(settings: Settings, entry: CatalogEntry, key: str | None, srv: _Server, facts: ArtifactFacts,
                o: RestoreOptions) -> tuple[dict[str, list[str]], list[str], str | None]:
    """(role definitions from the globals file, roles the artifact needs that the server lacks, what
    --no-acl leaves out). Missing roles without a choice of --create-roles / --no-acl are refused."""
    roles = _globals_roles(settings, entry, key)
    missing = sorted(facts.roles - srv.roles)
    left_out = None
    if o.no_acl:
        if entry.name.format != "custom":
            raise UsageError(f"--no-acl needs a custom-format backup; {entry.filename} is plain SQL, restored "
                             "statement for statement", "nothing was changed", say("create_roles"))
        left_out = (f"ownership and grants were not restored ({facts.owner_statements} OWNER TO, "
                    f"{facts.grant_statements} GRANT/REVOKE statements left out"
                    + (f"; roles missing on the server: {', '.join(missing)}" if missing else "") + ")")
        return roles, missing, left_out
    if not missing:
        return roles, missing, None
    if not o.create_roles:
        raise MissingRoles(missing, f"The backup needs roles this server lacks: {', '.join(missing)}", "nothing was changed",
                       "add --create-roles to create them from the backup's globals file (passwords are not carried; "
                       "existing roles are never altered), or --no-acl to restore without ownership and grants")
    undefined = [r for r in missing if r not in roles]
    if undefined:
        raise OpsError(f"Roles {', '.join(undefined)} are needed but not in the backup's globals file",
                       "nothing was changed", f"create them by hand first, or {say('no_acl')}")
    return roles, missing, None


def _globals_roles(settings: Settings, entry: CatalogEntry, key: str | None) -> dict[str, list[str]]:
    """Role definitions from the globals file beside the artifact (read from S3 when not local)."""
    meta = entry.meta or {}
    gfile = meta.get("globals_file") if meta.get("globals_dumped") else None
    if not gfile:
        return {}
    gpath = (entry.local_path.parent if entry.local_path else settings.backup_dir) / str(gfile)
    if gpath.is_file():
        return parse_roles(gpath.read_text(encoding="utf-8", errors="replace"))
    if key:
        try:
            data = store_for(settings.s3).get_bytes(key.rsplit("/", 1)[0] + "/" + str(gfile))
        except Exception:  # noqa: BLE001 - a missing globals file only means no roles to create
            return {}
        return parse_roles(data.decode("utf-8", "replace"))
    return {}


def _notes(plan: RestorePlan) -> list[str]:
    live, notes = plan.live_db, []
    if plan.artifact_database and plan.artifact_database != live and plan.mode != "tables":
        notes.append(f"the backup is of database {plan.artifact_database}; it will become {live} (--target-db)")
    if plan.missing_roles and plan.options.create_roles and not plan.options.no_acl:
        notes.append(f"roles missing on this server are created from the globals file: "
                     f"{', '.join(plan.missing_roles)} (without passwords: set them afterwards)")
    if plan.left_out:
        notes.append(f"{say('no_acl_aside')}: {plan.left_out}")
    if plan.mode == "swap":
        notes.append(f"{live} stays in service during the restore; writes made to it meanwhile stay in "
                     f"{plan.old_db} after the switch")
    if plan.mode == "swap" and plan.live_size:
        notes.append(f"the server needs room for a second copy of {live} "
                     f"(~{humanize.naturalsize(plan.live_size, binary=True)}) until the old one is discarded; "
                     f"{say('in_place')} when it has not")
    if plan.sessions:
        notes.append(f"{len(plan.sessions)} session(s) connected to {live} will be terminated at the switch")
    return notes


def _jobs(settings: Settings, o: RestoreOptions, fmt: str, size: int, uncompressed: Any, notes: list[str]) -> int:
    if fmt != "custom" or o.tables:
        if o.jobs and o.jobs > 1:
            notes.append("--jobs applies to whole custom-format restores only; this one runs as one stream")
        return 1
    cores = os.cpu_count() or 1
    jobs = o.jobs or (min(4, cores) if size >= PARALLEL_THRESHOLD and cores >= PARALLEL_MIN_CORES else 1)
    if jobs > 1:
        need = int(uncompressed) if isinstance(uncompressed, int) else size * 4
        free = LocalStore(settings.backup_dir).free_bytes()
        if free < need * 1.1:
            notes.append(f"not enough room in {settings.backup_dir} for the {humanize.naturalsize(need, binary=True)} "
                         "seekable copy parallel pg_restore needs: restoring with one streamed job")
            return 1
    return jobs


def _verify_in_load(p: RestorePlan) -> bool:
    """Whether the artifact is verified in the same read as the load instead of a read of its own first.

    Only where the load goes into a database this run creates and nothing else changes before
    it: a new database, or the staging copy of a swap (the live database is touched only after
    the verification passed, the load and the proof). Not in place (the live database is dropped
    before the load), not for a selective restore, not when roles are created first, not when
    the artifact comes from S3 (the download and the replica fallback verify first), and not
    when pg_restore reads an uncompressed file itself (there is no read of ours to share)."""
    if p.mode not in ("new_db", "swap") or p.download_key:
        return False
    if p.options.create_roles and p.missing_roles and not p.options.no_acl:
        return False
    spec = p.load_spec
    return not (spec.via_file and p.entry.name.compression == "none" and not p.entry.name.encrypted)


def _verify_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    e = p.entry
    where = f"s3://{settings.s3.bucket}/{p.download_key}" if p.download_key else str(e.local_path)
    checks = (f"exists, readable, not empty, {e.name.compression} integrity, dump content, metadata, S3 copy; "
              f"{_size(p.artifact_size)}")
    if p.verify_in_load:
        into = "the new database" if p.mode == "new_db" else f"the staging database {p.work_db}"
        step = _step("verify", [f"opstower verify {where} (checks 1-7), in the same read as the load"],
                     f"{checks}; runs in parallel with the restore step: the artifact is read once, verified "
                     f"while it streams into {into}; a failed check stops the load and drops {p.work_db}"
                     + (f", and {p.live_db} is never touched" if p.mode == "swap" else ""))
        step.parallel_with = ["restore"]
        return step
    return _step("verify", [f"opstower verify {where} (checks 1-7)"],
                 f"{checks}; a failed check stops here, before anything is touched")


def _download_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    if not p.download_key:
        return _step("download", [], "", skip=f"not needed: the backup is local ({p.entry.local_path})")
    return _step("download", [f"GET s3://{settings.s3.bucket}/{p.download_key} -> {p.download_dest}"],
                 f"{_size(p.artifact_size)} with sha256 check, written under a temporary name then renamed; "
                 "metadata and globals beside it")


def _confirm_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    if _replaces(p) and not p.options.force:
        return _step("confirm", [f"type the database name: {p.live_db}"],
                     f"WARNING: database {p.live_db} on {p.target.display_host} will be replaced by {p.entry.filename}")
    return _step("confirm", [], "", skip=say("force_given") if _replaces(p) else f"nothing existing is replaced ({p.mode})")


def _roles_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    if p.options.create_roles and p.missing_roles and not p.options.no_acl:
        cmds = [s for r in p.missing_roles for s in p.roles.get(r, [])]
        return _step("roles", cmds, f"create missing roles {', '.join(p.missing_roles)} from the globals file; "
                     "passwords are not carried (set them afterwards); existing roles are never altered")
    if p.options.no_acl:
        return _step("roles", [], "", skip=f"{say('no_acl_aside')}: ownership and grants are not restored")
    return _step("roles", [], "", skip="every role the backup needs exists on this server")


def _pre_backup_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    live = p.live_db
    if not _replaces(p):
        return _step("pre_backup", [], "", skip=f"{live} does not exist: nothing to back up" if p.mode == "new_db"
                     else "the live database is not touched")
    dump = p.tools.pg_dump if p.tools else "pg_dump"
    if p.mode == "swap":
        # The live database is renamed and kept, untouched: it is the way back, and this copy of it a
        # second one. So the RTO clock does not wait for it: taken after the switch, from the kept database.
        old = p.old_db or f"{live}_pre_restore_<stamp>"
        step = _step("pre_backup", [f"{dump} --format=custom --snapshot=<exported> --verbose --dbname={old} "
                                    f"--compress=0 | zstd > {settings.backup_dir}/pre_restore_{old}_"
                                    "<YYYYMMDD_HHMMSS>.dump.zst"],
                     f"safety copy of {live} ({_size(p.live_size or 0)}) through the backup engine, taken after the "
                     f"switch from {old} ({live} as it was, kept): a second way back, off the RTO clock; a failure "
                     "or cancel here leaves the restore done and the old database kept")
        step.after_service = True
        return step
    return _step("pre_backup", [f"{dump} --format=custom --snapshot=<exported> --verbose --dbname={live} "
                                f"--compress=0 | zstd > {settings.backup_dir}/pre_restore_{live}_<YYYYMMDD_HHMMSS>"
                                ".dump.zst"],
                 f"safety copy of {live} ({_size(p.live_size or 0)}) through the backup engine")


def _terminate_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    if not _replaces(p):
        return _step("terminate", [], "", skip="no existing database is replaced")
    sess = [f"pid {s['pid']} {s['user']} {s['application'] or '-'} {s['client'] or '-'} {s['state']}"
            for s in p.sessions]
    return _step("terminate", block_sql(p.live_db) + [terminate_sql(p.live_db)],
                 f"{len(p.sessions)} session(s) now: " + ("; ".join(sess) if sess else "none")
                 + "; connection settings are put back afterwards")


def _drop_create_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    live, work = p.live_db, p.work_db
    create = [create_sql(work, p.live_props)] + (apply_props_sql(work, p.live_props) if p.live_props else [])
    if p.mode == "in_place":
        return _step("drop_create", [drop_sql(live), *create],
                     f"{live} is dropped (the pre-restore backup is the way back), then the restore goes into {work}")
    return _step("drop_create", create, f"staging database {work}; {live} is not touched")


def _restore_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    source = str(p.download_dest or p.entry.local_path)
    detail = (f"{p.entry.name.format} format, {p.jobs} job(s); decompression runs in-process (as zstd/gzip -dc would)"
              + (f", tables {', '.join(p.options.tables)}" if p.options.tables else "")
              + ("; owners/ACLs skipped" if p.no_owner else ""))
    return _step("restore", p.load_spec.commands(p.tools, source) if p.tools else [], detail)


def _verify_restored_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    return _step("verify_restored", [
        "COPY <each table> TO STDOUT  -- digests vs the artifact's; a big table in row ranges, one per core",
        "SELECT indexrelid FROM pg_index WHERE NOT indisvalid",
        "CREATE EXTENSION amcheck; SELECT bt_index_check(<each btree index>)  -- when available",
        "SELECT count(*) FROM ONLY <each table the digests did not read>  -- row counts vs the metadata's",
        f"SELECT pg_database_size({p.work_db!r})"], "the restore proof (table digests and object inventory "
        "against the artifact's), index integrity, row counts against the metadata, database size")


def _maintenance_step(kind: str) -> Callable[[Settings, RestorePlan], PlannedStep]:
    def build(settings: Settings, p: RestorePlan) -> PlannedStep:
        if kind == "reindex" and not p.options.reindex:
            # Every mode loads into a database this run creates: pg_restore / psql has just built each index.
            return _step(kind, [], "", skip=f"pg_restore built every index of {p.work_db} just now, in a database "
                         "this run created")
        if kind == "analyze":
            return _step(kind, [f"ANALYZE <each table without statistics>  -- in {p.work_db}"], _analyze_detail(p))
        if kind == "vacuum" and p.mode != "tables":
            # Visibility map and hint bits, not the data: nothing the RTO clock needs to wait for.
            step = _step(kind, [f"{maintenance_sql(kind, p.live_db)}  -- in {p.live_db}, after the switch"],
                         "post-restore optimization; runs once the restored database is in service (off the RTO "
                         "clock): a failure or cancel here leaves the restore done")
            step.after_service = True
            return step
        return _step(kind, [f"{maintenance_sql(kind, p.work_db)}  -- in {p.work_db}"], "post-restore optimization")

    return build


def _analyze_detail(p: RestorePlan) -> str:
    if p.statistics:
        return (f"the backup carries optimizer statistics ({p.statistics} entries, restored by pg_restore): only the "
                "tables it has none for are analyzed")
    return "the backup carries no optimizer statistics: every table is analyzed"


def _swap_step(settings: Settings, p: RestorePlan) -> PlannedStep:
    live, work, old = p.live_db, p.work_db, p.old_db
    before = p.live_props.conn if p.live_props else None
    if p.mode == "swap":
        return _step("swap", ["BEGIN", *swap_statements(live, work, old or "", before or ConnState(True, -1)), "COMMIT"],
                     f"one transaction (connection settings as {live} had them before the switch); {live} becomes "
                     f"{old} ({say('keep_old', db=old)}); {work} becomes {live}")
    if p.mode in ("in_place", "new_db"):
        return _step("swap", ["BEGIN", *in_place_statements(work, live, before), "COMMIT"], f"{work} becomes {live}")
    return _step("swap", [], "", skip=f"the tables stay in {work} for you to merge back")


# Each step's plan, by id; the order of a run comes from _order().
_BUILDERS: dict[str, Callable[[Settings, RestorePlan], PlannedStep]] = {
    "verify": _verify_step, "download": _download_step, "confirm": _confirm_step, "roles": _roles_step,
    "pre_backup": _pre_backup_step, "terminate": _terminate_step, "drop_create": _drop_create_step,
    "restore": _restore_step, "verify_restored": _verify_restored_step, "analyze": _maintenance_step("analyze"),
    "vacuum": _maintenance_step("vacuum"), "reindex": _maintenance_step("reindex"), "swap": _swap_step,
}


def _order(mode: str) -> list[str]:
    """A swap keeps the live database in service until the switch: its sessions are cut off last."""
    # ANALYZE (usually nothing left to do: the statistics came with the dump) before the switch: the
    # planner needs statistics from the first query. VACUUM (hint bits, visibility map) after it.
    if mode == "swap":
        return ["verify", "download", "confirm", "roles", "drop_create", "restore", "analyze",
                "verify_restored", "reindex", "terminate", "swap", "pre_backup", "vacuum"]
    if mode == "tables":
        return ["verify", "download", "confirm", "roles", "pre_backup", "terminate", "drop_create", "restore",
                "analyze", "vacuum", "verify_restored", "reindex", "swap"]
    return ["verify", "download", "confirm", "roles", "pre_backup", "terminate", "drop_create", "restore",
            "analyze", "verify_restored", "reindex", "swap", "vacuum"]


def _steps(settings: Settings, p: RestorePlan) -> list[PlannedStep]:
    return [_BUILDERS[step_id](settings, p) for step_id in _order(p.mode)]


def _step(step_id: str, commands: list[str], detail: str, skip: str | None = None) -> PlannedStep:
    return PlannedStep(step_id, STEP_TITLES[step_id], commands, detail, skip)


def _replaces(p: RestorePlan) -> bool:
    return p.mode in ("swap", "in_place")


def _size(n: int) -> str:
    return humanize.naturalsize(n, binary=True)
