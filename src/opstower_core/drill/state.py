"""A drill's state and its timing, saved in the SQLite state file after every change.

Two tables beside the run history (`drills`, `drill_phases`) hold everything a drill needs
to be resumed by another process: the scenario as it was when the drill started (a later
edit of the scenario file does not rewrite history), participants, options, each phase's
times, notes and engine results.

Timing: the drill clock starts at the drill's start (the simulated incident) and stops
while the drill is paused. A phase's actual time runs from its first start to its end,
without paused time. A skipped phase counts with its target time in the projected RTO, so
skipping a phase never makes a drill look faster than it would be.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opstower_core.drill.remedies import say
from opstower_core.drill.scenarios import Scenario
from opstower_core.errors import OpsError
from opstower_core.fmt import duration
from opstower_core.runs.history import StateStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scenario_id TEXT NOT NULL,
    scenario_name TEXT NOT NULL,
    scenario TEXT NOT NULL,          -- JSON snapshot of the scenario at start
    target_name TEXT NOT NULL,
    database TEXT NOT NULL,
    backup TEXT NOT NULL,            -- artifact file name
    backup_created REAL NOT NULL,    -- unix seconds, from the artifact's name
    status TEXT NOT NULL,            -- running, paused, passed, failed, aborted
    started_at REAL NOT NULL,
    finished_at REAL,
    paused_at REAL,
    paused_seconds REAL NOT NULL DEFAULT 0,
    rto_minutes REAL NOT NULL,
    rpo_minutes REAL NOT NULL,
    participants TEXT NOT NULL,      -- JSON [{name, role}]
    options TEXT NOT NULL,           -- JSON: tables, keep_databases, into_production, unattended
    notes TEXT NOT NULL,             -- JSON [{at, phase, text}]
    lessons TEXT NOT NULL,           -- JSON [text]
    databases TEXT NOT NULL,         -- JSON: drill databases created (dropped at the end unless kept)
    extra TEXT NOT NULL,             -- JSON: cleanup results and anything else for the report
    version INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_started ON drills(started_at);
CREATE TABLE IF NOT EXISTS drill_phases (
    drill_id INTEGER NOT NULL REFERENCES drills(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    target_minutes REAL NOT NULL,
    activities TEXT NOT NULL,
    status TEXT NOT NULL,            -- pending, running, PASS, WARN, FAIL, SKIP
    started_at REAL,
    finished_at REAL,
    paused_seconds REAL NOT NULL DEFAULT 0,
    clock_at_end REAL,               -- drill clock when the phase ended: the cumulative column
    reason TEXT,                     -- why it was skipped
    detail TEXT,                     -- one line: what the engine said
    data TEXT NOT NULL,              -- JSON: engine results (restore timing, verification checks)
    PRIMARY KEY (drill_id, idx)
);
"""

PENDING, RUNNING = "pending", "running"
PHASE_DONE = ("PASS", "WARN", "FAIL", "SKIP")
DRILL_OPEN = ("running", "paused")


@dataclass
class Participant:
    name: str
    role: str = "participant"

    @classmethod
    def parse(cls, text: str) -> Participant:
        """"Name:Role" (the role is optional)."""
        name, _, role = text.partition(":")
        if not name.strip():
            raise OpsError(f"Participant {text!r} has no name", "no drill was started", 'write it as "Name:Role"')
        return cls(name.strip(), role.strip() or "participant")


@dataclass
class PhaseRun:
    """One phase of one drill: its target, times, outcome and engine results."""

    idx: int
    name: str
    kind: str
    target_minutes: float
    activities: str = ""
    status: str = PENDING
    started_at: float | None = None
    finished_at: float | None = None
    paused_seconds: float = 0.0
    clock_at_end: float | None = None
    reason: str | None = None
    detail: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def automated(self) -> bool:
        return self.kind != "manual"

    @property
    def done(self) -> bool:
        return self.status in PHASE_DONE

    @property
    def target_seconds(self) -> float:
        return self.target_minutes * 60.0


