"""What the steps of one restore run share: the plan (read only), the reporter, the cancel
flag, and what the run has learnt and touched so far (which drives the rollback)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opstower_core.config import DEFAULT_LOCK_WAIT, Settings, Target
from opstower_core.events import (
    CancelToken,
    Event,
    EventSink,
    Reporter,
    Status,
    StepFinished,
    StepLog,
    StepOutcome,
    StepProgress,
    StepStarted,
)
from opstower_core.pg.admin import ConnState, DbProps
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.restore.model import RestorePlan
from opstower_core.runs.history import StateStore
from opstower_core.runs.lock import RunLock
from opstower_core.runs.runlog import RunLog

if TYPE_CHECKING:  # the backup engine is imported where a pre-restore copy is taken
    from opstower_core.backup import BackupResult


@dataclass
class Touched:
    """What the run has changed on the server; the rollback undoes exactly this."""

    live_props: DbProps | None = None  # the live database's properties, read once when first needed
    work_created: bool = False
    blocked: ConnState | None = None  # connection settings of the live database before we blocked it
    live_dropped: bool = False
    done: bool = False  # the final rename committed: nothing left to undo


@dataclass
class RunContext:
    """One run of a plan. The plan is never changed; what the run learns lives here."""

    settings: Settings
    plan: RestorePlan
    reporter: Reporter
    cancel: CancelToken
    state: StateStore
    log: RunLog
    sink: EventSink
    confirm: Callable[[RestorePlan], str] | None
    entry: CatalogEntry  # the artifact; the local copy once downloaded
    work_db: str  # may move to a free name when the planned one was taken meanwhile
    old_db: str | None
    no_owner: bool
    roles: dict[str, list[str]]
    touched: Touched = field(default_factory=Touched)
    pre_restore: BackupResult | None = None
    locks: list[RunLock] = field(default_factory=list)
    current_step: str = ""
    rollback_note: str = ""
    rollback_failed: str | None = None
    artifact_proof: Any = None  # verify's ArtifactProof, from the verification read of the artifact
    proof: Any = None  # verify's ProofResult: the restored database compared with that proof
    started_mono: float = field(default_factory=time.monotonic)  # the run's start, for the RTO clock
    service_seconds: float | None = None  # when the restored database went into service (the swap committed)
    digest_job: Any = None  # pg.digest_job.DigestJob: the artifact's table digests, computed beside the load
    proof_missing: str | None = None  # why the proof could not be made (the digest job's reason)
    early_digests: Any = None  # server._EarlyDigests: restored tables read beside the load
    journal: Path | None = None  # the restore journal (journal.py) once the run first changes the server
    journal_started: float | None = None

    @property
    def target(self) -> Target:
        return self.plan.target

    @property
    def live_db(self) -> str:
        return self.plan.live_db

    @property
    def lock_wait(self) -> float:
        """Seconds any statement may wait for a lock (--wait-for-locks / wait_for_locks_seconds), as the backup."""
        return self.settings.wait_for_locks_seconds or DEFAULT_LOCK_WAIT

    def checkpoint(self, step: str | None = None, phase: str = "running") -> None:
        """Write the restore journal before a change to the server (see journal.py)."""
        from opstower_core.restore import journal

        self.journal = journal.save(self, step or self.current_step, phase)

    def lock(self, name: str) -> None:
        self.locks.append(RunLock(self.settings.state_dir, name, "restore").acquire())

    def forward(self, step: str) -> EventSink:
        """A sub-engine's events (verify, backup) as lines and progress of our own step."""
        r = self.reporter

        def sink(event: Event) -> None:
            if isinstance(event, StepProgress):
                r.progress(step, event.done, event.total, event.unit)
            elif isinstance(event, StepLog):
                r.log(step, event.line, event.level)
            elif isinstance(event, StepStarted):
                r.log(step, f"{event.title}..." if not event.total else f"Check {event.index}: {event.title}...")
            elif isinstance(event, StepFinished):
                level = {Status.FAIL: "ERROR", Status.WARN: "WARN"}.get(event.status, "INFO")
                r.log(step, f"{event.status}: {event.detail}", level)

        return sink


Step = Callable[[RunContext, StepOutcome], None]
