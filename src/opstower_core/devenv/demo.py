"""The demo environment: embedded PostgreSQL and S3, the sample database, a few backups.

Everything lives in one directory (default `~/.cache/opstower-demo`, or
OPSTOWER_DEMO_DIR) with its own config, state and backup directories, so the demo never
touches the operator's real configuration or databases. The first run takes three
backups: one local only, one in both places, and one deliberately corrupted copy so that
verification has something to find. Later runs reuse the data.

The server archives its WAL into the demo bucket (point-in-time recovery), and the first
base backup runs in the background once the sample data is there, so the console opens
without waiting for it (OPSTOWER_DEMO_PITR=0 turns archiving off).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from opstower_core.config import PitrSettings, S3Settings, Settings, Target
from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Event, EventSink, StepFinished, StepLog, StepStarted

DEMO_DB = "opstower"
MARKER = ".opstower-demo"
# libpq variables of the operator's shell that could point the demo at a real server.
_LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
              "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGOPTIONS")

StatusSink = Callable[[str], None]
# stop() waits this long for a running base backup before cancelling it (a cancelled one is retried next start).
BASE_BACKUP_GRACE_SECONDS = 120.0
# The background PITR setup starts this long after the console is handed the screen: enabling archiving
# sets the server pushing its backlog of segments (its own processes, which we cannot nice), and on a
# loaded 2-core machine that competed with the console's first paint.
PITR_SETUP_DELAY_SECONDS = 5.0


def pitr_wanted(env: Mapping[str, str] | None = None) -> bool:
    """Archiving is on unless OPSTOWER_DEMO_PITR says 0/no/off/false."""
    env = os.environ if env is None else env
    return env.get("OPSTOWER_DEMO_PITR", "1").strip().lower() not in ("0", "no", "off", "false")


def default_demo_dir(env: Mapping[str, str] | None = None) -> Path:
    """OPSTOWER_DEMO_DIR, else `~/.cache/opstower-demo` (XDG_CACHE_HOME honoured)."""
    env = os.environ if env is None else env
    if env.get("OPSTOWER_DEMO_DIR"):
        return Path(env["OPSTOWER_DEMO_DIR"]).expanduser().resolve()
    cache = Path(env.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    return (cache / "opstower-demo").resolve()


def _reachable_by_others(path: Path) -> bool:
    """Whether every directory above `path` lets other users through (o+x)."""
    for parent in path.parents:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


@dataclass
class DemoEnvironment:
    """The demo's services and paths; `start()`, then `settings()`, `seed()`, `stop()`."""

    directory: Path
    pg: EmbeddedPostgres | None = None
    s3: EmbeddedS3 | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    # WAL archiving + a base backup (point-in-time recovery to try at once); None: pitr_wanted().
    pitr: bool | None = None
    base_backup: BackgroundBaseBackup | None = field(default=None, init=False)
    _enable_pending: bool = field(default=False, init=False, repr=False)
    _say: StatusSink = field(default=lambda _line: None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).expanduser().resolve()
        if self.pitr is None:
            self.pitr = pitr_wanted()

    # -- paths ---------------------------------------------------------------------------
    @property
    def backup_dir(self) -> Path:
        return self.directory / "backups"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def config_path(self) -> Path:
        return self.directory / "config.toml"

    def pg_directory(self) -> Path:
        """Where the PostgreSQL data lives.

        Run as root, pgserver runs the server as user "pgserver" and opens every parent
        directory to other users (o+rx) so that user can reach it. Rather than let it open
        up a private home (/root), the data goes under /var/tmp then, linked from the demo
        directory.
        """
        inside = self.directory / "pg"
        if os.geteuid() != 0 or _reachable_by_others(self.directory):
            return inside
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"opstower-demo-{digest}" / "pg"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, on_status: StatusSink | None = None) -> DemoEnvironment:
        """Start PostgreSQL and S3 (in about 5 s) and write the demo's config file."""
        say = self._say = on_status or (lambda _line: None)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        marker = self.directory / MARKER
        if not marker.exists():
            if any(p.name != MARKER for p in self.directory.iterdir()):
                raise OpsError(f"{self.directory} is not empty and is not a demo directory",
                               "nothing was changed", "choose another directory with OPSTOWER_DEMO_DIR")
            marker.write_text("OpsTower demo data (safe to delete when the demo is not running)\n")
        pg_dir = self.pg_directory()
        if pg_dir == self.directory / "pg" and os.geteuid() == 0:
            self.directory.chmod(0o755)  # the "pgserver" user must pass through to its data
        elif pg_dir != self.directory / "pg":
            pg_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
            link = self.directory / "pg"
            if not link.is_symlink():
                link.symlink_to(pg_dir, target_is_directory=True)
        # S3 first, on the port of the last run when it is free: an archiving server's first act is to
        # push the segments left ready at its last stop, with the config copy that names that port.
        say(f"Starting S3 (SeaweedFS) in {self.directory / 's3'}")
        self.s3 = EmbeddedS3(self.directory / "s3").start(s3_port=self._last_s3_port())
        say(f"Starting PostgreSQL in {pg_dir}")
        try:
            self.pg = EmbeddedPostgres(pg_dir).start()
        except BaseException:
            self.stop()
            raise
        self._write_config()
        try:
            if self.pitr:
                self._prepare_archiving(say)
            elif self._archive_mode() == "on":
                self._disable_archiving(say)
        except BaseException:
            self.stop()
            raise
        return self

    def _last_s3_port(self) -> int | None:
        import re

        try:
            found = re.search(r'^endpoint_url = "http://127\.0\.0\.1:(\d+)"', self.config_path.read_text(), re.M)
        except OSError:
            return None
        return int(found.group(1)) if found else None

    # -- point-in-time recovery ----------------------------------------------------------
    def pitr_directory(self) -> Path:
        """Launcher, its config copy, credentials and scratch clusters: beside the data, reachable by its user."""
        return self.pg_directory().parent / "pitr"

    def _prepare_archiving(self, say: StatusSink) -> None:
        """What WAL archiving needs before the console opens: the launcher's files and archive_mode (a restart).

        `pitr enable --apply` itself (launcher, archive_command, its check as the server's
        user: ~1.5 s here, ~4 s on a loaded machine) runs in the background job; until then
        the server keeps its segments as .ready, nothing fails.
        """
        from opstower_core.devenv.embedded import DEMO_ACCESS_KEY, DEMO_SECRET_KEY
        from opstower_core.pitr import inspect, launcher_path

        assert self.pg is not None
        pitr = self.pitr_directory()
        pitr.mkdir(parents=True, exist_ok=True)
        pitr.chmod(0o755)
        # The archive command runs as the server's user: it reads this copy (no secret in it) ...
        shutil.copyfile(self.config_path, pitr / "config.toml")
        (pitr / "config.toml").chmod(0o644)
        creds = pitr / "aws-credentials"
        if not creds.exists():  # ... and the loopback-only demo keys, 0600, owned by that user
            creds.write_text(f"[default]\naws_access_key_id = {DEMO_ACCESS_KEY}\n"
                             f"aws_secret_access_key = {DEMO_SECRET_KEY}\n")
            creds.chmod(0o600)
            if os.geteuid() == 0:
                owner = self.pg.pgdata.stat()
                os.chown(creds, owner.st_uid, owner.st_gid)
        settings = self.archive_settings()
        if launcher_path(settings).exists() and inspect(settings, self.target()).ready:
            self._enable_pending = False  # a later start: the copied config names this run's S3 port
            return
        self._enable_pending = True
        if self._archive_mode() != "on":
            # archive_mode now (it needs the restart); with it off, PostgreSQL also shows archive_command
            # as "(disabled)" and enable() would wait out its 10 s for the new command to show.
            say("Restarting PostgreSQL with WAL archiving on")
            with self._admin() as conn:
                conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
            self.pg.stop()
            self.pg.start()

    def archive_settings(self) -> Settings:
        """The settings the archive command reads: the config copy beside the data."""
        return replace(self.settings(), config_path=self.pitr_directory() / "config.toml")

    def _disable_archiving(self, say: StatusSink) -> None:
        """OPSTOWER_DEMO_PITR=0 on a demo that archived: off, rather than failing pushes piling WAL up."""
        assert self.pg is not None
        say("Restarting PostgreSQL with WAL archiving off (OPSTOWER_DEMO_PITR=0)")
        with self._admin() as conn:
            conn.execute("ALTER SYSTEM RESET archive_mode")
            conn.execute("ALTER SYSTEM RESET archive_command")
        self.pg.stop()
        self.pg.start()
        from opstower_core.runs.history import StateStore

        # WAL written from now on is never archived: turned on again, the demo needs a new base backup.
        StateStore(self.state_dir).put("demo.base_backup", None)

    def _admin(self):  # -> psycopg.Connection
        import psycopg

        assert self.pg is not None
        return psycopg.connect(**self.pg.conninfo(), autocommit=True)

    def _archive_mode(self) -> str:
        with self._admin() as conn:
            return str(conn.execute("SHOW archive_mode").fetchone()[0])

    def start_base_backup(self) -> BackgroundBaseBackup | None:
        """`pitr enable --apply` and the first base backup, in a thread, each when still needed.

        The console opens meanwhile; the base backup's run lands in the run history (recent
        runs) and the dashboard's PITR line shows the window once it is done. None when
        there is nothing to do (archiving off, or on with a base backup taken: `demo.base_backup`).
        """
        from opstower_core.runs.history import StateStore

        if not self.pitr:
            return None
        if self.base_backup is not None and self.base_backup.running:
            return self.base_backup
        backup = not StateStore(self.state_dir).get("demo.base_backup")
        if not (backup or self._enable_pending):
            return None
        self.base_backup = BackgroundBaseBackup(self.archive_settings() if self._enable_pending else None,
                                                self.settings() if backup else None, self.target(),
                                                self.state_dir / "base-backup.log")
        self._enable_pending = False
        self.base_backup.start()
        return self.base_backup

    def _finish_base_backup(self, wait: float) -> None:
        job = self.base_backup
        if job is None:
            return
        if job.running:
            self._say(f"Waiting for the base backup to finish (up to {wait:.0f}s; log {job.log_path})")
            try:
                if not job.wait(wait):
                    self._say("The base backup did not finish in time: cancelled (the next start takes it again)")
                    job.cancel()
                    job.wait(30)
            except BaseException:  # a second signal while waiting: cancel, then stop the services anyway
                job.cancel()
                job.wait(30)
                raise
        if job.error and not job.token.cancelled:  # the console hid it; said once the terminal is back
            self._say(f"Point-in-time recovery was not set up: {job.error} (log {job.log_path})")

    def use_environment(self) -> None:
        """Point this process at the demo: AWS_* from the demo store, no libpq variables.

        The boto3 credential chain reads AWS_*; the operator's PG* variables are removed so
        no tool started from here can reach a real server by accident.
        """
        assert self.s3 is not None, "start() first"
        updates: dict[str, str | None] = {k: None for k in _LIBPQ_ENV}
        updates.update(self.s3.env())
        for key, value in updates.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def restore_environment(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def stop(self, wait_for_base_backup: float = BASE_BACKUP_GRACE_SECONDS) -> None:
        """Stop both services (after a running base backup, up to `wait_for_base_backup` s); the data stays."""
        try:
            self._finish_base_backup(wait_for_base_backup)
        finally:
            self._stop_services()

    def _stop_services(self) -> None:
        # PostgreSQL first: its archiver's last round at shutdown still reaches the store (with the store
        # gone first, each of its retries waited out boto3's connection attempts: ~27 s to stop).
        s3, self.s3 = self.s3, None
        pg, self.pg = self.pg, None
        try:
            if pg is not None:
                pg.stop()
        finally:
            if s3 is not None:
                s3.stop()
            self.restore_environment()

    def __enter__(self) -> DemoEnvironment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- settings ------------------------------------------------------------------------
    def target(self) -> Target:
        assert self.pg is not None, "start() first"
        return Target(name=DEMO_DB, dbname=DEMO_DB, host=self.pg.host, port=self.pg.port, user=self.pg.user,
                      rto_minutes=240, rpo_minutes=60)

    def settings(self) -> Settings:
        """Settings for the demo services only (the operator's config and environment are ignored)."""
        assert self.pg is not None and self.s3 is not None, "start() first"
        return Settings(
            backup_dir=self.backup_dir, state_dir=self.state_dir, pg_bin=self.pg.bin_dir,
            s3=S3Settings(bucket=self.s3.bucket, prefix="", endpoint_url=self.s3.endpoint_url, region="us-east-1"),
            targets={DEMO_DB: self.target()}, default_target=DEMO_DB, min_free_gb=0.0,
            config_path=self.config_path, pitr=self.pitr_settings() if self.pitr else PitrSettings(),
            # As if read from the config file: the console shows its PITR line when [pitr] is there.
            raw={"pitr": {}} if self.pitr else {},
        )

    def pitr_settings(self) -> PitrSettings:
        pitr = self.pitr_directory()
        return PitrSettings(server_name="demo", launcher_dir=pitr, scratch_dir=pitr / "scratch",
                            credentials_file=pitr / "aws-credentials", enabled=True)

    def _write_config(self) -> None:
        """The demo's own config file, for `OPSTOWER_CONFIG=… opstower list` while the demo runs."""
        assert self.pg is not None and self.s3 is not None
        text = (
            "# Written by `opstower demo` at each start (the S3 port is the last run's when it is free).\n"
            f'backup_dir = "{self.backup_dir}"\nstate_dir = "{self.state_dir}"\n'
            f'pg_bin = "{self.pg.bin_dir}"\ndefault_target = "{DEMO_DB}"\nmin_free_gb = 0.0\n\n'
            f'[s3]\nbucket = "{self.s3.bucket}"\nprefix = ""\nendpoint_url = "{self.s3.endpoint_url}"\n'
            'region = "us-east-1"\n\n'
            f'[targets.{DEMO_DB}]\ndbname = "{DEMO_DB}"\nhost = "{self.pg.host}"\nport = {self.pg.port}\n'
            f'user = "{self.pg.user}"\nrto_minutes = 240\nrpo_minutes = 60\n'
        )
        if self.pitr:
            p = self.pitr_settings()
            text += (f'\n[pitr]\nserver_name = "{p.server_name}"\nlauncher_dir = "{p.launcher_dir}"\n'
                     f'scratch_dir = "{p.scratch_dir}"\ncredentials_file = "{p.credentials_file}"\n')
        self.config_path.write_text(text, encoding="utf-8")

    # -- data ----------------------------------------------------------------------------
    @property
    def seeded(self) -> bool:
        from opstower_core.runs.history import StateStore

        return bool(StateStore(self.state_dir).get("demo.seeded"))

    def seed(self, on_status: StatusSink | None = None, on_event: EventSink | None = None) -> list[str]:
        """First run only: the sample database and three backups. Returns the new artifact names."""
        from opstower_core.backup import BackupOptions, run_backup
        from opstower_core.devenv.sampledb import add_activity, create_sample_database
        from opstower_core.runs.history import StateStore
        from opstower_core.verify import verify

        assert self.pg is not None, "start() first"
        say = on_status or (lambda _line: None)
        settings = self.settings()
        state = StateStore(self.state_dir)
        if state.get("demo.seeded"):
            self._start_base_backup_saying(say)  # archiving turned on since, or the last one was cancelled
            return []
        say(f"Creating the sample database {DEMO_DB!r}")
        create_sample_database(self.pg.conninfo("postgres"), DEMO_DB)
        say("Backup 1: local only")
        first = run_backup(settings, options=BackupOptions(local_only=True), on_event=on_event, state=state)
        add_activity(self.pg.conninfo("postgres"), DEMO_DB, rows=150)
        say("Backup 2: local and S3")
        second = run_backup(settings, on_event=on_event, state=state)
        say("Backup 3: a corrupted copy, for verification to catch")
        corrupted = corrupt_copy(settings.backup_dir, second.path, first.name.created - timedelta(minutes=10))
        say(f"Verifying {second.name.filename}")
        verify(settings, second.name.filename, on_event=on_event, state=state)
        state.put("demo.seeded", {"backups": [first.name.filename, second.name.filename, corrupted.name]})
        self._start_base_backup_saying(say)
        return [first.name.filename, second.name.filename, corrupted.name]

    def _start_base_backup_saying(self, say: StatusSink) -> None:
        job = self.start_base_backup()
        if job is not None:
            say("Point-in-time recovery: " + " and ".join(
                ([f"archiving to s3://{self.s3.bucket if self.s3 else '?'}/pitr"] if job.enable_settings else [])
                + (["the first base backup (barman-cloud)"] if job.backup_settings else [])) + " set up in the background")

def corrupt_copy(backup_dir: Path, good: Path, when: Any) -> Path:
    """Copy a good artifact under the timestamp `when`, metadata renamed to match, bytes flipped mid-file.

    The copy keeps its size and the original's sha256, so checks 1–3 pass and the
    compression and metadata checks fail, as they would on a disk or transfer error.
    """
    import json

    from opstower_core.artifacts.names import ArtifactName, new_stamp, parse_name, write_metadata

    src = parse_name(good.name)
    if src is None:
        raise OpsError(f"{good.name} is not an artifact name", "nothing was changed", "pick a backup file")
    name = ArtifactName(src.database, new_stamp(when), src.ext, src.encrypted, src.pre_restore)
    dest = backup_dir / name.filename
    shutil.copyfile(good, dest)
    os.chmod(dest, 0o600)
    meta = json.loads((backup_dir / src.meta_filename).read_text(encoding="utf-8"))
    meta.update({"timestamp": name.timestamp, "date": name.created.isoformat(), "backup_file": name.filename,
                 "globals_file": None, "globals_dumped": False})
    write_metadata(backup_dir / name.meta_filename, meta)
    size = dest.stat().st_size
    with open(dest, "r+b") as fh:
        fh.seek(size // 2)
        chunk = fh.read(64)
        fh.seek(size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    return dest


class BackgroundBaseBackup:
    """The demo's PITR setup in a thread: `pitr enable --apply` and/or the first base backup.

    `running`, `wait()`, `cancel()`, then `backup` (a pitr.BaseBackup) or `error`. Its step
    log goes to `log_path`; the base backup's run is recorded in the run history by
    take_base_backup (the console's recent runs show it when it ends).
    """

    def __init__(self, enable_settings: Settings | None, backup_settings: Settings | None, target: Target,
                 log_path: Path) -> None:
        self.enable_settings, self.backup_settings = enable_settings, backup_settings
        self.target, self.log_path = target, log_path
        self.token = CancelToken()
        self.backup: Any = None
        self.error: str = ""
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="demo-pitr-setup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """True once it has ended (done, failed or cancelled)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        self.token.cancel()

    def _run(self) -> None:
        started = time.monotonic()
        # Linux nice is per thread and inherited by the processes it starts (barman-cloud, the launcher
        # check): the console's thread keeps the CPU first.
        os.nice(10)
        if self.token.wait(PITR_SETUP_DELAY_SECONDS):
            return  # stopped before it began: nothing to undo, the next start does it
        with open(self.log_path, "a", encoding="utf-8") as log:
            def on_event(event: Event) -> None:
                if isinstance(event, StepLog | StepStarted | StepFinished):
                    line = (event.line if isinstance(event, StepLog) else event.title if isinstance(event, StepStarted)
                            else f"{event.status.value}: {event.detail}")
                    log.write(line.rstrip() + "\n")
                    log.flush()

            try:
                self._steps(on_event)
            except Exception as exc:  # noqa: BLE001 - kept for the caller; the thread must not die loudly
                self.error = str(exc)
                log.write(f"FAILED: {exc}\n")
        self.seconds = time.monotonic() - started

    def _steps(self, on_event: EventSink) -> None:
        from opstower_core.pitr import enable, take_base_backup
        from opstower_core.runs.history import StateStore

        if self.enable_settings is not None:
            report = enable(self.enable_settings, self.target, apply=True)
            if not report.ready:
                failed = [c.name for c in report.checks if not c.ok] or [report.launcher_detail]
                raise OpsError(f"WAL archiving for the demo is not ready ({', '.join(failed)})",
                               "the demo runs without point-in-time recovery",
                               "see `opstower pitr enable` with the demo's config")
            on_event(StepLog("enable", f"WAL archiving on ({report.launcher_detail})"))
        if self.backup_settings is not None and not self.token.cancelled:
            self.backup = take_base_backup(self.backup_settings, self.target, on_event, cancel=self.token)
            StateStore(self.backup_settings.state_dir).put("demo.base_backup", self.backup.backup_id)
