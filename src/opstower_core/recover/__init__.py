"""Table recovery: bring back a table's lost rows (merge), the whole table (replace, or a
dropped table restored with everything that belonged to it), or a copy under another name.

The data as it was comes from a `RecoverySource` (source.py): `ScratchRestore`, the whole
backup restored into a scratch database on the live server and proven against the backup;
or a ready source handed in instead of a backup, such as a database of a cluster recovered to
a moment (pitr.PitrSource), whose own tables are what the proof compares with. Rows travel through the client
(COPY out of the source into TEMP tables of the live session) and go into the live tables
with set-based SQL in one transaction, after a pre-change copy of those tables, and are
proven before the commit.

API, in the order the console walks it (run.py):
    session = RecoverySession(settings, artifact, RecoverOptions(tables=[...]), on_event=..., cancel=...)
    session.open()                    # verify, download, scratch restore, its proof
    plan = session.preview()          # RecoveryPlan: per table counts; nothing touched
    outcomes = session.apply(plan, confirm)   # typed confirmation, pre-change copy, transaction, proof
    session.close()                   # always: the scratch database is dropped
`run_recovery(...)` does all of it and returns a RecoveryResult; `preview_recovery(...)` the
preview alone (`--plan`). Both take a backup or a ready RecoverySource.
`recover_tables_from_cluster(settings, cluster, dbname, live, options, confirm, on_event,
cancel, moment=..., plan_only=False)`: the same from a recovered PITR cluster (the console's
recovery screen); the cluster is left to the caller.

Rooms: model.py (options, plan, result), tables.py (catalog reads), plan.py (which tables,
what to do), stage.py (temp tables, comparison, the changes), move.py (rows through the
client), prove.py, source.py, run.py.
"""

from .model import (
    ACTIONS,
    MODE_TEXT,
    MODES,
    STEP_TITLES,
    RecoverOptions,
    RecoveryPlan,
    RecoveryResult,
    TableOutcome,
    TablePlan,
)
from .plan import check_options
from .run import RecoverySession, preview_recovery, recover_tables_from_cluster, run_recovery
from .source import RecoverySource, ScratchRestore

__all__ = [
    "ACTIONS",
    "MODES",
    "MODE_TEXT",
    "STEP_TITLES",
    "RecoverOptions",
    "RecoveryPlan",
    "RecoveryResult",
    "RecoverySession",
    "RecoverySource",
    "ScratchRestore",
    "TableOutcome",
    "TablePlan",
    "check_options",
    "preview_recovery",
    "recover_tables_from_cluster",
    "run_recovery",
]
