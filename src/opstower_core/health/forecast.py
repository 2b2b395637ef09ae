"""The restore-time forecast as a health check: WARNING past half the RTO, CRITICAL past the RTO."""

from __future__ import annotations

from collections.abc import Sequence

from opstower_core.config import Settings
from opstower_core.forecast import forecast_target
from opstower_core.health.checks import HealthCheck, HealthState
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.runs.history import StateStore

WARN_FRACTION = 0.5  # a restore needing more than half the RTO leaves no room for a second attempt


def check_restore_forecast(settings: Settings, target_name: str, entries: Sequence[CatalogEntry],
                           state: StateStore | None, now: float, state_problem: str | None) -> HealthCheck:
    db = settings.target(target_name).dbname
    if state is None:
        return HealthCheck("restore_forecast", db, HealthState.UNKNOWN, f"not forecast: {state_problem}")
    local = [e for e in entries if e.local_path is not None and e.meta]
    fc = forecast_target(settings, target_name, state=state, entries=local or entries, now=now)
    metrics = {"forecast_seconds": round(fc.seconds, 1) if fc.seconds is not None else None,
               "rto_seconds": fc.rto_minutes * 60, "runs": fc.runs}
    if not fc.known:
        return HealthCheck("restore_forecast", db, HealthState.UNKNOWN, fc.sentence(), metrics=metrics)
    fraction = fc.rto_fraction or 0.0
    state_ = (HealthState.CRITICAL if fraction > 1 else HealthState.WARNING if fraction > WARN_FRACTION
              else HealthState.OK)
    detail = f"{fc.sentence()} ({fraction:.0%}; {fc.reason})"
    if state_ != HealthState.OK:
        detail += ("; past the RTO: restore from a smaller target, move to physical recovery or faster storage, "
                   "or raise the RTO" if fraction > 1 else "; half the RTO gone before any retry")
    return HealthCheck("restore_forecast", db, state_, detail, metrics=metrics)
