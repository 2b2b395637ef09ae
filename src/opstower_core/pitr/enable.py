"""`pitr enable`: check the server's archiving settings, set them with ALTER SYSTEM on request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.pg.tools import connect
from opstower_core.pitr import launcher as L


@dataclass
class Check:
    name: str
    current: str
    wanted: str
    ok: bool
    needs_restart: bool = False  # changing it needs a server restart (archive_mode, wal_level)
    note: str = ""


@dataclass
class EnableReport:
    server_version: str
    data_directory: str
    os_user: str
    checks: list[Check] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    launcher: str = ""
    launcher_ok: bool | None = None
    launcher_detail: str = ""

    @property
    def restart_needed(self) -> bool:
        return any(c.needs_restart and not c.ok for c in self.checks)

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks) and self.launcher_ok is not False

    def as_dict(self) -> dict[str, Any]:
        return {"server_version": self.server_version, "data_directory": self.data_directory, "os_user": self.os_user,
                "checks": [c.__dict__ for c in self.checks], "applied": self.applied,
                "restart_needed": self.restart_needed, "ready": self.ready, "launcher": self.launcher,
                "launcher_ok": self.launcher_ok, "launcher_detail": self.launcher_detail}


def _setting(conn, name: str) -> str:
    return str(conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0] or "")


def _pending_restart(conn, name: str) -> bool:
    row = conn.execute("SELECT pending_restart FROM pg_settings WHERE name = %s", (name,)).fetchone()
    return bool(row and row[0])


def inspect(settings: Settings, target: Target) -> EnableReport:
    """Read the server's archiving settings and compare them with what PITR needs."""
    wanted_cmd = L.archive_command(settings)
    with connect(target, "postgres") as conn:
        version = _setting(conn, "server_version")
        datadir = _setting(conn, "data_directory")
        user = L.server_os_user(settings, datadir)
        report = EnableReport(version, datadir, user.name, launcher=str(L.launcher_path(settings)))
        wal_level = _setting(conn, "wal_level")
        mode = _setting(conn, "archive_mode")
        cmd = _setting(conn, "archive_command")
        timeout = _setting(conn, "archive_timeout")
        checksums = _setting(conn, "data_checksums")
        pending = {n: _pending_restart(conn, n) for n in ("archive_mode", "wal_level")}
    major = int(version.split(".")[0]) if version[:2].isdigit() else 0
    report.checks = [
        Check("server_version", version, ">= 13 (barman-cloud)", major >= 13),
        Check("wal_level", wal_level, "replica or logical", wal_level in ("replica", "logical"), True,
              "pending restart" if pending["wal_level"] else ""),
        Check("archive_mode", mode, "on", mode in ("on", "always"), True,
              "set; restart the server to apply" if pending["archive_mode"] else ""),
        Check("archive_command", cmd, wanted_cmd, cmd == wanted_cmd),
        Check("archive_timeout", timeout, f"{settings.pitr.archive_timeout}s",
              _seconds(timeout) == settings.pitr.archive_timeout),
        # Advice, not a blocker: always ok, the note says what to do.
        Check("data_checksums", checksums, "on (recommended)", True,
              note="" if checksums == "on" else "off: pg_checksums --enable on a stopped server is recommended"),
    ]
    return report


def _seconds(text: str) -> int:
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(unit) and text[: -len(unit)].strip().isdigit():
            return int(int(text[: -len(unit)]) * factor)
    return int(text) if text.isdigit() else -1


def enable(settings: Settings, target: Target, apply: bool = False) -> EnableReport:
    """Inspect; with apply: write the launcher (and credentials file), ALTER SYSTEM, reload, re-inspect.

    With [pitr] read_only, apply is refused before anything: this server's WAL would go into
    another system's archive (two writers, one timeline history: both unrecoverable)."""
    if apply and settings.pitr.read_only:
        from opstower_core.pitr.barman import key_root

        raise OpsError(f"pitr enable --apply refused: s3://{settings.s3.bucket}/{key_root(settings)} is "
                       "another system's archive ([pitr] read_only)", "nothing was changed",
                       "archive with the system that owns it, or give this server its own [pitr] path or "
                       "server_name without read_only")
    report = inspect(settings, target)
    user = L.server_os_user(settings, report.data_directory)
    if apply:
        L.write_launcher(settings, user)
        written = L.write_credentials(settings, user)
        applied = [f"wrote {L.launcher_path(settings)}"] + ([f"wrote {written} (0600, owner {user.name})"] if written else [])
        from opstower_core.pg.admin import literal

        statements = [
            None if report.checks[1].ok else "ALTER SYSTEM SET wal_level = 'replica'",
            None if report.checks[2].ok else "ALTER SYSTEM SET archive_mode = 'on'",
            f"ALTER SYSTEM SET archive_command = {literal(L.archive_command(settings))}",
            f"ALTER SYSTEM SET archive_timeout = {int(settings.pitr.archive_timeout)}",
        ]
        with connect(target, "postgres") as conn:
            for sql in filter(None, statements):
                conn.execute(sql)
                applied.append(sql)
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous: wait (briefly) until the server shows the new command. With
        # archive_mode still off (a restart pending) it shows "(disabled)" whatever we set: no wait.
        archiving = report.checks[2].ok
        deadline = time.monotonic() + 10
        report = inspect(settings, target)
        while archiving and not report.checks[3].ok and time.monotonic() < deadline:
            time.sleep(0.2)
            report = inspect(settings, target)
        report.applied = applied
    if L.launcher_path(settings).exists():
        report.launcher_ok, report.launcher_detail = L.check_launcher(settings, user)
    return report
