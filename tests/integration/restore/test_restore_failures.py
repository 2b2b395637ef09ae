"""Failures injected into each restore step: whatever happens, the operator is left with a
working database holding every row it had, and one sentence saying so."""

from __future__ import annotations

import json

import pytest

from opstower_core.events import CancelToken, Status, StepLog, StepStarted
from opstower_core.restore import RestoreOptions, plan_restore, run_restore
from opstower_core.runs.history import StateStore
from support.restore import (
    allows_connections,
    cancel_when_started,
    client_sessions,
    contents,
    databases,
    insert_midway,
    kill_when_running,
    make_live,
    plain_sql,
    write_artifact,
)
from support.servers import admin_conn


@pytest.fixture
def plain_live(pg, make_settings):
    """A live database, the plain SQL of its backed-up state (to craft artifacts from), then damage."""
    lv = make_live(pg, make_settings, damage=False)
    sql, meta = plain_sql(lv)
    lv.damage()
    return lv, sql, meta


def assert_intact(lv, result, status: str = "failed") -> None:
    """The live database is whole, accepts connections, and nothing half-made is left."""
    assert not result.ok and result.status == status, result.sentence
    assert lv.now() == lv.damaged
    assert allows_connections(lv.pg, lv.db)
    assert lv.only_live_databases(), databases(lv.pg, lv.db)
    assert not list(lv.settings.backup_dir.glob(".restore_*"))


def test_sql_that_fails_halfway_leaves_the_live_database_untouched(plain_live):
    lv, sql, meta = plain_live
    bad = insert_midway(sql, b"INSERT INTO no_such_table VALUES (1);")
    art = write_artifact(lv.settings.backup_dir, lv.db, "20250102_000000", bad, meta)
    apps = client_sessions(lv.pg, lv.db, 1)
    result = run_restore(lv.settings, plan_restore(lv.settings, str(art), options=RestoreOptions(force=True)))
    assert_intact(lv, result)
    st = {s.step: s.status for s in result.steps}
    assert st["restore"] == Status.FAIL and st["rollback"] == Status.PASS and "terminate" not in st
    # Verified in the same read as the load: the verdict (reached first with so small a dump, else "not
    # finished: the load failed" when psql's failure stopped the read) is reported; psql's error is the one said.
    assert st["verify"] in (Status.PASS, Status.WARN, Status.SKIP)
    assert "no_such_table" in result.sentence and f"{lv.db} is unchanged" in result.sentence
    apps[0].execute("SELECT 1")  # the applications were never disconnected: the failure came before the switch
    run = StateStore(lv.settings.state_dir).last("restore", lv.db)
    assert run.status == "failed" and run.error == result.sentence


def test_in_place_failure_rolls_back_from_the_pre_restore_backup(plain_live):
    lv, sql, meta = plain_live
    bad = insert_midway(sql, b"SELECT 1/0;")
    art = write_artifact(lv.settings.backup_dir, lv.db, "20250103_000000", bad, meta)
    result = run_restore(lv.settings, plan_restore(lv.settings, str(art),
                                                   options=RestoreOptions(force=True, in_place=True)))
    assert_intact(lv, result)
    assert result.pre_restore_artifact and result.pre_restore_artifact in result.sentence
    assert "put back from the pre-restore backup" in result.sentence and result.rolled_back


def test_killed_restore_connection_rolls_back(plain_live):
    lv, sql, meta = plain_live
    slow = insert_midway(sql, b"SELECT pg_sleep(30);")
    art = write_artifact(lv.settings.backup_dir, lv.db, "20250104_000000", slow, meta)
    killer = kill_when_running(lv.pg, "%pg_sleep%")
    result = run_restore(lv.settings, plan_restore(lv.settings, str(art), options=RestoreOptions(force=True)))
    killer.join()
    assert_intact(lv, result)
    assert "psql failed" in result.sentence


def test_killed_connection_in_place_rolls_back_from_the_pre_restore_backup(plain_live):
    lv, sql, meta = plain_live
    slow = insert_midway(sql, b"SELECT pg_sleep(30);")
    art = write_artifact(lv.settings.backup_dir, lv.db, "20250105_000000", slow, meta)
    killer = kill_when_running(lv.pg, "%pg_sleep%")
    result = run_restore(lv.settings, plan_restore(lv.settings, str(art),
                                                   options=RestoreOptions(force=True, in_place=True)))
    killer.join()
    assert_intact(lv, result)
    assert result.rolled_back and "pre-restore backup" in result.sentence


