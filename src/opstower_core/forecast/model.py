"""The restore-time forecast: past restores' steps fitted against bytes, applied to the size now.

Per step, seconds = a + b × bytes by least squares over the recent successful restores of the
database (of any database on this installation when it has none yet); one size only: the
step's throughput (seconds per byte), or its mean for the steps whose cost does not grow with
the data (create, terminate, switch). A step that ran beside others (the swap's pre-restore
backup) counts with the time the run waited for it. The operator's typing (confirmation) is
not forecast. The size is the newest backup's uncompressed dump, moved on by the growth its
predecessors show (bytes per day over the last 30 days).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from opstower_core.config import Settings
from opstower_core.repo.catalog import CatalogEntry, list_catalog
from opstower_core.runs.history import RunRecord, StateStore

MAX_RUNS = 12  # the most recent restores count: the server, the tools and our plan change
GROWTH_WINDOW_DAYS = 30.0
ARTIFACT_STEPS = {"verify", "download"}  # read the compressed artifact
FIXED_STEPS = {"roles", "terminate", "drop_create", "swap"}  # cost does not grow with the data
NOT_FORECAST = {"confirm"}  # the operator's typing is not the machine's time
DEFAULT_RATIO = 3.0  # dump bytes per artifact byte when no run recorded both (zstd on typical data)
TITLES = {
    "verify": "verify the artifact", "download": "download", "roles": "roles", "pre_backup": "pre-restore backup",
    "terminate": "terminate sessions", "drop_create": "create database", "restore": "load",
    "verify_restored": "verify restored (proof)", "analyze": "ANALYZE", "vacuum": "VACUUM", "reindex": "REINDEX",
    "swap": "switch into place",
}


@dataclass
class StepForecast:
    step: str
    seconds: float
    basis: str  # how it was reached: "fit of 3 restores (0.4 s + 120 MiB/s)", "1 restore at 90 MiB/s", …


@dataclass
class RestoreForecast:
    """A predicted restore of `database` now; `seconds` None when nothing was measured to predict from."""

    database: str
    mode: str
    dump_bytes: int | None  # the uncompressed dump the forecast is for
    artifact_bytes: int | None
    seconds: float | None
    rto_minutes: int
    steps: list[StepForecast] = field(default_factory=list)
    runs: int = 0  # past restores it is made from
    growth_bytes_per_day: float | None = None
    reason: str = ""  # why there is no forecast, or what it rests on

    @property
    def known(self) -> bool:
        return self.seconds is not None

    @property
    def minutes(self) -> float | None:
        return None if self.seconds is None else self.seconds / 60.0

    @property
    def rto_fraction(self) -> float | None:
        """Forecast seconds over the RTO budget (0.5: half the RTO)."""
        if self.seconds is None or self.rto_minutes <= 0:
            return None
        return self.seconds / (self.rto_minutes * 60.0)

    def sentence(self) -> str:
        """"restore would take ~3 min of the 240-minute RTO" (the dashboard's words)."""
        if self.seconds is None:
            return f"restore time not forecast: {self.reason}"
        n = self.seconds / 60.0
        amount = f"~{n:.0f} min" if n >= 1.5 else ("~1 min" if n >= 0.75 else f"~{max(1, round(self.seconds))} s")
        return f"restore would take {amount} of the {self.rto_minutes}-minute RTO"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sentence"] = self.sentence()
        d["rto_fraction"] = self.rto_fraction
        return d


# -- the model -----------------------------------------------------------------------------

@dataclass
class _Run:
    mode: str
    dump_bytes: float
    artifact_bytes: float
    steps: dict[str, float]  # step -> seconds on the restore's clock (SKIPped steps left out)


def _runs(records: Sequence[RunRecord]) -> list[_Run]:
    """Successful restores with a step table, newest first; sizes as recorded (older records: estimated)."""
    out: list[tuple[RunRecord, dict[str, float]]] = []
    for rec in records:
        steps = rec.details.get("steps")
        if rec.status != "success" or not isinstance(steps, list) or rec.details.get("mode") == "tables":
            continue
        clock = {}
        for s in steps:
            if not isinstance(s, dict) or s.get("status") == "SKIP" or s.get("step") in NOT_FORECAST:
                continue
            if s.get("after_service"):
                seconds: object = 0.0  # ran once the restored database was in service: off the clock
            else:
                seconds = s.get("waited", s.get("seconds")) if s.get("parallel_with") else s.get("seconds")
            if isinstance(seconds, int | float):
                clock[str(s.get("step"))] = float(seconds)
        out.append((rec, clock))
    both = [(r.details["uncompressed_bytes"], r.size_bytes) for r, _ in out
            if isinstance(r.details.get("uncompressed_bytes"), int) and r.size_bytes]
    ratio = sum(u for u, _ in both) / sum(a for _, a in both) if both else DEFAULT_RATIO
    runs = []
    for rec, clock in out:
        art = float(rec.size_bytes or 0)
        dump = rec.details.get("uncompressed_bytes")
        dump = float(dump) if isinstance(dump, int) and dump > 0 else art * ratio
        if dump > 0:
            runs.append(_Run(str(rec.details.get("mode", "")), dump, art, clock))
    return runs


def _fit(points: list[tuple[float, float]], fixed: bool) -> tuple[float, float]:
    """(a, b) of seconds = a + b × bytes; both kept ≥ 0 (a step never gets faster with more data)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    if fixed:
        return mean_y, 0.0
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if n < 2 or var <= 0:
        return 0.0, (mean_y / mean_x if mean_x > 0 else 0.0)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    a = mean_y - b * mean_x
    if b < 0:
        return mean_y, 0.0
    if a < 0:
        return 0.0, sum(x * y for x, y in points) / sum(x * x for x, _ in points)
    return a, b


def _basis(n: int, a: float, b: float, fixed: bool) -> str:
    runs = f"{n} restore{'s' if n != 1 else ''}"
    if fixed or b == 0:
        return f"mean of {runs}"
    rate = f"{1 / b / 2**20:,.0f} MiB/s" if b > 0 else "?"
    return f"fit of {runs} ({a:.1f} s + {rate})" if a > 0 else f"{runs} at {rate}"


def full_tests(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Full-test verifications as restores: check 8 (a scratch load + proof) as the load step, checks 1-7
    as the artifact's verification. Used only for steps no restore has measured."""
    out = []
    for rec in records:
        secs = rec.details.get("seconds")
        if (rec.kind != "verify" or not rec.details.get("full_test") or rec.status not in ("PASS", "WARN")
                or not isinstance(secs, dict) or "full_restore" not in secs):
            continue
        checks = sum(v for k, v in secs.items() if k != "full_restore" and isinstance(v, int | float))
        steps = [{"step": "restore", "status": "PASS", "seconds": secs["full_restore"]},
                 {"step": "verify", "status": "PASS", "seconds": checks}]
        details = {"mode": "full_test", "uncompressed_bytes": rec.details.get("uncompressed_bytes"), "steps": steps}
        out.append(RunRecord(rec.id, "restore", rec.database, rec.artifact, "success", rec.started_at,
                             rec.finished_at, rec.size_bytes, rec.duration_seconds, None, details))
    return out


def forecast_restore(records: Sequence[RunRecord], database: str, *, dump_bytes: int | None,
                     artifact_bytes: int | None, rto_minutes: int, mode: str = "swap",
                     steps: Sequence[str] | None = None, backup_seconds_per_byte: float | None = None,
                     growth_bytes_per_day: float | None = None, tests: Sequence[RunRecord] = ()) -> RestoreForecast:
    """The forecast for a restore of `dump_bytes` (uncompressed) from the restore `records` (newest first).

    `records` of `database` are used when there are any, else those of the other databases.
    `steps`: the ids the plan will run (default: those of the newest restore in `mode`).
    `backup_seconds_per_byte`: what the pre-restore backup costs where no swap restore measured it.
    """
    own = _runs([r for r in records if r.database == database])[:MAX_RUNS]
    runs = own or _runs(records)[:MAX_RUNS]
    tested = _runs(full_tests(tests))[:MAX_RUNS]
    if not runs and tested:
        runs, own = tested, []
        kind = "full tests"
    else:
        kind = "restores"
    fc = RestoreForecast(database, mode, dump_bytes, artifact_bytes, None, rto_minutes, runs=len(runs),
                         growth_bytes_per_day=growth_bytes_per_day)
    if not runs:
        fc.reason = "no restore, drill or full test has been recorded yet (run a drill)"
        return fc
    if not dump_bytes:
        fc.reason = "the database's size is not known (no backup with metadata)"
        return fc
    art = float(artifact_bytes or dump_bytes / DEFAULT_RATIO)
    if steps is None:
        template = next((r for r in runs if r.mode == mode), runs[0])
        steps = list(template.steps)
        if mode == "in_place" and "pre_backup" not in steps:
            # In place, the live database is dropped only after its copy exists: the clock waits for it.
            # (A swap takes its copy after the switch, from the kept database: off the clock.)
            steps.insert(0, "pre_backup")
    for step in steps:
        if step in NOT_FORECAST:
            continue
        x = art if step in ARTIFACT_STEPS else float(dump_bytes)
        points = [(r.artifact_bytes if step in ARTIFACT_STEPS else r.dump_bytes, r.steps[step])
                  for r in runs if step in r.steps]
        if not points:  # a full test's load stands in for a step no restore has measured
            points = [(r.artifact_bytes if step in ARTIFACT_STEPS else r.dump_bytes, r.steps[step])
                      for r in tested if step in r.steps]
        if points:
            fixed = step in FIXED_STEPS
            a, b = _fit(points, fixed)
            fc.steps.append(StepForecast(step, round(a + b * x, 3), _basis(len(points), a, b, fixed)))
        else:
            fc.steps.append(StepForecast(step, 0.0, "not measured yet"))
    pre = next((s for s in fc.steps if s.step == "pre_backup" and s.basis == "not measured yet"), None)
    if pre is not None and backup_seconds_per_byte:
        pre.seconds = round(backup_seconds_per_byte * float(dump_bytes), 3)
        pre.basis = f"backups at {1 / backup_seconds_per_byte / 2**20:,.0f} MiB/s"
    total = sum(s.seconds for s in fc.steps)
    fc.seconds = total
    who = "its own" if own else "other databases'" if kind == "restores" else "its"
    fc.reason = f"from {len(runs)} of {who} past {kind}, for a {dump_bytes / 2**20:,.0f} MiB dump"
    return fc


# -- what the database weighs now ----------------------------------------------------------

def size_now(entries: Sequence[CatalogEntry], now: float | None = None) -> tuple[int | None, int | None, float | None]:
    """(dump bytes, artifact bytes, growth in dump bytes per day) of the database now.

    The newest backup's metadata, moved on to `now` by the growth of the backups of the last 30
    days (least squares); never below half the newest size (a shrink is not extrapolated far)."""
    now = time.time() if now is None else now
    points = []
    for e in entries:
        meta = e.meta or {}
        dump = meta.get("uncompressed_bytes")
        if isinstance(dump, int) and dump > 0 and not e.name.pre_restore and not meta.get("tables"):
            points.append((e.created.timestamp(), float(dump), float(meta.get("size_bytes") or e.size)))
    if not points:
        return None, None, None
    points.sort()
    t_last, dump_last, art_last = points[-1]
    recent = [(t, d) for t, d, _ in points if t >= t_last - GROWTH_WINDOW_DAYS * 86400]
    growth = None
    if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
        mt = sum(t for t, _ in recent) / len(recent)
        md = sum(d for _, d in recent) / len(recent)
        var = sum((t - mt) ** 2 for t, _ in recent)
        growth = sum((t - mt) * (d - md) for t, d in recent) / var * 86400 if var > 0 else None
    days = max(0.0, (now - t_last) / 86400)
    dump = max(dump_last * 0.5, dump_last + (growth or 0.0) * days)
    return int(dump), int(art_last * dump / dump_last), growth


def backup_seconds_per_byte(entries: Sequence[CatalogEntry]) -> float | None:
    """What a backup costs per dump byte, from the newest backups' metadata (duration / dump size)."""
    rates = []
    for e in entries[:5]:
        meta = e.meta or {}
        dump, secs = meta.get("uncompressed_bytes"), meta.get("duration_seconds")
        if isinstance(dump, int) and dump > 0 and isinstance(secs, int | float) and secs > 0:
            rates.append(float(secs) / dump)
    return sorted(rates)[len(rates) // 2] if rates else None


def forecast_target(settings: Settings, target_name: str | None = None, *, state: StateStore | None = None,
                    entries: Sequence[CatalogEntry] | None = None, now: float | None = None,
                    mode: str = "swap") -> RestoreForecast:
    """The forecast for the configured target now (the dashboard's and `health`'s): its local backups'
    metadata for the size and growth, the run history for the steps. Reads files only."""
    target = settings.target(target_name)
    db = target.dbname
    if entries is None:
        entries = [e for e in list_catalog(settings, database=db, include_s3=False).entries
                   if e.database == db and not e.name.pre_restore]
    state = state or StateStore(settings.state_dir)
    dump, art, growth = size_now(entries, now)
    records = state.runs("restore", limit=200)
    return forecast_restore(records, db, dump_bytes=dump, artifact_bytes=art, rto_minutes=target.rto_minutes,
                            mode=mode, backup_seconds_per_byte=backup_seconds_per_byte(entries),
                            growth_bytes_per_day=growth, tests=state.runs("verify", db, limit=50))