@dataclass
class Drill:
    """A drill as saved; timing helpers take `now` (unix seconds) so they are easy to test."""

    id: int
    scenario: Scenario
    target_name: str
    database: str
    backup: str
    backup_created: float
    started_at: float
    rto_minutes: float
    rpo_minutes: float
    phases: list[PhaseRun]
    status: str = "running"
    finished_at: float | None = None
    paused_at: float | None = None
    paused_seconds: float = 0.0
    participants: list[Participant] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    lessons: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = 0

    # -- state --------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return self.status in DRILL_OPEN

    @property
    def paused(self) -> bool:
        return self.status == "paused"

    @property
    def current(self) -> PhaseRun | None:
        """The phase running now, or the next one to start; None when all have ended."""
        for p in self.phases:
            if not p.done:
                return p
        return None

    # -- clocks -------------------------------------------------------------------------
    def _stop(self, now: float | None) -> float:
        if self.finished_at is not None:
            return self.finished_at
        if self.paused_at is not None:
            return self.paused_at
        return time.time() if now is None else now

    def clock(self, now: float | None = None) -> float:
        """Seconds of drill time since the incident (drill start), pauses excluded."""
        return max(0.0, self._stop(now) - self.started_at - self.paused_seconds)

    def phase_seconds(self, p: PhaseRun, now: float | None = None) -> float | None:
        """Actual seconds spent in a phase (None before it started)."""
        if p.started_at is None:
            return None
        end = p.finished_at if p.finished_at is not None else self._stop(now)
        return max(0.0, end - p.started_at - p.paused_seconds)

    def over_budget(self, p: PhaseRun, now: float | None = None) -> bool:
        spent = self.phase_seconds(p, now)
        return spent is not None and p.status != "SKIP" and spent > p.target_seconds

    # -- objectives ---------------------------------------------------------------------
    @property
    def rto_seconds_target(self) -> float:
        return self.rto_minutes * 60.0

    @property
    def rpo_seconds_target(self) -> float:
        return self.rpo_minutes * 60.0

    def skipped_target_seconds(self) -> float:
        return sum(p.target_seconds for p in self.phases if p.status == "SKIP")

    def rto_seconds(self, now: float | None = None) -> float:
        """Projected recovery time: the drill clock plus the targets of skipped phases."""
        return self.clock(now) + self.skipped_target_seconds()

    @property
    def backup_age_seconds(self) -> float:
        """The logical dump's age at the incident (drill start): the data a restore of it loses, assumed."""
        return max(0.0, self.started_at - self.backup_created)

    @property
    def rpo_measurement(self) -> dict[str, Any] | None:
        """What the last point-in-time recovery phase measured: the heartbeat it read back and its age."""
        for p in reversed(self.phases):
            m = p.data.get("pitr") or {}
            if p.status in ("PASS", "WARN") and m.get("window_seconds") is not None:
                return m
        return None

    @property
    def rpo_measured(self) -> bool:
        return self.rpo_measurement is not None

    @property
    def rpo_seconds(self) -> float:
        """Achieved RPO: the data-loss window measured by a recovery to latest when one read a heartbeat
        back, else the restored logical dump's age at the incident (assumed, not measured)."""
        m = self.rpo_measurement
        return max(0.0, float(m["window_seconds"])) if m else self.backup_age_seconds

    def _rpo_unmeasured_reason(self) -> str:
        pitr = [p for p in self.phases if p.kind == "pitr_latest"]
        ran = [p for p in pitr if p.done]
        if any((p.data.get("pitr") or {}).get("configured") is False for p in ran) \
                or self.options.get("pitr_configured") is False:
            return "point-in-time recovery not configured"
        if any(p.status == "FAIL" for p in ran):
            return "the recovery to latest failed"
        if any((p.data.get("pitr") or {}).get("heartbeat") is None and p.status in ("PASS", "WARN") for p in ran):
            return "no heartbeat in the recovered database (schedule the minute heartbeat for it)"
        if pitr and not ran:
            return "the recovery to latest has not run yet"
        if pitr:
            return "the recovery to latest was skipped"
        if self.options.get("pitr_configured"):
            return "this scenario has no recovery to latest (a pitr_latest phase)"
        return "no recovery to latest ran"

    @property
    def rpo_basis(self) -> str:
        """One sentence: what the RPO figure is based on (a measurement, or the dump age assumed)."""
        m = self.rpo_measurement
        if m:
            live = m.get("live_age_seconds")
            return (f"RPO measured: the newest heartbeat recovered from the WAL archive ({m['heartbeat']}) was "
                    f"{duration(m['window_seconds'])} old when read back"
                    + (f"; the live server's heartbeat was {duration(live)} old at that moment" if live is not None
                       else f"; the live server's heartbeat could not be read ({m.get('live_note') or 'none'})"))
        return (f"RPO not measured: {self._rpo_unmeasured_reason()}; assumed from the age of the logical dump "
                f"{self.backup} at the incident ({duration(self.backup_age_seconds)})")

    def rto_met(self, now: float | None = None) -> bool:
        """Recovered within the target. A failed automated phase means nothing was recovered:
        the RTO is missed however quickly that failure came."""
        if any(p.status == "FAIL" and p.kind != "manual" for p in self.phases):
            return False
        return self.rto_seconds(now) <= self.rto_seconds_target

    @property
    def rpo_met(self) -> bool:
        return self.rpo_seconds <= self.rpo_seconds_target

    @property
    def failed_phases(self) -> list[PhaseRun]:
        return [p for p in self.phases if p.status == "FAIL"]

    def verdict(self, now: float | None = None) -> str:
        """"passed" or "failed": every phase that ran passed, and both objectives were met."""
        return "passed" if self.rto_met(now) and self.rpo_met and not self.failed_phases else "failed"

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """The numbers the history, the dashboard and the notification need (JSON-ready)."""
        return {
            "drill_id": self.id, "scenario": self.scenario.id, "scenario_name": self.scenario.name,
            "database": self.database, "backup": self.backup, "status": self.status,
            "rto_seconds": round(self.rto_seconds(now), 3), "measured_seconds": round(self.clock(now), 3),
            "rto_target_seconds": self.rto_seconds_target, "rto_met": self.rto_met(now),
            "rpo_seconds": round(self.rpo_seconds, 3), "rpo_target_seconds": self.rpo_seconds_target,
            "rpo_met": self.rpo_met, "rpo_measured": self.rpo_measured, "rpo_basis": self.rpo_basis,
            "backup_age_seconds": round(self.backup_age_seconds, 3), "failed_phases": [p.name for p in self.failed_phases],
            "skipped_phases": [p.name for p in self.phases if p.status == "SKIP"],
            "over_budget_phases": [p.name for p in self.phases if self.over_budget(p, now)],
        }

    def notes_for(self, idx: int | None) -> list[dict[str, Any]]:
        return [n for n in self.notes if n.get("phase") == idx]


