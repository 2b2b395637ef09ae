"""Old databases a swap kept (`<db>_pre_restore_<ts>`): list them, drop one on request."""


from __future__ import annotations

import re

from opstower_core.config import Settings
from opstower_core.errors import OpsError, UsageError
from opstower_core.pg.admin import admin, db_exists, drop_sql

# -- old databases kept by a swap -----------------------------------------------------------

def list_old_databases(settings: Settings, target_name: str | None = None) -> list[tuple[str, int]]:
    """(name, size) of databases a swap kept (`<db>_pre_restore_<ts>`), newest first."""
    target = settings.target(target_name)
    with admin(target, target.dbname) as conn:
        rows = conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datname ~ '_pre_restore_[0-9]{8}_[0-9]{6}'"
            " ORDER BY datname DESC").fetchall()
    return [(r[0], int(r[1])) for r in rows]


def discard_old(settings: Settings, name: str, target_name: str | None = None) -> None:
    """Drop a database a swap kept. Only `<db>_pre_restore_<ts>` names are accepted."""
    if not re.search(r"_pre_restore_\d{8}_\d{6}(_\d+)?$", name):
        raise UsageError(f"{name} is not a database kept by a restore (<db>_pre_restore_<YYYYMMDD_HHMMSS>)",
                         "nothing was dropped", "list them with `opstower restore --list-old`")
    target = settings.target(target_name)
    if name in {t.dbname for t in settings.targets.values()}:
        raise UsageError(f"{name} is a configured live database", "nothing was dropped", "")
    with admin(target, name) as conn:
        if not db_exists(conn, name):
            raise OpsError(f"Database {name} does not exist", "nothing was dropped",
                           "list the kept databases with `opstower restore --list-old`")
        conn.execute(drop_sql(name))
    from opstower_core.runs.history import StateStore

    StateStore(settings.state_dir).record("discard_old", name, "success", details={"sql": drop_sql(name)})
