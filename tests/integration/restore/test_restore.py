"""Restore engine (reference section 2) against a real PostgreSQL and SeaweedFS: round trips,
modes, plans, S3, legacy artifacts, tables and roles."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from opstower_core.errors import OpsError, UsageError
from opstower_core.events import Status, StepStarted
from opstower_core.repo.download import safe_destination
from opstower_core.restore import (
    RestoreOptions,
    discard_old,
    list_old_databases,
    plan_restore,
    run_restore,
    timing_table,
)
from opstower_core.runs.history import StateStore
from support.restore import (
    SCHEMA,
    allows_connections,
    client_sessions,
    contents,
    databases,
    make_live,
    plain_sql,
    schema_sql,
    write_artifact,
)
from support.servers import admin_conn, create_database

SWAP_ORDER = ["verify", "download", "confirm", "roles", "drop_create", "restore", "analyze",
              "verify_restored", "reindex", "terminate", "swap", "pre_backup", "vacuum"]


def test_round_trip_with_connected_sessions(live, pg, source):
    """Back up, damage, restore while applications are connected: contents equal the backup's."""
    apps = client_sessions(pg, live.db)
    busy_error: list[BaseException] = []

    def long_query() -> None:
        info = pg.conninfo(live.db)
        info["application_name"] = "app-busy"
        with psycopg.connect(**info) as c:
            try:
                c.execute("SELECT pg_sleep(60)")
            except psycopg.Error as exc:
                busy_error.append(exc)

    busy = threading.Thread(target=long_query)
    busy.start()
    plan = plan_restore(live.settings, str(live.backup.path))
    assert plan.mode == "swap" and plan.live_db == live.db
    assert [s.id for s in plan.steps] == SWAP_ORDER
    assert {"app-0", "app-1"} <= {s["application"] for s in plan.sessions}
    events: list = []
    result = run_restore(live.settings, plan, confirm=lambda p: p.live_db, on_event=events.append)
    busy.join(10)
    assert result.ok, result.sentence
    assert live.now() == live.backed_up
    assert schema_sql(pg, live.db) == schema_sql(pg, source.db)  # the backed-up database, object for object
    # The sessions were terminated; the busy query was cut off, not waited for.
    assert busy_error and not busy.is_alive()
    for conn in apps:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    # The old database is kept, with the damaged contents, until discarded.
    assert result.old_database and result.old_database.startswith(f"{live.db}_pre_restore_")
    assert contents(pg, result.old_database) == live.damaged
    assert allows_connections(pg, live.db) and allows_connections(pg, result.old_database)
    assert live.only_live_databases()
    # Every step ran (or said why not), timed against the RTO, and went into the run history.
    steps = {s.step: s.status for s in result.steps}
    assert [s.step for s in result.steps] == SWAP_ORDER
    assert steps["download"] == Status.SKIP and steps["restore"] == Status.PASS
    # The pre-restore copy is taken after the switch, from the kept database, and named for it.
    assert result.pre_restore_artifact and result.pre_restore_artifact.startswith(f"pre_restore_{result.old_database}_")
    assert (live.settings.backup_dir / result.pre_restore_artifact).is_file()
    rows = timing_table(result)
    # A step beside others adds only what the run waited for it; one after the switch adds nothing.
    clock = sum(0 if s.data.get("after_service") else s.data["waited"] if s.data.get("parallel_with") else s.seconds
                for s in result.steps)
    assert len(rows) == len(result.steps) and rows[-1][2] == pytest.approx(clock)
    assert result.rto_seconds == 240 * 60
    assert result.margin_seconds == pytest.approx(result.rto_seconds - result.service_seconds)
    run = StateStore(live.settings.state_dir).last("restore", live.db)
    assert run is not None and run.status == "success" and run.artifact == live.backup.name.filename
    assert [s["step"] for s in run.details["steps"]] == SWAP_ORDER
    started = [e.step for e in events if isinstance(e, StepStarted)]
    # The artifact is verified in the same read as the staging load: its step starts inside the restore step.
    assert plan.verify_in_load and result.steps[0].data["parallel_with"] == ["restore"]
    assert started == [s for s in SWAP_ORDER if s != "verify"][:5] + ["verify"] + SWAP_ORDER[6:]
    assert "discard-old" in result.sentence and result.old_database in result.sentence
    # The operator discards the old database when satisfied.
    assert (result.old_database, ) == tuple(n for n, _ in list_old_databases(live.settings) if n.startswith(live.db))
    discard_old(live.settings, result.old_database)
    assert databases(pg, live.db) == {live.db}
    with pytest.raises(UsageError):
        discard_old(live.settings, live.db)  # only databases a swap kept