def test_cancel_while_the_restore_tool_runs_kills_it_and_rolls_back(plain_live):
    lv, sql, meta = plain_live
    slow = insert_midway(sql, b"SELECT pg_sleep(30);")
    art = write_artifact(lv.settings.backup_dir, lv.db, "20250106_000000", slow, meta)
    cancel = CancelToken()

    def on_event(event) -> None:
        if isinstance(event, StepLog) and event.step == "restore" and "psql" in event.line:
            # psql is starting: cancel once the server runs the sleep.
            import threading
            import time

            def later() -> None:
                with admin_conn(lv.pg) as c:
                    for _ in range(200):
                        if c.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND "
                                     "application_name = 'opstower-restore'").fetchone():
                            cancel.cancel()
                            return
                        time.sleep(0.05)

            threading.Thread(target=later, daemon=True).start()

    result = run_restore(lv.settings, plan_restore(lv.settings, str(art), options=RestoreOptions(force=True,
                                                                                                  in_place=True)),
                         on_event=on_event, cancel=cancel)
    assert_intact(lv, result, "cancelled")
    assert result.total_seconds < 20  # the 30 s sleep was not waited for
    assert "cancelled" in result.sentence and "pre-restore backup" in result.sentence


SWAP_STEPS = ["verify", "confirm", "drop_create", "restore", "verify_restored", "analyze", "reindex", "terminate",
              "swap"]


@pytest.mark.parametrize("step", SWAP_STEPS)
def test_cancel_at_each_step_of_a_swap(live, step):
    cancel = CancelToken()
    apps = client_sessions(live.pg, live.db, 1)
    # REINDEX runs only when asked for (pg_restore has just built every index).
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(reindex=step == "reindex"))
    result = run_restore(live.settings, plan, confirm=lambda p: p.live_db, on_event=cancel_when_started(step, cancel),
                         cancel=cancel)
    assert_intact(live, result, "cancelled")
    st = {s.step: s.status for s in result.steps}
    assert st[step] == Status.SKIP and st.get("swap") != Status.PASS
    assert f'cancelled at step "{plan.steps[[s.id for s in plan.steps].index(step)].title}"' in result.sentence
    if step == "swap":
        with pytest.raises(Exception):  # noqa: B017 - the app session was terminated at the switch
            apps[0].execute("SELECT 1")
    else:
        apps[0].execute("SELECT 1")


@pytest.mark.parametrize("in_place", [False, True])
def test_a_cancel_after_the_switch_leaves_the_restore_done(live, in_place):
    """VACUUM (and a swap's pre-restore copy) run once the restored database is in service: a cancel there
    skips them and undoes nothing."""
    cancel = CancelToken()
    with admin_conn(live.pg, live.db) as c:
        c.execute("DELETE FROM orders")  # the damage the restore repairs
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(force=True, in_place=in_place))
    first = "vacuum" if in_place else "pre_backup"
    result = run_restore(live.settings, plan, on_event=cancel_when_started(first, cancel), cancel=cancel)
    assert result.ok and result.status == "success", result.sentence
    st = {s.step: s for s in result.steps}
    assert st["swap"].status == Status.PASS
    assert st[first].status == Status.SKIP and "is restored and in service" in st[first].detail
    assert st["vacuum"].status == Status.SKIP  # the cancel holds for the rest
    if not in_place:
        assert result.old_database and not result.pre_restore_artifact  # the kept database is the way back
    assert not result.rolled_back and result.service_seconds is not None
    assert not list((live.settings.state_dir / "restore_journal").glob("*.json"))  # nothing to finish or undo
    with admin_conn(live.pg, live.db) as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone()[0] == 3000


@pytest.mark.parametrize("step", ["terminate", "drop_create", "restore", "verify_restored", "swap"])
def test_cancel_at_each_step_in_place(live, step):
    cancel = CancelToken()
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(in_place=True, force=True))
    result = run_restore(live.settings, plan, on_event=cancel_when_started(step, cancel), cancel=cancel)
    assert_intact(live, result, "cancelled")
    assert result.rolled_back == (step != "terminate")  # cancelled before anything was touched: nothing to undo
    if step in ("restore", "verify_restored", "swap"):
        assert "put back from the pre-restore backup" in result.sentence


