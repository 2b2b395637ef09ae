"""Old databases a swap kept (`<db>_pre_restore_<ts>`): list them, drop one on request.

Also the leftovers of killed runs: staging (`<db>_restore_<ts>`), rollback
(`<db>_rollback_<ts>`) and verify scratch (`<db>_verify_<ts>`) databases whose run is gone.
One is "provably abandoned" when no running restore's journal names it, nobody is connected
to it, and its name's time is more than LEFTOVER_MIN_AGE ago (a verify keeps no journal);
only those are dropped, by `--discard-old` or by the next restore of the same database.
"""


from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from opstower_core.advice import say
from opstower_core.config import Settings
from opstower_core.errors import OpsError, UsageError
from opstower_core.pg.admin import admin, db_exists, drop_database

LEFTOVER_MIN_AGE = timedelta(minutes=10)
_LEFTOVER = re.compile(r"(?<!_pre)_(?P<kind>restore|rollback|verify)_(?P<stamp>\d{8}_\d{6})(_\d+)?$")

# -- old databases kept by a swap -----------------------------------------------------------

def list_old_databases(settings: Settings, target_name: str | None = None) -> list[tuple[str, int]]:
    """(name, size) of databases a swap kept (`<db>_pre_restore_<ts>`), newest first."""
    target = settings.target(target_name)
    with admin(target, target.dbname) as conn:
        rows = conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datname ~ '_pre_restore_[0-9]{8}_[0-9]{6}'"
            " ORDER BY datname DESC").fetchall()
    return [(r[0], int(r[1])) for r in rows]


@dataclass
class LeftoverDatabase:
    """A staging, rollback or verify scratch database left by a run that did not finish."""

    name: str
    size: int
    kind: str  # restore (staging) | rollback | verify
    removable: bool
    evidence: str  # why it is (or is not) proven abandoned

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size_bytes": self.size, "kind": f"leftover_{self.kind}",
                "removable": self.removable, "evidence": self.evidence}


def _leftovers(conn: psycopg.Connection, settings: Settings, live: str | None = None) -> list[LeftoverDatabase]:
    from opstower_core.restore.journal import journals

    running = {n: j for j in journals(settings.state_dir) for n in (j.work, j.old) if n and j.alive}
    rows = conn.execute(
        "SELECT d.datname, pg_database_size(d.oid), (SELECT count(*) FROM pg_stat_activity a"
        " WHERE a.datname = d.datname AND a.pid <> pg_backend_pid()) FROM pg_database d"
        " WHERE d.datname ~ '_(restore|rollback|verify)_[0-9]{8}_[0-9]{6}(_[0-9]+)?$'"
        " AND d.datname !~ '_pre_restore_[0-9]{8}_[0-9]{6}(_[0-9]+)?$' ORDER BY 1").fetchall()
    out = []
    for name, size, connected in rows:
        m = _LEFTOVER.search(name)
        if m is None or (live is not None and not _belongs(name[:m.start()], live)):
            continue
        try:
            age = datetime.now() - datetime.strptime(m.group("stamp"), "%Y%m%d_%H%M%S")
        except ValueError:
            continue
        if name in running:
            why, ok = f"in use by the running restore (pid {running[name].pid})", False
        elif connected:
            why, ok = f"{connected} session(s) connected to it", False
        elif age < LEFTOVER_MIN_AGE:
            why, ok = f"made {int(age.total_seconds())} s ago: its run may still be going", False
        else:
            why, ok = "no running restore's journal names it, no session is connected, made " \
                      f"{int(age.total_seconds() // 60)} min ago", True
        out.append(LeftoverDatabase(name, int(size), m.group("kind"), ok, why))
    return out


def _belongs(prefix: str, live: str) -> bool:
    """Whether a leftover named `<prefix>_<kind>_<ts>` is one of `live`'s (names are cut to fit 63 bytes,
    a verify scratch name to 30 characters)."""
    return prefix == live or (len(prefix) >= 30 and live.startswith(prefix))


def list_leftover_databases(settings: Settings, target_name: str | None = None) -> list[LeftoverDatabase]:
    """Staging, rollback and verify scratch databases on the target's server, with the evidence
    of whether their run is gone (`removable`)."""
    target = settings.target(target_name)
    with admin(target, target.dbname) as conn:
        return _leftovers(conn, settings)


def drop_abandoned(conn: psycopg.Connection, settings: Settings, live: str) -> list[str]:
    """Drop the provably abandoned leftovers of `live` (the next restore of it calls this); their names."""
    dropped = []
    for lo in _leftovers(conn, settings, live):
        if lo.removable:
            drop_database(conn, lo.name)
            dropped.append(lo.name)
    return dropped


def discard_old(settings: Settings, name: str, target_name: str | None = None) -> None:
    """Drop a database a swap kept (`<db>_pre_restore_<ts>`), or a provably abandoned leftover of a killed run."""
    if _LEFTOVER.search(name):
        _discard_leftover(settings, name, target_name)
        return
    if not re.search(r"_pre_restore_\d{8}_\d{6}(_\d+)?$", name):
        raise UsageError(f"{name} is not a database kept by a restore (<db>_pre_restore_<YYYYMMDD_HHMMSS>)",
                         "nothing was dropped", say("list_old"))
    target = settings.target(target_name)
    if name in {t.dbname for t in settings.targets.values()}:
        raise UsageError(f"{name} is a configured live database", "nothing was dropped", "")
    with admin(target, name) as conn:
        if not db_exists(conn, name):
            raise OpsError(f"Database {name} does not exist", "nothing was dropped",
                           say("list_old"))
        sql = drop_database(conn, name)
    from opstower_core.runs.history import StateStore

    StateStore(settings.state_dir).record("discard_old", name, "success", details={"sql": sql})


def _discard_leftover(settings: Settings, name: str, target_name: str | None) -> None:
    target = settings.target(target_name)
    if name in {t.dbname for t in settings.targets.values()}:
        raise UsageError(f"{name} is a configured live database", "nothing was dropped", "")
    with admin(target, name) as conn:
        found = next((lo for lo in _leftovers(conn, settings) if lo.name == name), None)
        if found is None:
            raise OpsError(f"Database {name} does not exist", "nothing was dropped", say("list_old"))
        if not found.removable:
            raise OpsError(f"{name} is not proven abandoned ({found.evidence})", "nothing was dropped",
                           "wait for its run to end, or stop that run first")
        sql = drop_database(conn, name)
    from opstower_core.runs.history import StateStore

    StateStore(settings.state_dir).record("discard_old", name, "success",
                                          details={"sql": sql, "leftover": found.as_dict()})