def test_plan_is_a_dry_run_with_exact_commands(live, pg):
    apps = client_sessions(pg, live.db, 1)
    before = databases(pg, live.db)
    plan = plan_restore(live.settings, live.backup.name.filename)
    assert databases(pg, live.db) == before and live.now() == live.damaged
    assert not list(live.settings.backup_dir.glob("pre_restore_*"))
    data = json.loads(json.dumps(plan.as_dict(), default=str))
    steps = {s["id"]: s for s in data["steps"]}
    assert data["sessions"][0]["pid"] == apps[0].info.backend_pid
    assert data["artifact_size"] == live.backup.meta["size_bytes"] and data["live_size"] > 0
    assert any("--exit-on-error" in c and "pg_restore" in c for c in steps["restore"]["commands"])
    assert any("pg_terminate_backend" in c and f"'{live.db}'" in c for c in steps["terminate"]["commands"])
    assert any("ALLOW_CONNECTIONS false" in c for c in steps["terminate"]["commands"])
    assert steps["swap"]["commands"][0] == "BEGIN" and steps["swap"]["commands"][-1] == "COMMIT"
    assert any(f'RENAME TO "{plan.old_db}"' in c for c in steps["swap"]["commands"])
    assert steps["download"]["skip"] and steps["confirm"]["skip"] is None
    assert data["needs_confirmation"] and data["rto_minutes"] == 240
    apps[0].close()


def test_target_db_that_does_not_exist_is_created_and_original_untouched(live, pg):
    copy = f"{live.db}_copy"
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(target_db=copy))
    assert plan.mode == "new_db" and not plan.needs_confirmation
    result = run_restore(live.settings, plan)  # no confirmation needed: nothing is replaced
    assert result.ok, result.sentence
    assert contents(pg, copy) == live.backed_up and live.now() == live.damaged
    st = {s.step: s.status for s in result.steps}
    assert st["pre_backup"] == Status.SKIP and st["terminate"] == Status.SKIP
    # Existing NAME is the thing being replaced: a swap, with its old copy kept.
    with admin_conn(pg, copy) as c:
        c.execute("DELETE FROM customers WHERE id > 250 AND id NOT IN (SELECT customer_id FROM orders)")
        c.execute("TRUNCATE orders")
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(target_db=copy, force=True))
    assert plan.mode == "swap" and plan.live_db == copy
    result = run_restore(live.settings, plan)
    assert result.ok, result.sentence
    assert contents(pg, copy) == live.backed_up and live.now() == live.damaged
    assert result.old_database and result.old_database.startswith(f"{copy}_pre_restore_")


def test_live_database_missing_is_created(pg, make_settings):
    live = make_live(pg, make_settings)  # its own backup: "latest" is looked up by database name
    with admin_conn(pg) as c:
        c.execute(f'DROP DATABASE "{live.db}" WITH (FORCE)')
    plan = plan_restore(live.settings, "latest")
    assert plan.mode == "new_db" and plan.entry.filename == live.backup.name.filename
    result = run_restore(live.settings, plan)
    assert result.ok, result.sentence
    assert live.now() == live.backed_up


def test_in_place_mode_restores_over_the_live_database(live, pg):
    apps = client_sessions(pg, live.db)
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(in_place=True, force=True))
    order = [s.id for s in plan.steps]
    assert order.index("terminate") < order.index("drop_create") < order.index("restore")
    result = run_restore(live.settings, plan)
    assert result.ok, result.sentence
    assert live.now() == live.backed_up and live.only_live_databases()
    assert result.old_database is None and result.pre_restore_artifact
    terminated = next(s for s in result.steps if s.step == "terminate")
    assert {"app-0", "app-1"} <= {s["application"] for s in terminated.data["sessions"]}
    for conn in apps:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")


