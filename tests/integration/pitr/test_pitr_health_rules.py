"""health's PITR thresholds on a PitrStatus as pitr_status returns it (no server needed for the rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opstower_core.config import PitrSettings, Settings
from opstower_core.health.checks import HealthState, check_pitr
from opstower_core.health.run import HealthReport
from opstower_core.pitr import BaseBackup, PitrStatus

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SETTINGS = Settings(pitr=PitrSettings(server_name="srv", enabled=True))


def _status(**archiver) -> PitrStatus:
    done = BaseBackup("20261130T100000", NOW - timedelta(hours=2), NOW - timedelta(hours=2), "000000010000000000000002",
                      "000000010000000000000002", "0/2000028", "0/2000100", 1, 1, "DONE")
    a = {"failing": False, "failed_count": 0, "last_archived_wal": "000000010000000000000009",
         "last_failed_wal": None, "last_failed_time": None, **archiver}
    return PitrStatus(backups=[done], segments=8, timelines=[1], earliest=done.end_time, latest=NOW,
                      archiver=a, lag_seconds=0.0)


def _states(st: PitrStatus) -> dict[str, HealthState]:
    return {c.check: c.state for c in check_pitr(SETTINGS, st)}


def test_lag_over_five_minutes_warns_and_a_failing_archiver_is_critical():
    assert _states(_status()) == {"pitr_archive": HealthState.OK, "pitr_archiver": HealthState.OK}
    lagging = _status()
    lagging.lag_seconds = 301
    assert _states(lagging)["pitr_archiver"] == HealthState.WARNING
    report = HealthReport(HealthState.WARNING, "WARNING", check_pitr(SETTINGS, lagging), 0.0)
    assert "'pitr:srv_archive_lag'=301s;300;" in report.perfdata()
    lagging.lag_seconds = 299
    assert _states(lagging)["pitr_archiver"] == HealthState.OK
    failing = _status(failing=True, failed_count=3, last_failed_wal="00000001000000000000000A",
                      last_failed_time=NOW.isoformat())
    checks = {c.check: c for c in check_pitr(SETTINGS, failing)}
    assert checks["pitr_archiver"].state == HealthState.CRITICAL and "00000001000000000000000A" in checks["pitr_archiver"].detail


def test_no_base_backup_warns_an_unreachable_server_is_unknown_and_an_unreadable_archive_warns():
    st = _status()
    st.backups = []
    st.archiver, st.archiver_error = None, "OperationalError: connection refused"
    states = _states(st)
    assert states == {"pitr_archive": HealthState.WARNING, "pitr_archiver": HealthState.UNKNOWN}
    assert [c.state for c in check_pitr(SETTINGS, None, "listing failed")] == [HealthState.WARNING]
