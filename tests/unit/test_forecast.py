"""The forecast's arithmetic on recorded runs (no server): fits, growth, the parallel step's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opstower_core.artifacts.names import ArtifactName
from opstower_core.forecast import forecast_restore
from opstower_core.forecast.model import size_now
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.runs.history import RunRecord

MIB = 2**20


def _run(i: int, dump: int, steps: list[dict], db: str = "app", mode: str = "new_db") -> RunRecord:
    return RunRecord(i, "restore", db, f"a{i}", "success", 1000.0 + i, None, dump // 3, 1.0, None,
                     {"mode": mode, "uncompressed_bytes": dump, "steps": steps})


def test_two_sizes_give_a_line_and_fixed_steps_their_mean():
    runs = [_run(1, 100 * MIB, [{"step": "restore", "status": "PASS", "seconds": 11.0},
                                {"step": "swap", "status": "PASS", "seconds": 0.2},
                                {"step": "reindex", "status": "SKIP", "seconds": 0.0},
                                {"step": "confirm", "status": "PASS", "seconds": 30.0}]),
            _run(2, 300 * MIB, [{"step": "restore", "status": "PASS", "seconds": 31.0},
                                {"step": "swap", "status": "PASS", "seconds": 0.4}])]
    fc = forecast_restore(runs, "app", dump_bytes=1000 * MIB, artifact_bytes=None, rto_minutes=10, mode="new_db")
    steps = {s.step: s.seconds for s in fc.steps}
    assert steps == {"restore": 101.0, "swap": 0.3}  # 1 s + 0.1 s/MiB; the typed confirmation is not forecast
    assert abs(fc.seconds - 101.3) < 1e-6 and fc.rto_fraction == 101.3 / 600
    assert fc.sentence() == "restore would take ~2 min of the 10-minute RTO"


def test_own_runs_win_and_a_parallel_step_counts_what_was_waited_for():
    other = _run(1, 100 * MIB, [{"step": "restore", "status": "PASS", "seconds": 99.0}], db="other")
    own = _run(2, 100 * MIB, [{"step": "restore", "status": "PASS", "seconds": 10.0},
                              {"step": "pre_backup", "status": "PASS", "seconds": 8.0,
                               "parallel_with": ["restore"], "waited": 0.5}], mode="swap")
    fc = forecast_restore([own, other], "app", dump_bytes=200 * MIB, artifact_bytes=None, rto_minutes=240)
    assert fc.runs == 1 and {s.step: s.seconds for s in fc.steps} == {"restore": 20.0, "pre_backup": 1.0}


def test_pre_backup_estimated_from_backups_in_place_and_off_the_clock_in_a_swap():
    run = _run(1, 100 * MIB, [{"step": "restore", "status": "PASS", "seconds": 10.0}])
    rate = 12.0 / (100 * MIB)
    fc = forecast_restore([run], "app", dump_bytes=100 * MIB, artifact_bytes=None, rto_minutes=240, mode="in_place",
                          backup_seconds_per_byte=rate)
    assert {s.step: round(s.seconds, 3) for s in fc.steps} == {"pre_backup": 12.0, "restore": 10.0}
    # A swap takes its copy after the switch, from the kept database: nothing on the clock for it.
    fc = forecast_restore([run], "app", dump_bytes=100 * MIB, artifact_bytes=None, rto_minutes=240, mode="swap",
                          backup_seconds_per_byte=rate)
    assert {s.step: round(s.seconds, 3) for s in fc.steps} == {"restore": 10.0}


def _entry(days_ago: float, dump: int, now: datetime) -> CatalogEntry:
    name = ArtifactName.new("app", "custom", when=now - timedelta(days=days_ago))
    return CatalogEntry(name, dump // 3, meta={"uncompressed_bytes": dump, "size_bytes": dump // 3,
                                               "date": (now - timedelta(days=days_ago)).isoformat()})


def test_size_now_projects_the_growth_of_the_last_backups():
    now = datetime.now(UTC).replace(microsecond=0)
    entries = [_entry(d, int((1000 - 10 * d) * MIB), now) for d in (2, 4, 6, 8)]
    dump, art, growth = size_now(entries, now.timestamp())
    assert abs(growth - 10 * MIB) < MIB / 100  # 10 MiB a day
    assert abs(dump - 1000 * MIB) < MIB / 10 and abs(art - dump / 3) < 2


def test_full_tests_stand_in_when_no_restore_was_measured():
    test = RunRecord(7, "verify", "app", "a7", "PASS", 1000.0, None, 30 * MIB, 9.0, None,
                     {"full_test": True, "uncompressed_bytes": 100 * MIB,
                      "seconds": {"exists": 0.01, "compression": 0.5, "content": 0.49, "full_restore": 8.0}})
    fc = forecast_restore([], "app", dump_bytes=200 * MIB, artifact_bytes=60 * MIB, rto_minutes=240, mode="new_db",
                          tests=[test])
    assert fc.known and "full tests" in fc.reason
    assert {s.step: round(s.seconds, 2) for s in fc.steps} == {"restore": 16.0, "verify": 2.0}
