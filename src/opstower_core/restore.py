"""The restore wizard's engine: a plan the operator can read, then a run that follows it.

`plan_restore` looks at the artifact, the server and who is connected, and returns every
step with the exact commands and SQL it will run; nothing is changed. `run_restore`
executes that plan (restore_run.py), emitting the same events as verification, timing each
step against the RTO, and rolling back whatever it touched when a step fails or the
operator cancels.

Modes (the live database is never dropped before its replacement is restored and checked):
- swap (default): restore into a staging database, check it, then block and terminate
  connections and rename live → `<db>_pre_restore_<ts>`, staging → live in one transaction.
- in_place (`--in-place`): the reference's way for servers without room for two copies:
  drop the live database (after the pre-restore backup), restore, rename into place;
  rollback reloads the pre-restore backup.
- new_db: the target database does not exist yet: restore under a staging name, rename.
- tables (`--tables`): chosen tables of a custom-format backup into `<db>_tables_<ts>`.
"""

from __future__ import annotations

import re

from .config import Settings
from .errors import OpsError, UsageError
from .restore_db import admin, db_exists, drop_sql
from .restore_load import restore_into
from .restore_model import STEP_TITLES, PlannedStep, RestoreOptions, RestorePlan, RestoreResult, timing_table
from .restore_plan import plan_restore, safe_destination

__all__ = ["RestoreOptions", "PlannedStep", "RestorePlan", "RestoreResult", "plan_restore", "run_restore",
           "discard_old", "timing_table", "list_old_databases", "restore_into", "safe_destination", "STEP_TITLES"]


def run_restore(settings: Settings, plan: RestorePlan, confirm=None, on_event=None, cancel=None,
                state=None) -> RestoreResult:
    """Run a plan. Never leaves the operator without a working database; see RestoreResult.sentence.

    `confirm(plan)` returns the database name the operator typed; it must equal
    `plan.live_db` unless `--force`. Failures and cancellation do not raise: the result
    says what was rolled back (ok False, status failed/cancelled).
    """
    from .restore_run import RestoreRun

    return RestoreRun(settings, plan, confirm, on_event, cancel, state).run()


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
    from .state import StateStore

    StateStore(settings.state_dir).record("discard_old", name, "success", details={"sql": drop_sql(name)})
