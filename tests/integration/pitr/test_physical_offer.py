"""The physical path beside a restore (issue 18): predicted from a real recovery, compared with the
restore's forecast from a real restore, offered only when clearly faster and said honestly.

One drill (a restore phase and a recovery to latest, about 30 s) makes the records; the rest reads them.
"""

from __future__ import annotations

import pytest

from opstower_core import advice
from opstower_core.backup import run_backup
from opstower_core.drill import DrillOptions, Phase, Scenario, start_drill
from opstower_core.forecast import ArchiveNow, compare, forecast_restore, physical_offer, recovery_runs
from opstower_core.forecast.physical import recorded_recoveries
from opstower_core.pitr import pitr_status, take_base_backup
from opstower_core.pitr.barman import key_root
from opstower_core.runs.history import StateStore
from opstower_core.storage.s3 import store_for

BOTH = Scenario("restore_and_latest", "Restore, then recovery to latest",
                (Phase("Restore", 10, "restore"), Phase("Recovery to latest", 10, "pitr_latest")))


@pytest.fixture(scope="module")
def measured(pitr_env):
    """A real restore and a real recovery to latest, recorded by one drill; the archive's status after it."""
    s = pitr_env.settings
    with pitr_env.conn("app") as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        c.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
        c.execute("CREATE INDEX ON items (note)")
    dump = run_backup(s)
    take_base_backup(s, s.target())
    pitr_env.switch_wal()
    drill = start_drill(s, BOTH, options=DrillOptions(unattended=True)).run_unattended()
    # WARN: no heartbeat in app (no RPO measured), the recovery itself complete
    assert [p.status for p in drill.phases] in (["PASS", "PASS"], ["PASS", "WARN"]), \
        [(p.status, p.detail) for p in drill.phases]
    state = StateStore(s.state_dir)
    restores = state.runs("restore", limit=200)
    assert restores and restores[0].status == "success"
    return pitr_env, dump, drill, state, restores, pitr_status(s)


def _sizer(settings):
    """A base backup's bytes in S3 (barman-cloud's listing leaves its size empty)."""
    return lambda backup_id: sum(o.size for o in store_for(settings.s3).iter_objects(
        f"{key_root(settings)}base/{backup_id}/"))


def _logical(restores, dump_bytes: int, artifact_bytes: int):
    return forecast_restore(restores, "app", dump_bytes=dump_bytes, artifact_bytes=artifact_bytes,
                            rto_minutes=240, mode="new_db")


def test_a_small_database_restores_faster_than_a_recovery_so_nothing_is_offered(measured):
    env, dump, drill, state, restores, status = measured
    calls = []
    logical = _logical(restores, dump.meta["uncompressed_bytes"], dump.meta["size_bytes"])
    assert logical.known

    def read():
        calls.append(1)
        return status

    offer = physical_offer(state, "app", logical, read, env.settings.pitr.server_name, _sizer(env.settings))
    assert calls == [1]
    assert not offer.offered and offer.sentence is None
    assert offer.reason.startswith("not offered: a recovery to latest would not be clearly faster (~")
    assert offer.reason.endswith("; offered under 80% of it)")
    assert offer.physical_seconds > logical.seconds and offer.runs == 1
    # The prediction for the same base backup is the measured recovery (a start-up, WAL replay and
    # promotion, then a base backup download), within what the WAL archived since may add.
    measured_s = next(st["seconds"] for st in drill.phases[1].data["pitr"]["steps"] if st["step"] == "fetch_base") + \
        next(st["seconds"] for st in drill.phases[1].data["pitr"]["steps"] if st["step"] == "replay")
    assert 0.5 * measured_s <= offer.physical_seconds <= 2.5 * measured_s, (offer.physical_seconds, measured_s)
    assert offer.archive is not None and offer.archive.backup_id == drill.phases[1].data["pitr"]["backup_id"]
    assert offer.archive.base_bytes > 2**20 and offer.archive.wal_bytes >= 2**24, offer.archive
    assert "download at " in offer.basis and "start + replay" in offer.basis and offer.archive.backup_id in offer.basis


def test_a_database_grown_large_is_offered_the_physical_path_with_its_limits_said(measured):
    """Same records, the database 2 GiB larger: the restore's cost grows with the dump (index builds),
    the recovery's with the bytes to copy; the offer names how to use it and what it is not."""
    env, dump, _drill, state, restores, status = measured
    runs = recovery_runs(recorded_recoveries(state, env.settings.pitr.server_name), status.backups,
                         _sizer(env.settings))
    assert len(runs) == 1 and runs[0].wal_bytes > 0 and runs[0].fetch_seconds > 0 and runs[0].base_bytes > 0
    grown = 2 * 2**30
    logical = _logical(restores, dump.meta["uncompressed_bytes"] + grown, dump.meta["size_bytes"] + grown // 3)
    now = ArchiveNow(runs[0].backup_id, runs[0].base_bytes + 3 * grown // 2, runs[0].wal_bytes)
    before = advice.current_face()
    try:
        offer = compare("app", logical, runs, now)
        assert offer.offered and offer.ratio is not None and offer.ratio <= 0.8, offer.as_dict()
        assert offer.reason.startswith("offered: a recovery to latest would take")
        assert "recovers the whole cluster as a new server" in offer.sentence
        assert "keep the cluster (--keep)" in offer.sentence
        assert "copying app back out of it would take longer than this restore" in offer.sentence
        advice.set_face("console")
        console = compare("app", logical, runs, now).sentence
        assert "k, Keep as server" in console and "--" not in console
    finally:
        advice.set_face(before)


def test_nothing_measured_or_no_archive_is_said_and_no_archive_is_listed_for_nothing(measured, tmp_path):
    env, dump, _drill, state, restores, _status = measured
    logical = _logical(restores, dump.meta["uncompressed_bytes"], dump.meta["size_bytes"])
    calls = []
    empty = StateStore(tmp_path / "state")
    offer = physical_offer(empty, "app", logical, lambda: calls.append(1), env.settings.pitr.server_name)
    assert not offer.offered and calls == []  # no S3 listing when nothing was ever measured
    assert offer.reason.startswith("not offered: no recovery to latest measured yet")
    offer = physical_offer(state, "app", logical, lambda: None, env.settings.pitr.server_name)
    assert not offer.offered and "no base backup in a WAL archive" in offer.reason
    # Another archive's recoveries are not this one's.
    assert recorded_recoveries(state, "another-server") == []


def test_the_restore_plan_asks_for_the_offer_and_keeps_its_reason(measured):
    """Wired into plan_restore: with [pitr] and a recorded recovery, the plan carries the offer (or why not)."""
    from opstower_core.restore import RestoreOptions, plan_restore

    env, dump, _drill, _state, _restores, _status = measured
    plan = plan_restore(env.settings, str(dump.path), options=RestoreOptions(target_db="app_offer"))
    assert plan.forecast is not None and plan.forecast.known
    assert plan.physical is not None and plan.physical.runs == 1
    assert plan.physical.reason.startswith("not offered: a recovery to latest would not be clearly faster")
    assert plan.as_dict()["physical"]["reason"] == plan.physical.reason
    assert not any("recovery to latest" in n for n in plan.notes)  # said only when offered
