"""The demo environment: embedded PostgreSQL and S3, the sample database, a few backups.

Everything lives in one directory (default `~/.cache/opstower-demo`, or
OPSTOWER_DEMO_DIR) with its own config, state and backup directories, so the demo never
touches the operator's real configuration or databases. The first run takes three
backups: one local only, one in both places, and one deliberately corrupted copy so that
verification has something to find. Later runs reuse the data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from opstower_core.config import PitrSettings, S3Settings, Settings, Target
from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
from opstower_core.errors import OpsError
from opstower_core.events import EventSink

DEMO_DB = "opstower"
MARKER = ".opstower-demo"
# libpq variables of the operator's shell that could point the demo at a real server.
_LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
              "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGOPTIONS")

StatusSink = Callable[[str], None]


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
    # WAL archiving + a base backup (point-in-time recovery to try at once). Opt-in (OPSTOWER_DEMO_PITR=1):
    # measured here it adds ~29 s to the first start (enable ~12 s, base backup ~16 s) and ~2 s to later ones.
    pitr: bool | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).expanduser().resolve()
        if self.pitr is None:
            self.pitr = os.environ.get("OPSTOWER_DEMO_PITR", "") not in ("", "0")

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
        say = on_status or (lambda _line: None)
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
        say(f"Starting PostgreSQL in {pg_dir}")
        self.pg = EmbeddedPostgres(pg_dir).start()
        say(f"Starting S3 (SeaweedFS) in {self.directory / 's3'}")
        try:
            self.s3 = EmbeddedS3(self.directory / "s3").start()
        except BaseException:
            self.stop()
            raise
        self._write_config()
        if self.pitr:
            try:
                self._enable_archiving(say)
            except BaseException:
                self.stop()
                raise
        return self

    # -- point-in-time recovery ----------------------------------------------------------
    def pitr_directory(self) -> Path:
        """Launcher, its config copy, credentials and scratch clusters: beside the data, reachable by its user."""
        return self.pg_directory().parent / "pitr"

    def _enable_archiving(self, say: StatusSink) -> None:
        """WAL archiving into the demo bucket (`pitr enable --apply`); restarts the server the first time only."""
        import time

        from opstower_core.devenv.embedded import DEMO_ACCESS_KEY, DEMO_SECRET_KEY
        from opstower_core.pitr import enable

        assert self.pg is not None
        started = time.monotonic()
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
        settings = replace(self.settings(), config_path=pitr / "config.toml")
        report = enable(settings, self.target(), apply=True)
        if report.restart_needed:
            say("Restarting PostgreSQL with WAL archiving on")
            self.pg.stop()
            self.pg.start()
        say(f"WAL archiving to s3://{self.s3.bucket if self.s3 else '?'}/pitr ready "
            f"in {time.monotonic() - started:.1f}s")

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

    def stop(self) -> None:
        """Stop both services; the data stays for the next run."""
        s3, self.s3 = self.s3, None
        pg, self.pg = self.pg, None
        try:
            if s3 is not None:
                s3.stop()
        finally:
            if pg is not None:
                pg.stop()
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
        )

    def pitr_settings(self) -> PitrSettings:
        pitr = self.pitr_directory()
        return PitrSettings(server_name="demo", launcher_dir=pitr, scratch_dir=pitr / "scratch",
                            credentials_file=pitr / "aws-credentials", enabled=True)

    def _write_config(self) -> None:
        """The demo's own config file, for `OPSTOWER_CONFIG=… opstower list` while the demo runs."""
        assert self.pg is not None and self.s3 is not None
        text = (
            "# Written by `opstower demo` at each start (the S3 port changes between runs).\n"
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
        if self.pitr:
            say("Base backup for point-in-time recovery (barman-cloud)")
            from opstower_core.pitr import take_base_backup

            take_base_backup(settings, self.target(), on_event=on_event or (lambda _e: None))
        state.put("demo.seeded", {"backups": [first.name.filename, second.name.filename, corrupted.name]})
        return [first.name.filename, second.name.filename, corrupted.name]


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
