"""DR drills: run a scenario's phases in order against the RTO and RPO, for real.

Manual phases (Assessment, DNS Cutover …) are started and completed by the operator.
Automated phases run the real engine and are timed by it:

- restore: the drill's backup is restored into a drill database `<db>_drill_<YYYYMMDD_HHMMSS>`
  (never the production database unless the operator explicitly asked for it);
- selective_restore: the deletion rehearsal: the backup restored into a drill database, 30% of the
  rows of the tables chosen at drill start (the largest keyed table when none) deleted there, and
  brought back by the table recovery engine (merge), proven row for row;
- verify: the eight verification checks with the full restoration test;
- pitr_latest: the WAL archive recovered to its end in a scratch cluster (then discarded); the
  heartbeat read back there is the drill's measured RPO (drill/pitr_phase.py). Without [pitr]
  the phase is skipped and the RPO is the logical dump's age, said to be assumed.

Drill databases are dropped when the drill ends unless the operator asks to keep them.
Every change is saved (drill_state.DrillStore) before the call returns, so a drill is
resumed from another process after the console closed or the SSH session dropped. A
finished drill also leaves a "drill" row in the run history for the dashboard.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opstower_core.config import Settings
from opstower_core.drill.engine import drill_database_name
from opstower_core.drill.remedies import say
from opstower_core.drill.scenarios import Scenario, find_scenario, load_scenarios
from opstower_core.drill.state import PENDING, RUNNING, Drill, DrillStore, Participant, PhaseRun
from opstower_core.errors import Cancelled, OpsError, UsageError
from opstower_core.events import CancelToken, EventSink, StepFinished, StepStarted
from opstower_core.events import Status as S
from opstower_core.repo.catalog import CatalogEntry, list_catalog, resolve
from opstower_core.repo.holds import process_alive

UNATTENDED_REASON = "unattended run: manual phase not performed"


@dataclass
class DrillOptions:
    """Choices made at drill start."""

    backup: str | None = None  # artifact name/path; default: the newest backup not known to fail verification
    participants: list[Participant] = field(default_factory=list)
    tables: list[str] | None = None  # for selective_restore phases; None: the largest table with a primary key
    keep_databases: bool = False
    into_production: bool = False  # restore phases replace the live database (explicit choice only)
    unattended: bool = False
    rto_minutes: float | None = None  # default: the target's rto_minutes
    rpo_minutes: float | None = None


def _pick_backup(settings: Settings, database: str, ref: str | None) -> tuple[CatalogEntry, str]:
    """(entry, reference to resolve it again later)."""
    if ref:
        entry = resolve(settings, ref)
        local = entry.local_path
        keep = str(local) if local is not None and local.parent.resolve() != settings.backup_dir.resolve() else entry.filename
        return entry, keep
    catalog = list_catalog(settings, database=database, state=DrillStore(settings.state_dir).state)
    for entry in catalog.entries:
        if not entry.name.pre_restore and entry.verified != "FAIL":
            return entry, entry.filename
    hint = f" ({catalog.s3_error})" if catalog.s3_error else ""
    raise OpsError(f"No backup of {database} to restore in the drill{hint}", "no drill was started",
                   say("backup_or_choose", db=database))


def start_drill(settings: Settings, scenario: str | Scenario, database: str | None = None,
                options: DrillOptions | None = None, clock: Callable[[], float] = time.time) -> DrillRunner:
    """Start a drill now (the simulated incident time) and save it; returns its runner."""
    o = options or DrillOptions()
    sc = scenario if isinstance(scenario, Scenario) else find_scenario(load_scenarios(settings), scenario)
    target = settings.target(database)
    entry, ref = _pick_backup(settings, target.dbname, o.backup)
    if entry.name.pre_restore:
        raise UsageError(f"{entry.filename} is a pre-restore safety copy", "no drill was started",
                         say("regular_backup"))
    if any(p.kind == "selective_restore" for p in sc.phases) and entry.name.format != "custom":
        raise UsageError(f"Scenario {sc.name} restores single tables, which needs a custom-format backup; "
                         f"{entry.filename} is plain SQL", "no drill was started",
                         say("custom_format_backup"))
    for label, value in (("RTO", o.rto_minutes), ("RPO", o.rpo_minutes)):
        if value is not None and not value > 0:
            raise UsageError(f"The {label} budget must be above 0 minutes", "no drill was started", "")
    now = clock()
    drill = Drill(
        id=0, scenario=sc, target_name=target.name, database=target.dbname, backup=entry.filename,
        backup_created=entry.created.timestamp(), started_at=now,
        rto_minutes=float(o.rto_minutes or target.rto_minutes), rpo_minutes=float(o.rpo_minutes or target.rpo_minutes),
        phases=[PhaseRun(i, p.name, p.kind, p.target_minutes, p.activities) for i, p in enumerate(sc.phases)],
        participants=list(o.participants),
        options={"backup_ref": ref, "tables": o.tables, "keep_databases": o.keep_databases,
                 "into_production": o.into_production, "unattended": o.unattended,
                 "backup_format": entry.name.format, "backup_size": entry.size,
                 "pitr_configured": settings.pitr.enabled},
    )
    store = DrillStore(settings.state_dir)
    store.create(drill)
    return DrillRunner(settings, drill, store, clock)


class DrillRunner:
    """Operations on one saved drill. Each one re-reads the state file, changes, saves."""

    def __init__(self, settings: Settings, drill: Drill, store: DrillStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.drill = drill
        self.store = store or DrillStore(settings.state_dir)
        self.clock = clock

    @classmethod
    def open(cls, settings: Settings, drill_id: int | str, clock: Callable[[], float] = time.time) -> DrillRunner:
        """Load a drill; an automated phase whose process has gone is put back to pending."""
        store = DrillStore(settings.state_dir)
        runner = cls(settings, store.load(drill_id), store, clock)
        runner._recover()
        return runner

    # -- plumbing ---------------------------------------------------------------------------
    def reload(self) -> Drill:
        self.drill = self.store.load(self.drill.id)
        return self.drill

    def _update(self, change: Callable[[Drill], Any]) -> Any:
        """Read-modify-write against the state file (one retry when another process saved meanwhile)."""
        for attempt in (1, 2):
            drill = self.store.load(self.drill.id)
            out = change(drill)
            try:
                self.store.save(drill)
            except OpsError:
                if attempt == 2:
                    raise
                continue
            self.drill = drill
            return out
        return None  # pragma: no cover

    def _recover(self) -> None:
        p = self.drill.current
        if p is None or p.status != RUNNING or not p.automated:
            return
        pid, host = p.data.get("pid"), p.data.get("host")
        if not pid or host != socket.gethostname() or process_alive(int(pid)):
            return

        def reset(d: Drill) -> None:
            q = d.phases[p.idx]
            q.status, q.detail = PENDING, f"interrupted: the process running it (pid {pid}) ended; start it again"
            q.data.pop("pid", None)
            d.notes.append({"at": self.clock(), "phase": q.idx, "text": q.detail})

        self._update(reset)

    def _require_open(self, d: Drill) -> PhaseRun:
        if not d.open:
            raise OpsError(f"Drill {d.id} has ended ({d.status})", "nothing was changed",
                           say("export_report", id=d.id))
        if d.paused:
            raise OpsError(f"Drill {d.id} is paused", "nothing was changed", say("resume", id=d.id))
        p = d.current
        if p is None:  # pragma: no cover - an open drill always has a phase left
            raise OpsError(f"Drill {d.id} has no phase left", "nothing was changed", "")
        return p

    # -- phases ---------------------------------------------------------------------------
    def start_phase(self, note: str | None = None, on_event: EventSink | None = None,
                    cancel: CancelToken | None = None) -> PhaseRun:
        """Start the current phase. An automated phase runs here, to its end (minutes, not ms)."""

        def begin(d: Drill) -> PhaseRun:
            p = self._require_open(d)
            if p.status == RUNNING:
                raise OpsError(f"Phase {p.name} is already running", "nothing was changed",
                               "complete or skip it" if not p.automated else "wait for it to finish")
            p.status = RUNNING
            p.started_at = p.started_at or self.clock()
            if p.automated:
                p.data.update(pid=os.getpid(), host=socket.gethostname())
                # The deletion rehearsal never runs in production: it always gets a drill database.
                if p.kind == "selective_restore" or (p.kind == "restore" and not d.options.get("into_production")):
                    name = p.data.get("target_db") or drill_database_name(d, p, self.store.databases_in_use(d.id))
                    p.data["target_db"] = name
                    if name not in d.databases:
                        d.databases.append(name)  # saved first: dropped at the end even if this process dies
            if note:
                d.notes.append({"at": self.clock(), "phase": p.idx, "text": note})
            return p

        p = self._update(begin)
        if not p.automated:
            return p
        emit = on_event or (lambda _e: None)
        total = len(self.drill.phases)
        emit(StepStarted(f"phase{p.idx + 1}", f"Phase {p.idx + 1}/{total}: {p.name}", p.idx + 1, total))
        status, detail, data = self._run_engine(p, on_event, cancel or CancelToken())
        seconds = 0.0

        def end(d: Drill) -> PhaseRun:
            nonlocal seconds
            q = d.phases[p.idx]
            q.data.pop("pid", None)
            q.data.update(data)
            q.detail = detail
            if status is None:  # cancelled: back to pending, time spent so far still counts
                q.status = PENDING
                d.notes.append({"at": self.clock(), "phase": q.idx, "text": f"cancelled: {detail}"})
            else:
                q.status, q.finished_at, q.clock_at_end = status, self.clock(), d.clock(self.clock())
                if status == "SKIP":  # the engine found nothing to run (pitr_latest without [pitr])
                    q.reason = detail
            seconds = d.phase_seconds(q, self.clock()) or 0.0
            return q

        q = self._update(end)
        emit(StepFinished(f"phase{p.idx + 1}", S(status) if status else S.SKIP, detail, seconds))
        self._maybe_finish()
        return q

    def complete_phase(self, note: str | None = None) -> PhaseRun:
        """Complete the running manual phase."""

        def done(d: Drill) -> PhaseRun:
            p = self._require_open(d)
            if p.automated:
                raise OpsError(f"Phase {p.name} is automated and completes by itself", "nothing was changed",
                               say("start_or_skip", id=d.id))
            if p.status != RUNNING:
                raise OpsError(f"Phase {p.name} has not been started", "nothing was changed",
                               say("start_first", id=d.id))
            now = self.clock()
            p.status, p.finished_at, p.clock_at_end = "PASS", now, d.clock(now)
            if note:
                d.notes.append({"at": now, "phase": p.idx, "text": note})
            return p

        p = self._update(done)
        self._maybe_finish()
        return p

    def skip_phase(self, reason: str, note: str | None = None) -> PhaseRun:
        """Skip the current phase; its target time still counts in the projected RTO."""
        if not reason or not reason.strip():
            raise UsageError("A skipped phase needs a reason", "nothing was changed", say("skip_reason"))

        def skip(d: Drill) -> PhaseRun:
            p = self._require_open(d)
            if p.status == RUNNING and p.automated and p.data.get("pid"):
                raise OpsError(f"Phase {p.name} is running in the engine", "nothing was changed",
                               "cancel it where it runs (Esc in the console, Ctrl-C in the terminal)")
            now = self.clock()
            p.status, p.reason, p.finished_at, p.clock_at_end = "SKIP", reason.strip(), now, d.clock(now)
            if note:
                d.notes.append({"at": now, "phase": p.idx, "text": note})
            return p

        p = self._update(skip)
        self._maybe_finish()
        return p

    def add_note(self, text: str, lesson: bool = False, phase: int | None = -1) -> None:
        """A note on the current phase (phase=-1), on a given phase index, or on the drill (None)."""
        text = text.strip()
        if not text:
            return

        def add(d: Drill) -> None:
            if lesson:
                d.lessons.append(text)
                return
            cur = d.current
            idx = (cur.idx if cur else None) if phase == -1 else phase
            d.notes.append({"at": self.clock(), "phase": idx, "text": text})

        self._update(add)

    def pause(self) -> None:
        """Stop the drill clock (and the running phase's timer)."""

        def pause(d: Drill) -> None:
            self._require_open(d)
            cur = d.current
            if cur and cur.status == RUNNING and cur.automated:
                raise OpsError(f"Phase {cur.name} is running in the engine and cannot be paused", "nothing was changed",
                               "wait for it or cancel it where it runs")
            d.status, d.paused_at = "paused", self.clock()

        self._update(pause)

    def resume(self) -> None:
        """Restart the clock of a paused drill (no-op for a running one)."""

        def resume(d: Drill) -> None:
            if d.status != "paused" or d.paused_at is None:
                if not d.open:
                    raise OpsError(f"Drill {d.id} has ended ({d.status})", "nothing was changed", "")
                return
            gap = max(0.0, self.clock() - d.paused_at)
            d.paused_seconds += gap
            cur = d.current
            if cur and cur.status == RUNNING:
                cur.paused_seconds += gap
            d.status, d.paused_at = "running", None

        self._update(resume)

    def abort(self, reason: str) -> None:
        """End the drill without a verdict; drill databases are dropped unless kept."""

        def check(d: Drill) -> None:
            if not d.open:
                raise OpsError(f"Drill {d.id} has already ended ({d.status})", "nothing was changed", "")
            d.notes.append({"at": self.clock(), "phase": None, "text": f"aborted: {reason}"})

        self._update(check)
        self._finish("aborted")

    def run_unattended(self, on_event: EventSink | None = None, cancel: CancelToken | None = None) -> Drill:
        """Run every remaining automated phase for real; manual ones are recorded as skipped."""
        cancel = cancel or CancelToken()
        while self.drill.open and (p := self.drill.current) is not None:
            if self.drill.paused:
                self.resume()
            if p.automated:
                self.start_phase(on_event=on_event, cancel=cancel)
                if cancel.cancelled:
                    self.abort("cancelled by the operator during an unattended run")
                    raise Cancelled("the drill was aborted and its databases dropped")
            else:
                if p.status == RUNNING:
                    self.complete_phase()
                else:
                    self.skip_phase(UNATTENDED_REASON)
        return self.drill

    # -- engine ---------------------------------------------------------------------------
    def _run_engine(self, p: PhaseRun, on_event: EventSink | None,
                    cancel: CancelToken) -> tuple[str | None, str, dict[str, Any]]:
        """(status word or None when cancelled, one-line detail, data for the report)."""
        from opstower_core.drill.engine import run_restore_phase, run_verify_phase
        from opstower_core.drill.pitr_phase import run_pitr_phase

        try:
            if p.kind == "verify":
                return run_verify_phase(self.settings, self.drill, on_event, cancel, self.store.state)
            if p.kind == "pitr_latest":
                return run_pitr_phase(self.settings, self.drill, on_event, cancel)
            return run_restore_phase(self.settings, self.drill, p, on_event, cancel, self.store.state)
        except Cancelled as exc:
            return None, exc.sentence, {}
        except OpsError as exc:
            return "FAIL", exc.sentence, {}

    # -- the end --------------------------------------------------------------------------
    def _maybe_finish(self) -> None:
        if self.drill.open and self.drill.current is None:
            self._finish(None)

    def _finish(self, status: str | None) -> None:
        from opstower_core.drill.engine import drop_drill_databases

        d = self.drill
        cleanup: dict[str, Any] = {"kept": list(d.databases)} if d.options.get("keep_databases") else \
            drop_drill_databases(self.settings, d)
        now = self.clock()

        def finish(x: Drill) -> None:
            x.finished_at = now
            if x.paused_at is not None:
                x.paused_seconds += max(0.0, now - x.paused_at)
                x.paused_at = None
            x.status = status or x.verdict(now)
            x.extra["cleanup"] = cleanup

        self._update(finish)
        d = self.drill
        words = {"passed": "success", "failed": "failed", "aborted": "cancelled"}
        self.store.state.record(
            "drill", d.database, words.get(d.status, d.status), artifact=d.backup, started_at=d.started_at,
            finished_at=d.finished_at, duration_seconds=d.clock(), details=d.summary(),
            error=None if d.status == "passed" else _failure_line(d),
        )


def _failure_line(d: Drill) -> str:
    s = d.summary()
    parts = []
    if d.status == "aborted":
        parts.append("aborted")
    if s["failed_phases"]:
        parts.append("failed phases: " + ", ".join(s["failed_phases"]))
    if not s["rto_met"]:
        parts.append("RTO missed")
    if not s["rpo_met"]:
        parts.append("RPO missed")
    return "; ".join(parts) or d.status
