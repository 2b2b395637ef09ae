"""The restore wizard's engine: a plan the operator can read, then a run that follows it.

`plan_restore` looks at the artifact, the server and who is connected, and returns every
step with the exact commands and SQL it will run; nothing is changed. `run_restore`
executes that plan, emitting the same events as verification, timing each step against
the RTO, and rolling back whatever it touched when a step fails or the operator cancels.

Rooms: plan.py (the planner), run.py (the table of steps, the rollback, the sentence),
context.py (what the steps share), source.py (steps before the server is touched: verify,
download, confirm, roles, pre-restore backup), server.py (steps that touch it), checks.py
(checks of the restored database), roles.py, report.py (incident report), old.py,
journal.py (what a run has done, on disk before each change) and recover.py (`--recover`:
finish or undo a killed run from its journal).

Modes (the live database is never dropped before its replacement is restored and checked):
- swap (default): restore into a staging database, check it, then block and terminate
  connections and rename live → `<db>_pre_restore_<ts>`, staging → live in one transaction.
- in_place (`--in-place`): the reference's way for servers without room for two copies:
  drop the live database (after the pre-restore backup), restore, rename into place;
  rollback reloads the pre-restore backup.
- new_db: the target database does not exist yet: restore under a staging name, rename.
- tables (`--tables`): chosen tables of a custom-format backup into `<db>_tables_<ts>`.
"""

from .from_cluster import CopyOutResult, copy_from_cluster
from .journal import interrupted_notice
from .model import (
    MODE_TEXT,
    MissingRoles,
    PlannedStep,
    RestoreOptions,
    RestorePlan,
    RestoreResult,
    mode_text,
    timing_table,
)
from .old import LeftoverDatabase, discard_old, list_leftover_databases, list_old_databases
from .plan import plan_restore
from .recover import recover_interrupted
from .report import render_incident_report
from .run import run_restore

__all__ = [
    "CopyOutResult",
    "LeftoverDatabase",
    "MODE_TEXT",
    "MissingRoles",
    "PlannedStep",
    "RestoreOptions",
    "RestorePlan",
    "RestoreResult",
    "copy_from_cluster",
    "discard_old",
    "interrupted_notice",
    "list_leftover_databases",
    "list_old_databases",
    "mode_text",
    "plan_restore",
    "recover_interrupted",
    "render_incident_report",
    "run_restore",
    "timing_table",
]