class DrillStore:
    """Drills in the state file (`StateStore(settings.state_dir).path`)."""

    def __init__(self, state_dir: Path) -> None:
        self.state = StateStore(state_dir)
        self.path = self.state.path
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.state.connect(rows=True)

    def create(self, drill: Drill) -> Drill:
        """Insert a new drill; sets and returns it with its id."""
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO drills(scenario_id, scenario_name, scenario, target_name, database, backup, backup_created,"
                " status, started_at, rto_minutes, rpo_minutes, participants, options, notes, lessons, databases, extra,"
                " version, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?)",
                (drill.scenario.id, drill.scenario.name, json.dumps(drill.scenario.to_dict()), drill.target_name,
                 drill.database, drill.backup, drill.backup_created, drill.status, drill.started_at,
                 drill.rto_minutes, drill.rpo_minutes, "[]", "{}", "[]", "[]", "[]", "{}", time.time()),
            )
            drill.id = int(cur.lastrowid or 0)
        drill.version = 0
        self.save(drill)
        return drill

    def save(self, drill: Drill) -> None:
        """Write the whole drill; refuses when another process saved it since it was loaded."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE drills SET status=?, finished_at=?, paused_at=?, paused_seconds=?, participants=?, options=?,"
                " notes=?, lessons=?, databases=?, extra=?, rto_minutes=?, rpo_minutes=?, version=version+1,"
                " updated_at=? WHERE id=? AND version=?",
                (drill.status, drill.finished_at, drill.paused_at, drill.paused_seconds,
                 json.dumps([asdict(p) for p in drill.participants]), json.dumps(drill.options, default=str),
                 json.dumps(drill.notes, default=str), json.dumps(drill.lessons), json.dumps(drill.databases),
                 json.dumps(drill.extra, default=str), drill.rto_minutes, drill.rpo_minutes, time.time(),
                 drill.id, drill.version),
            )
            if cur.rowcount != 1:
                raise OpsError(f"Drill {drill.id} was changed by another console or command meanwhile",
                               "this change was not saved", say("look_again", id=drill.id))
            for p in drill.phases:
                db.execute(
                    "INSERT INTO drill_phases(drill_id, idx, name, kind, target_minutes, activities, status, started_at,"
                    " finished_at, paused_seconds, clock_at_end, reason, detail, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(drill_id, idx) DO UPDATE SET status=excluded.status, started_at=excluded.started_at,"
                    " finished_at=excluded.finished_at, paused_seconds=excluded.paused_seconds,"
                    " clock_at_end=excluded.clock_at_end, reason=excluded.reason, detail=excluded.detail,"
                    " data=excluded.data",
                    (drill.id, p.idx, p.name, p.kind, p.target_minutes, p.activities, p.status, p.started_at,
                     p.finished_at, p.paused_seconds, p.clock_at_end, p.reason, p.detail,
                     json.dumps(p.data, default=str)),
                )
        drill.version += 1

    def load(self, drill_id: int | str) -> Drill:
        """The drill with this id; OpsError when there is none."""
        try:
            key = int(str(drill_id).lstrip("#"))
        except ValueError:
            raise OpsError(f"{drill_id!r} is not a drill id", "nothing was changed",
                           "drill ids are numbers: " + say("drill_list")) from None
        with self._connect() as db:
            row = db.execute("SELECT * FROM drills WHERE id = ?", (key,)).fetchone()
            phases = db.execute("SELECT * FROM drill_phases WHERE drill_id = ? ORDER BY idx", (key,)).fetchall()
        if row is None:
            raise OpsError(f"No drill {key} in {self.path}", "nothing was changed", say("drill_list"))
        return _from_rows(row, phases)

    def version(self, drill_id: int) -> int | None:
        """The saved version of a drill: cheap enough to poll from the console."""
        with self._connect() as db:
            row = db.execute("SELECT version FROM drills WHERE id = ?", (drill_id,)).fetchone()
        return int(row[0]) if row else None

    def databases_in_use(self, exclude_id: int) -> set[str]:
        """Drill database names recorded by other drills (running, or kept at their end)."""
        with self._connect() as db:
            rows = db.execute("SELECT databases FROM drills WHERE id != ?", (exclude_id,)).fetchall()
        return {name for (names,) in rows for name in json.loads(names or "[]")}

    def recent(self, limit: int = 200) -> list[Drill]:
        """Drills, newest first."""
        with self._connect() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM drills ORDER BY started_at DESC, id DESC LIMIT ?",
                                            (limit,))]
        return [self.load(i) for i in ids]


def _from_rows(row: sqlite3.Row, phases: list[sqlite3.Row]) -> Drill:
    return Drill(
        id=row["id"], scenario=Scenario.from_dict(json.loads(row["scenario"])), target_name=row["target_name"],
        database=row["database"], backup=row["backup"], backup_created=row["backup_created"],
        started_at=row["started_at"], rto_minutes=row["rto_minutes"], rpo_minutes=row["rpo_minutes"],
        phases=[PhaseRun(idx=p["idx"], name=p["name"], kind=p["kind"], target_minutes=p["target_minutes"],
                         activities=p["activities"], status=p["status"], started_at=p["started_at"],
                         finished_at=p["finished_at"], paused_seconds=p["paused_seconds"],
                         clock_at_end=p["clock_at_end"], reason=p["reason"], detail=p["detail"],
                         data=json.loads(p["data"] or "{}")) for p in phases],
        status=row["status"], finished_at=row["finished_at"], paused_at=row["paused_at"],
        paused_seconds=row["paused_seconds"],
        participants=[Participant(**p) for p in json.loads(row["participants"])],
        options=json.loads(row["options"]), notes=json.loads(row["notes"]), lessons=json.loads(row["lessons"]),
        databases=json.loads(row["databases"]), extra=json.loads(row["extra"]), version=row["version"],
    )