def test_parallel_jobs_use_a_temporary_seekable_copy(live, pg):
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(jobs=2, force=True))
    assert plan.jobs == 2 and any("--jobs=2" in c for c in next(s for s in plan.steps if s.id == "restore").commands)
    logs: list = []
    result = run_restore(live.settings, plan, on_event=logs.append)
    assert result.ok, result.sentence
    assert live.now() == live.backed_up
    assert any("seekable" in getattr(e, "line", "") for e in logs)
    assert not list(live.settings.backup_dir.glob(".restore_*"))  # the temporary copy is gone


def test_legacy_reference_artifact_restores(pg, make_settings):
    """A plain .sql.gz made as the reference did (--no-owner --no-acl) with the reference's meta.json."""
    lv = make_live(pg, make_settings, damage=False)
    sql, meta = plain_sql(lv)
    assert b"OWNER TO" not in sql and b"GRANT " not in sql
    lv.damage()
    art = write_artifact(lv.settings.backup_dir, lv.db, "20250101_020000", sql, meta, legacy=True)
    assert "sha256" not in json.loads(art.with_name(f"{lv.db}_20250101_020000.meta.json").read_text())
    result = run_restore(lv.settings, plan_restore(lv.settings, str(art), options=RestoreOptions(force=True)))
    assert result.ok, result.sentence
    assert lv.now() == lv.backed_up
    st = {s.step: s for s in result.steps}
    assert st["verify"].status == Status.WARN  # no sha256 to prove the content: said, not hidden
    assert "legacy" in st["verify_restored"].detail


def test_from_s3_restores_an_artifact_that_exists_only_in_s3(pg, s3, make_settings):
    lv = make_live(pg, make_settings, s3=s3)
    assert lv.backup.s3_key
    local = lv.backup.path
    for p in (local, local.with_name(lv.backup.name.meta_filename), local.with_name(lv.backup.name.globals_filename)):
        p.unlink()
    # The reference's form of the key: database/YYYYMMDD/<file>, without our prefix.
    ref = f"database/{lv.backup.name.day}/{lv.backup.name.filename}"
    plan = plan_restore(lv.settings, ref, options=RestoreOptions(from_s3=True, force=True))
    assert plan.download_key == lv.backup.s3_key and plan.download_dest == local
    progress: list = []
    result = run_restore(lv.settings, plan, on_event=progress.append)
    assert result.ok, result.sentence
    assert lv.now() == lv.backed_up
    assert {s.step: s.status for s in result.steps}["download"] == Status.PASS
    assert local.is_file() and local.with_name(lv.backup.name.meta_filename).is_file()
    assert any(getattr(e, "step", "") == "download" and e.kind == "step_progress" for e in progress)


def test_s3_keys_cannot_write_outside_the_backup_dir(tmp_path):
    bdir = tmp_path / "b"
    bdir.mkdir()
    assert safe_destination(bdir, "p/database/20260101/db_20260101_000000.dump.zst") == bdir / "db_20260101_000000.dump.zst"
    for key in ("../../etc/db_20260101_000000.dump.zst/..", "database/20260101/..", "database/x/.hidden.dump.zst",
                "database/20260101/passwd", "a\\..\\db_20260101_000000.sql.gz", ""):
        with pytest.raises(OpsError):
            safe_destination(bdir, key)


def test_selective_tables_go_to_a_separate_database(live, pg):
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(tables=["orders", "audit.events"]))
    assert plan.mode == "tables" and plan.work_db.startswith(f"{live.db}_tables_") and not plan.needs_confirmation
    result = run_restore(live.settings, plan)
    assert result.ok, result.sentence
    restored = contents(pg, plan.work_db)
    assert {k for k in restored if not k.startswith("_")} == {"public.orders", "audit.events"}
    assert restored["public.orders"] == live.backed_up["public.orders"]
    assert restored["audit.events"] == live.backed_up["audit.events"]
    assert live.now() == live.damaged  # live tables never overwritten
    assert plan.work_db in result.sentence and result.database == plan.work_db
    with pytest.raises(UsageError):
        plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(tables=["nope"], in_place=True))


def test_selective_restore_needs_custom_format_and_known_tables(pg, make_settings, source):
    lv = make_live(pg, make_settings, fmt="plain", damage=False)
    with pytest.raises(UsageError, match="custom-format"):
        plan_restore(lv.settings, str(lv.backup.path), options=RestoreOptions(tables=["orders"]))
    lv2 = make_live(pg, make_settings, damage=False, source=source)
    result = run_restore(lv2.settings, plan_restore(lv2.settings, str(lv2.backup.path),
                                                    options=RestoreOptions(tables=["no_such_table"])))
    assert not result.ok and "no_such_table" in result.sentence
    assert lv2.only_live_databases()


