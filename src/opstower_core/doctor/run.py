"""`opstower doctor`: the pre-flight an on-call engineer runs first.

Every check is one step (PASS / WARN / FAIL, SKIP when it depends on a failed one) whose
detail says what was found and, unless it passed, the fix. Nothing is changed: the only
writes are a scratch file in the backup directory and scratch objects under the S3 prefix,
both removed again. A FAIL means a backup or a restore would fail; a WARN means something
works less well or less safely than it should (a missing privilege disables a feature, a
secret is readable by others, a restore would wait for an archive retrieval). The S3 checks
are in `doctor_s3`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opstower_core import fmt
from opstower_core.advice import say
from opstower_core.config import SECRET_KEY, Settings, Target, secret_keys
from opstower_core.doctor.finding import Finding
from opstower_core.doctor.s3 import S3Checks
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status, StepResult
from opstower_core.pg.tools import available_tools, connect, server_info
from opstower_core.storage.local import LocalStore
from opstower_core.storage.replica import doctor_replica

CLOCK_SKEW_WARN = 5.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def secret_files(raw: dict[str, Any], prefix: str = "") -> dict[str, Path]:
    """Dotted key -> path of the files the TOML names as holding a secret (password_file, identity_file…)."""
    found: dict[str, Path] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            found.update(secret_files(value, f"{prefix}{key}."))
        elif isinstance(value, str) and value.strip() and key.endswith("_file") and SECRET_KEY.search(key[:-5]):
            found[f"{prefix}{key}"] = Path(value).expanduser()
    return found


class _Doctor:
    def __init__(self, settings: Settings, target: Target) -> None:
        self.settings = settings
        self.target = target
        self.conn: Any = None
        self.server: Any = None
        self.role: dict[str, Any] = {}
        self.db_size: int | None = None
        self.s3 = S3Checks(settings.s3)

    # --- files and credentials ----------------------------------------------------------------
    def config(self) -> Finding:
        path = self.settings.config_path
        if path is None:
            return Finding(Status.PASS, "no config file; settings come from the environment")
        mode = _mode(path)
        secrets = secret_keys(self.settings.raw)
        if mode & 0o002:
            return Finding(Status.WARN, f"{path} (mode {mode:04o}) is writable by everyone: anyone can redirect "
                           "backups or restores", f"chmod 600 {path}")
        if mode & 0o044 and secrets:
            who = "others" if mode & 0o004 else "its group"
            return Finding(Status.WARN, f"{path} (mode {mode:04o}) is readable by {who} and holds secrets "
                           f"({', '.join(secrets)})",
                           f"chmod 600 {path}, or move the secrets to *_env / *_file keys",
                           {"secret_keys": secrets, "mode": f"{mode:04o}"})
        note = f"holds secrets ({', '.join(secrets)}) readable by the owner only" if secrets else "holds no secret"
        return Finding(Status.PASS, f"{path} (mode {mode:04o}) {note}", data={"mode": f"{mode:04o}"})

    def credentials(self) -> Finding:
        problems, notes, fixes = [], [], []
        if os.environ.get("PGPASSWORD"):
            problems.append("PGPASSWORD is set: every child process inherits it and it shows in "
                            "/proc/<pid>/environ (report issue 2)")
            fixes.append("put the password in a .pgpass file (chmod 600) and unset PGPASSWORD")
        explicit = self.target.passfile or os.environ.get("PGPASSFILE")
        passfile = Path(explicit or "~/.pgpass").expanduser()
        if passfile.exists():
            mode = _mode(passfile)
            if mode & 0o077:
                problems.append(f"password file {passfile} has mode {mode:04o}: libpq ignores it")
                fixes.append(f"chmod 600 {passfile}")
            else:
                notes.append(f"password file {passfile} (mode {mode:04o})")
        elif explicit:
            problems.append(f"password file {passfile} (passfile / PGPASSFILE) does not exist")
            fixes.append(f"create {passfile} with lines host:port:database:user:password and chmod 600")
        elif not os.environ.get("PGPASSWORD"):
            notes.append("no password file and no PGPASSWORD (fine for peer, trust or certificate authentication)")
        else:
            notes.append("no password file")
        if problems:
            return Finding(Status.WARN, "; ".join(problems + notes), "; ".join(fixes))
        return Finding(Status.PASS, "; ".join(notes))

    def secret_files(self) -> Finding:
        files = secret_files(self.settings.raw)
        if os.environ.get("OPSTOWER_AGE_IDENTITY"):
            files["OPSTOWER_AGE_IDENTITY"] = Path(os.environ["OPSTOWER_AGE_IDENTITY"]).expanduser()
        if not files:
            return Finding(Status.PASS, "no secret file configured (identity, passphrase or password files)")
        problems, fixes, good = [], [], []
        for key, path in files.items():
            if not path.exists():
                problems.append(f"{path} ({key}) does not exist")
                fixes.append(f"create {path} or fix {key}")
            elif (mode := _mode(path)) & 0o077:
                problems.append(f"{path} ({key}) has mode {mode:04o}: readable beyond its owner")
                fixes.append(f"chmod 600 {path}")
            else:
                good.append(f"{path} ({key}, {mode:04o})")
        if problems:
            return Finding(Status.WARN, "; ".join(problems), "; ".join(fixes))
        return Finding(Status.PASS, "private: " + ", ".join(good))

    # --- database -----------------------------------------------------------------------------
    def connection(self) -> Finding:
        try:
            self.conn = connect(self.target)
        except OpsError as exc:
            return Finding(Status.FAIL, re.sub(r"\(\s+", "(", " ".join(exc.what.split())), "check that the server is up, PGHOST/PGPORT/PGUSER (or the "
                           "target's host/port/user) and the password in .pgpass; backups and restores cannot run")
        self.server = server_info(self.conn)
        row = self.conn.execute(
            "SELECT current_user, r.rolsuper, r.rolcreatedb, has_database_privilege(current_database(), 'CONNECT'),"
            " pg_has_role(d.datdba, 'MEMBER'), pg_get_userbyid(d.datdba),"
            " COALESCE((SELECT pg_has_role(oid, 'MEMBER') FROM pg_roles WHERE rolname = 'pg_read_all_data'), false),"
            " COALESCE((SELECT pg_has_role(oid, 'MEMBER') FROM pg_roles WHERE rolname = 'pg_signal_backend'), false),"
            " pg_database_size(current_database())"
            " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"
        ).fetchone()
        keys = ("user", "superuser", "createdb", "connect", "owner", "db_owner", "read_all", "signal")
        self.role = dict(zip(keys, row[:8], strict=True))
        self.db_size = int(row[8])
        return Finding(Status.PASS, f"connected to {self.target.dbname!r} on {self.target.display_host}:"
                       f"{self.target.display_port} as {self.role['user']} ({self.server.version}, "
                       f"{fmt.size(self.db_size)})", data={"server_version": self.server.version, "user": self.role["user"]})

    def client_tools(self) -> Finding:
        tools = available_tools(self.settings)
        by_version: dict[str, list[str]] = {}
        for t in tools:
            by_version.setdefault(t.version, []).append(str(t.bin_dir))
        listed = "; ".join(f"{v} in {', '.join(dirs)}" for v, dirs in by_version.items()) or "none"
        if not tools:
            return Finding(Status.FAIL, "no pg_dump / pg_restore / psql / pg_dumpall set found",
                           "install the PostgreSQL client tools or set OPSTOWER_PG_BIN to their bin directory")
        if self.server is None:
            return Finding(Status.WARN, f"client tools found: {listed}; not compared with the server (no connection)",
                           "fix the connection first")
        good = [t for t in tools if t.major >= self.server.major]
        if not good:
            return Finding(Status.FAIL, f"no pg_dump of major ≥ {self.server.major} for the {self.server.version} server "
                           f"(found: {listed}): pg_dump refuses a newer server",
                           f"install PostgreSQL {self.server.major} client tools or set OPSTOWER_PG_BIN")
        best = max(good, key=lambda t: t.major)
        others = sorted({t.version for t in tools if t.major < self.server.major})
        too_old = f" (ignored as too old: {', '.join(others)})" if others else ""
        return Finding(Status.PASS, f"pg_dump {best.version} from {best.bin_dir} for the {self.server.version} server"
                       f"{too_old}", data={"pg_dump": best.version, "bin_dir": str(best.bin_dir), "found": listed})

    def _need_conn(self) -> Finding | None:
        return None if self.conn is not None else Finding(Status.SKIP, "no database connection (see Database connection)")

    def privilege_read(self) -> Finding:
        if (skip := self._need_conn()) is not None:
            return skip
        user = self.role["user"]
        if self.role["superuser"] or self.role["read_all"]:
            how = "superuser" if self.role["superuser"] else "member of pg_read_all_data"
            return Finding(Status.PASS, f"{user} is {how}: CONNECT and SELECT on every table")
        base = ("FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','S')"
                " AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
                " AND n.nspname NOT LIKE 'pg_temp%' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE"
                " d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')")
        total = self.conn.execute(f"SELECT count(*) {base}").fetchone()[0]
        denied = [r[0] for r in self.conn.execute(
            f"SELECT n.nspname || '.' || c.relname {base} AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1")]
        schemas = [r[0] for r in self.conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog','information_schema')"
            " AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%' AND NOT has_schema_privilege(oid, 'USAGE')"
            " ORDER BY 1")]
        if not denied and not schemas:
            return Finding(Status.PASS, f"{user} has CONNECT and SELECT on all {total} tables and sequences")
        missing = []
        if denied:
            shown = ", ".join(denied[:4]) + (f" (+{len(denied) - 4} more)" if len(denied) > 4 else "")
            missing.append(f"SELECT on {len(denied)} of {total} tables/sequences ({shown})")
        if schemas:
            missing.append(f"USAGE on schema {', '.join(schemas)}")
        return Finding(Status.FAIL, f"{user} lacks {' and '.join(missing)} and is not in pg_read_all_data: "
                       f"backups of {self.target.dbname} fail (pg_dump: permission denied)",
                       f"GRANT pg_read_all_data TO {user}; (PostgreSQL 14+) or GRANT USAGE ON SCHEMA … / "
                       f"GRANT SELECT ON ALL TABLES IN SCHEMA … TO {user}", {"denied": denied, "schemas": schemas})

    def privilege_createdb(self) -> Finding:
        if (skip := self._need_conn()) is not None:
            return skip
        user = self.role["user"]
        if self.role["superuser"] or self.role["createdb"]:
            return Finding(Status.PASS, f"{user} can create the scratch and staging databases")
        return Finding(Status.WARN, f"{user} lacks CREATEDB: disables {say('full_test_name')}, drills and every "
                       f"restore that creates a database (staging swap, in place, {say('target_db_name')}); backups "
                       "still work",
                       f"ALTER ROLE {user} CREATEDB;")

    def privilege_owner(self) -> Finding:
        if (skip := self._need_conn()) is not None:
            return skip
        user, db = self.role["user"], self.target.dbname
        if self.role["superuser"] or self.role["owner"]:
            return Finding(Status.PASS, f"{user} {'is superuser' if self.role['superuser'] else 'owns ' + repr(db)}: "
                           "DROP DATABASE and ALTER DATABASE … RENAME allowed")
        return Finding(Status.WARN, f"{user} neither owns {db!r} (owner: {self.role['db_owner']}) nor is superuser: "
                       "disables restore in place and the staging swap (DROP / RENAME of the live database); "
                       "restoring into a new database still works",
                       f"ALTER DATABASE {db} OWNER TO {user}; or run restores as {self.role['db_owner']}")

    def privilege_terminate(self) -> Finding:
        if (skip := self._need_conn()) is not None:
            return skip
        user = self.role["user"]
        if self.role["superuser"] or self.role["signal"]:
            how = "superuser" if self.role["superuser"] else "member of pg_signal_backend (not superuser sessions)"
            return Finding(Status.PASS, f"{user} can terminate other sessions before a restore ({how})")
        return Finding(Status.WARN, f"{user} is neither superuser nor in pg_signal_backend: it can end only its own "
                       "sessions, so a restore stops while other clients are connected",
                       f"GRANT pg_signal_backend TO {user};")

    def clock_skew(self) -> Finding:
        if (skip := self._need_conn()) is not None:
            return skip
        t0 = time.time()
        server = float(self.conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
        t1 = time.time()
        skew = server - (t0 + t1) / 2
        text = f"database clock is {abs(skew):.2f} s {'ahead of' if skew > 0 else 'behind'} this host"
        if abs(skew) > CLOCK_SKEW_WARN:
            return Finding(Status.WARN, f"{text} (warning > {CLOCK_SKEW_WARN:g} s): backup names, ages and the "
                           "database's own timestamps disagree", "synchronise both clocks with NTP "
                           "(timedatectl status / chronyc tracking)", {"skew_seconds": round(skew, 3)})
        return Finding(Status.PASS, text, data={"skew_seconds": round(skew, 3)})

    # --- local storage ------------------------------------------------------------------------
    def backup_dir(self) -> Finding:
        d = self.settings.backup_dir
        if not d.exists():
            parent = next((p for p in d.parents if p.exists()), Path("/"))
            if os.access(parent, os.W_OK | os.X_OK):
                return Finding(Status.WARN, f"{d} does not exist yet; the first backup creates it (0750)",
                               f"mkdir -m 750 -p {d}")
            return Finding(Status.FAIL, f"{d} does not exist and {parent} is not writable: backups cannot run",
                           f"sudo install -d -m 750 -o $(id -un) {d}, or set BACKUP_DIR")
        mode = _mode(d)
        probe = d / f".opstower-doctor-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            return Finding(Status.FAIL, f"{d} is not writable ({exc.strerror}): backups cannot run",
                           f"fix the owner/permissions of {d} (chown $(id -un) {d}; chmod 750 {d}) or set BACKUP_DIR")
        problems, fixes = [], []
        if mode & 0o027:
            problems.append(f"{d} has mode {mode:04o} (0750 expected: no group write, nothing for others)")
            fixes.append(f"chmod 750 {d}")
        loose = sorted(p.name for p in d.iterdir()
                       if p.is_file() and not p.is_symlink() and p.name != ".gitkeep" and _mode(p) & 0o077)
        if loose:
            problems.append(f"{len(loose)} files readable beyond the owner ({', '.join(loose[:3])}"
                            f"{', …' if len(loose) > 3 else ''}): backups hold the whole database")
            fixes.append(f"chmod 600 {d}/*")
        if problems:
            return Finding(Status.WARN, "; ".join(problems), "; ".join(fixes), {"mode": f"{mode:04o}", "loose": loose})
        return Finding(Status.PASS, f"{d} (mode {mode:04o}) is writable, backup files are private",
                       data={"mode": f"{mode:04o}"})

    def free_space(self) -> Finding:
        from opstower_core.backup import required_free_bytes

        d = self.settings.backup_dir
        where = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
        usage = shutil.disk_usage(where)
        latest = next(iter(LocalStore(d).artifacts(self.target.dbname)), None) if d.exists() else None
        latest_size = latest.size if latest else 0
        need = required_free_bytes(self.settings, self.db_size) if self.db_size is not None else 0
        text = f"{fmt.size(usage.free)} free of {fmt.size(usage.total)} in {where}"
        extra = [f"latest backup {fmt.size(latest_size)}"] if latest_size else []
        if need:
            extra.append(f"a backup of {fmt.size(self.db_size or 0)} needs {fmt.size(need)}")
        text += f" ({'; '.join(extra)})" if extra else ""
        data = {"free_bytes": usage.free, "latest_bytes": latest_size, "required_bytes": need}
        if need and usage.free < need:
            return Finding(Status.FAIL, f"{text}: the next backup refuses to start", "free space or point BACKUP_DIR "
                           "at a larger disk", data)
        if latest_size and usage.free < 2 * latest_size or usage.free < 0.10 * usage.total:
            return Finding(Status.WARN, f"{text}: less than two backups of room or under 10% free",
                           "free space, lower retention_days, or move BACKUP_DIR", data)
        return Finding(Status.PASS, text, data=data)

    def state_dir(self) -> Finding:
        from opstower_core.runs.history import StateStore

        try:
            store = StateStore(self.settings.state_dir)
        except Exception as exc:  # noqa: BLE001 - any failure means no run history
            return Finding(Status.FAIL, f"state file in {self.settings.state_dir} unusable "
                           f"({getattr(exc, 'strerror', None) or exc}): run history and health cannot be recorded",
                           f"make {self.settings.state_dir} writable or set OPSTOWER_STATE_DIR")
        mode = _mode(store.path)
        if mode & 0o077:
            return Finding(Status.WARN, f"{store.path} has mode {mode:04o}", f"chmod 600 {store.path}")
        return Finding(Status.PASS, f"{store.path} (mode {mode:04o}) is writable")

    def notify(self) -> Finding:
        from opstower_core.alerts import Notifier

        try:
            notifier = Notifier.from_settings(self.settings)
        except OpsError as exc:
            return Finding(Status.FAIL, exc.what, exc.next_step or "fix the [notify] table")
        if not notifier.channels:
            return Finding(Status.WARN, "no alert channel configured: a failed backup or a stale one alerts nobody",
                           "export SLACK_WEBHOOK_URL or ALERT_EMAIL, or add a [notify] table to the config file")
        where = ", ".join(f"{ch.name} {ch.destination}" for ch in notifier.channels)
        if problems := notifier.problems():
            return Finding(Status.WARN, f"alerts to {where}; {'; '.join(problems)}",
                           "set the missing variable in the environment of cron / systemd too")
        return Finding(Status.PASS, f"alerts go to {where}")


    def pitr_launcher(self) -> Finding:
        """The archive command's launcher, run as the server's OS user: starts, reads the config, reaches S3."""
        if not self.settings.pitr.enabled:
            return Finding(Status.SKIP, "no [pitr] table: WAL archiving is not configured")
        from opstower_core.pitr import check_launcher, server_os_user

        datadir = None
        if self.conn is not None:
            try:
                datadir = self.conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
            except Exception:  # noqa: BLE001 - needs superuser or pg_read_all_settings; fall back to [pitr] os_user
                datadir = None
        user = server_os_user(self.settings, datadir)
        ok, detail = check_launcher(self.settings, user)
        if ok:
            return Finding(Status.PASS, f"archive/restore launcher runs {detail}", data={"os_user": user.name})
        return Finding(Status.FAIL, f"the archive command cannot work {detail}: WAL is not archived",
                       f"make the config file and [pitr] credentials_file readable by {user.name} "
                       f"(the config holds no secret; credentials 0600 owned by it), then {say('pitr_enable')}",
                       {"os_user": user.name})


CHECKS: list[tuple[str, str, Callable[[_Doctor], Finding]]] = [
    ("config", "Config file permissions", _Doctor.config),
    ("credentials", "Database credentials (.pgpass, PGPASSWORD)", _Doctor.credentials),
    ("secret_files", "Files holding secrets", _Doctor.secret_files),
    ("connection", "Database connection", _Doctor.connection),
    ("client_tools", "Client tools against the server version", _Doctor.client_tools),
    ("privilege_read", "Privileges to back up (CONNECT, SELECT)", _Doctor.privilege_read),
    ("privilege_createdb", "CREATEDB for scratch and staging databases", _Doctor.privilege_createdb),
    ("privilege_owner", "Owner or superuser for DROP / RENAME", _Doctor.privilege_owner),
    ("privilege_terminate", "Terminating other sessions", _Doctor.privilege_terminate),
    ("clock_skew", "Clock skew against the database server", _Doctor.clock_skew),
    ("backup_dir", "Backup directory permissions", _Doctor.backup_dir),
    ("free_space", "Free space in the backup directory", _Doctor.free_space),
    ("state_dir", "State file", _Doctor.state_dir),
    ("s3_roundtrip", "S3 put, multipart, get, list and delete", lambda d: d.s3.roundtrip()),
    ("s3_storage_class", "S3 storage class", lambda d: d.s3.storage_class()),
    ("s3_encryption", "S3 server-side encryption", lambda d: d.s3.encryption()),
    ("replica", "Replica copy ([s3.replica]), Object Lock", lambda d: Finding(*doctor_replica(d.settings))),
    ("notify", "Alert channels", _Doctor.notify),
    ("pitr_launcher", "WAL archive command as the server's OS user", _Doctor.pitr_launcher),
]


def run_doctor(settings: Settings, target_name: str | None = None, on_event: EventSink | None = None,
               cancel: CancelToken | None = None) -> list[StepResult]:
    """Run every pre-flight check on one target; one StepResult each (detail carries the fix)."""
    doctor = _Doctor(settings, settings.target(target_name))
    reporter = Reporter(on_event, cancel)
    try:
        for index, (step, title, check) in enumerate(CHECKS, 1):
            reporter.cancel.check("nothing was changed")
            reporter.started(step, title, index, len(CHECKS))
            t0 = time.monotonic()
            try:
                f = check(doctor)
            except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
                reason = getattr(exc, "sentence", None) or f"{type(exc).__name__}: {str(exc).strip()}"
                f = Finding(Status.FAIL, f"the check itself failed ({reason})", "rerun with the same settings; "
                            "if it persists, report it with this line")
            detail = f.detail + (f" — fix: {f.fix}" if f.fix and f.status in (Status.WARN, Status.FAIL) else "")
            reporter.finished(step, f.status, detail, time.monotonic() - t0,
                              {**f.data, "finding": f.detail, "fix": f.fix})
    finally:
        if doctor.conn is not None:
            doctor.conn.close()
    return reporter.results
