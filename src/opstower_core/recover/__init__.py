"""Table recovery: bring back a table's lost rows (merge), the whole table (replace, or a
dropped table restored with everything that belonged to it), or a copy under another name.

The data as it was comes from a `RecoverySource` (source.py): today `ScratchRestore`, the
whole backup restored into a scratch database on the live server and proven against the
backup; the point-in-time recovery adds a scratch cluster. Rows travel through the client
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
preview alone (`--plan`).

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
from .run import RecoverySession, preview_recovery, run_recovery
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
    "preview_recovery",
    "run_recovery",
]