def test_create_roles_from_the_globals_file(pg, make_settings):
    owner, reader = f"own_{uuid.uuid4().hex[:6]}", f"ro_{uuid.uuid4().hex[:6]}"
    db = f"rs_{uuid.uuid4().hex[:8]}"
    with admin_conn(pg) as c:
        c.execute(f"CREATE ROLE {owner} NOLOGIN")
        c.execute(f"CREATE ROLE {reader} LOGIN CONNECTION LIMIT 3")
    create_database(pg, db, SCHEMA + f"ALTER TABLE customers OWNER TO {owner}; GRANT SELECT ON orders TO {reader};")
    from opstower_core.backup import BackupOptions, run_backup

    settings = make_settings(db)
    backup = run_backup(settings, options=BackupOptions(local_only=True))
    assert backup.meta["globals_dumped"]
    # The owner disappears from the server; the reader is changed by a DBA (and must stay changed).
    with admin_conn(pg, db) as c:
        c.execute(f"REASSIGN OWNED BY {owner} TO postgres")
        c.execute(f"DROP OWNED BY {owner}")
    with admin_conn(pg) as c:
        c.execute(f"DROP ROLE {owner}")
        c.execute(f"ALTER ROLE {reader} NOLOGIN")
    with pytest.raises(OpsError) as refused:  # never a silent fallback to --no-owner --no-acl
        plan_restore(settings, str(backup.path), options=RestoreOptions(force=True))
    assert owner in refused.value.what and reader not in refused.value.what
    assert "--create-roles" in refused.value.sentence and "--no-acl" in refused.value.sentence
    plan = plan_restore(settings, str(backup.path), options=RestoreOptions(force=True, create_roles=True))
    roles_step = next(s for s in plan.steps if s.id == "roles")
    assert plan.missing_roles == [owner] and not plan.no_owner
    assert roles_step.skip is None and any(owner in c for c in roles_step.commands)
    assert "passwords are not carried" in roles_step.detail
    result = run_restore(settings, plan)
    assert result.ok, result.sentence
    with admin_conn(pg, db) as c:
        assert c.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'customers'").fetchone()[0] == owner
        assert c.execute(f"SELECT has_table_privilege('{reader}', 'orders', 'SELECT')").fetchone()[0]
        assert c.execute(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{reader}'").fetchone()[0] is False
    with admin_conn(pg, db) as c:
        c.execute(f"REASSIGN OWNED BY {owner} TO postgres")
        c.execute(f"DROP OWNED BY {owner}")
        c.execute(f"DROP OWNED BY {reader}")
    with admin_conn(pg) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{result.old_database}" WITH (FORCE)')
        c.execute(f"DROP ROLE {owner}")


def test_age_encrypted_backup_restores_with_the_identity(pg, make_settings, tmp_path):
    import pyrage

    from opstower_core.backup import BackupOptions, run_backup

    ident = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{ident}\n")
    key.chmod(0o600)
    db = f"rs_{uuid.uuid4().hex[:8]}"
    create_database(pg, db, SCHEMA)
    recipients = {"recipients": [str(ident.to_public())]}
    writer = make_settings(db).with_changes(raw={"encryption": recipients})
    backup = run_backup(writer, options=BackupOptions(local_only=True))
    assert backup.path.name.endswith(".dump.zst.age")
    expected = contents(pg, db)
    with admin_conn(pg, db) as c:
        c.execute("DELETE FROM orders")
    with pytest.raises(OpsError, match="identity"):
        plan_restore(writer, str(backup.path), options=RestoreOptions(force=True))
    reader = writer.with_changes(raw={"encryption": {**recipients, "identity_file": str(key)}})
    plan = plan_restore(reader, str(backup.path), options=RestoreOptions(force=True, in_place=True))
    assert any(c.startswith("age --decrypt") for c in next(s for s in plan.steps if s.id == "restore").commands)
    result = run_restore(reader, plan)
    assert result.ok, result.sentence
    assert contents(pg, db) == expected
    assert result.pre_restore_artifact.endswith(".age")  # the safety copy is encrypted too