def test_metadata_row_counts_that_do_not_match_fail_verification_and_roll_back(live):
    meta_path = live.backup.path.with_name(live.backup.name.meta_filename)
    meta = json.loads(meta_path.read_text())
    meta["row_counts"]["public.orders"] += 1  # the restored data would not be what was backed up
    meta_path.write_text(json.dumps(meta))
    result = run_restore(live.settings, plan_restore(live.settings, str(live.backup.path),
                                                     options=RestoreOptions(force=True, in_place=True)))
    assert_intact(live, result)
    assert {s.step: s.status for s in result.steps}["verify_restored"] == Status.FAIL
    assert "public.orders: 3001 expected, 3000 restored" in result.sentence


def test_a_failed_verification_check_stops_before_anything_is_touched(live):
    """In place, the artifact is verified before anything else: nothing is touched at all."""
    data = bytearray(live.backup.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    live.backup.path.write_bytes(bytes(data))
    events: list = []
    result = run_restore(live.settings, plan_restore(live.settings, str(live.backup.path),
                                                     options=RestoreOptions(force=True, in_place=True)),
                         on_event=events.append)
    assert_intact(live, result)
    assert [e.step for e in events if isinstance(e, StepStarted)] == ["verify"]
    assert "nothing was changed" in result.sentence and "verification failed" in result.sentence
    assert not list(live.settings.backup_dir.glob("pre_restore_*"))


def test_a_check_failing_in_the_load_drops_the_staging_database_and_never_touches_live(live):
    """A swap verifies the artifact in the same read as the staging load: a failed check stops the load,
    the staging database is dropped and the live database was never touched (its sessions neither)."""
    data = bytearray(live.backup.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    live.backup.path.write_bytes(bytes(data))
    apps = client_sessions(live.pg, live.db, 1)
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(force=True))
    assert plan.verify_in_load and "never touched" in plan.steps[0].detail
    result = run_restore(live.settings, plan)
    assert_intact(live, result)
    st = {s.step: s for s in result.steps}
    assert st["verify"].status == Status.FAIL and st["restore"].status == Status.FAIL
    assert st["rollback"].status == Status.PASS and "terminate" not in st and "swap" not in st
    assert "verification failed" in result.sentence and f"{live.db} is unchanged and in service" in result.sentence
    assert "Verifying backup file" in result.sentence  # the failed step named is the verification
    apps[0].execute("SELECT 1")  # never disconnected


def test_staging_and_old_names_already_taken_are_left_alone(live, pg):
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(force=True))
    with admin_conn(pg) as c:
        for squatter in (plan.work_db, plan.old_db):
            c.execute(f'CREATE DATABASE "{squatter}"')
    for squatter in (plan.work_db, plan.old_db):
        with admin_conn(pg, squatter) as c:
            c.execute("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('not yours')")
    result = run_restore(live.settings, plan)
    assert result.ok, result.sentence
    assert live.now() == live.backed_up
    for squatter in (plan.work_db, plan.old_db):
        assert contents(pg, squatter)["public.marker"][0] == 1
    assert result.old_database not in (plan.old_db, None)
    assert contents(pg, result.old_database) == live.damaged


def test_wrong_typed_name_cancels_with_nothing_changed(live):
    result = run_restore(live.settings, plan_restore(live.settings, str(live.backup.path)),
                         confirm=lambda p: p.live_db.upper())
    assert_intact(live, result, "cancelled")
    assert "did not match" in result.sentence and "nothing was changed" in result.sentence
    assert not list(live.settings.backup_dir.glob("pre_restore_*"))


@pytest.mark.parametrize("step", ["restore", "swap"])
def test_new_database_cancelled_or_failed_leaves_nothing_behind(live, pg, step):
    """--target-db NAME that does not exist yet: a cancelled run leaves no NAME and the original as it was."""
    copy = f"{live.db}_new"
    cancel = CancelToken()
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(target_db=copy))
    assert plan.mode == "new_db"
    result = run_restore(live.settings, plan, on_event=cancel_when_started(step, cancel), cancel=cancel)
    assert_intact(live, result, "cancelled")
    assert copy not in databases(pg, copy) and "nothing else was touched" in result.sentence
