"""The restore wizard's engine: a plan the operator can read, then a run that follows it.

`plan_restore` looks at the artifact, the server and who is connected, and returns every
step with the exact commands and SQL it will run; nothing is changed. `run_restore`
executes that plan (run.py), emitting the same events as verification, timing each
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

from .model import PlannedStep, RestoreOptions, RestorePlan, RestoreResult, timing_table
from .old import discard_old, list_old_databases
from .plan import plan_restore, safe_destination
from .report import render_incident_report
from .run import run_restore

__all__ = [
    "PlannedStep",
    "RestoreOptions",
    "RestorePlan",
    "RestoreResult",
    "discard_old",
    "list_old_databases",
    "plan_restore",
    "render_incident_report",
    "run_restore",
    "safe_destination",
    "timing_table",
]
