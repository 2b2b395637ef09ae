"""Dropping a database a run made (a full test's scratch copy, an unfinished staging database): a
role without SUPERUSER is refused WITH (FORCE) outright while a superuser's session — an autovacuum
worker analysing what was just loaded, for one — is in the database. The drop tries again, bounded,
and says so when the database is still there; the full test names a copy it could not drop."""

from __future__ import annotations

import dataclasses
import threading
import time

import psycopg
import pytest

from opstower_core.pg.admin import drop_database
from support.servers import admin_conn, unique


@pytest.fixture
def owned(pg):
    """A database owned by a role with CREATEDB only, and that role's connection to `postgres`."""
    role, db = unique("dropper"), unique("dropme")
    with admin_conn(pg) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB")
        conn.execute(f'CREATE DATABASE "{db}" OWNER {role}')
    ci = pg.conninfo("postgres")
    mine = psycopg.connect(**{**ci, "user": role}, autocommit=True)
    try:
        yield db, mine, role
    finally:
        mine.close()
        with admin_conn(pg) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f"DROP ROLE {role}")


def _exists(pg, db: str) -> bool:
    with admin_conn(pg) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is not None


def test_a_superuser_session_that_leaves_does_not_stop_the_drop(pg, owned):
    db, mine, _ = owned
    inside = psycopg.connect(**pg.conninfo(db), autocommit=True)  # superuser, like an autovacuum worker
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # what a single WITH (FORCE) gets
        mine.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    threading.Timer(1.0, inside.close).start()
    t0 = time.monotonic()
    sql = drop_database(mine, db, bound=15)
    assert not _exists(pg, db)
    assert 0.8 < time.monotonic() - t0 < 15 and sql.startswith("DROP DATABASE IF EXISTS")


def test_a_session_that_stays_is_named_after_the_bound(pg, owned):
    db, mine, _ = owned
    inside = psycopg.connect(**pg.conninfo(db), autocommit=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as err:
            drop_database(mine, db, bound=2)
        assert time.monotonic() - t0 < 12  # the bound, plus PostgreSQL's own 5 s wait at most
        assert "other session" in str(err.value) or "permission denied" in str(err.value)
        assert _exists(pg, db)
    finally:
        inside.close()


def test_a_full_test_names_a_test_copy_it_could_not_drop(pg, make_settings, owned, monkeypatch):
    """Check 8's test database cannot be dropped (a superuser's session stays in it): the artifact's
    verdict stands, turned WARN, naming the database and the statement that drops it — never silent."""
    from opstower_core.backup import BackupOptions, run_backup
    from opstower_core.events import Status, StepLog
    from opstower_core.verify import run as verify_run
    from opstower_core.verify import verify

    db, _, role = owned
    with psycopg.connect(**{**pg.conninfo(db), "user": role}, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 2000) g")
    settings = make_settings(db)
    settings = settings.with_changes(targets={db: dataclasses.replace(settings.targets[db], user=role)})
    backup = run_backup(settings, options=BackupOptions(local_only=True))
    monkeypatch.setattr(verify_run, "SCRATCH_DROP_WAIT", 1.0)
    inside: list[tuple[str, psycopg.Connection]] = []

    def stay(event) -> None:  # as the drop begins, a superuser session sits in the test database
        if isinstance(event, StepLog) and event.line.startswith("Cleaning up test database"):
            with admin_conn(pg) as conn:
                name = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                    (f"{db[:30]}_verify_%",)).fetchone()[0]
            inside.append((name, psycopg.connect(**pg.conninfo(name), autocommit=True)))

    try:
        res = verify(settings, str(backup.path), full_test=True, on_event=stay)
        assert inside, "the test database was never cleaned up"
        name = inside[0][0]
        step = res.results[-1]
        assert step.step == "full_restore" and step.status == Status.WARN, step.detail
        assert "digests equal" in step.detail  # the artifact's own verdict is kept
        assert f"the test database {name} could not be dropped" in step.detail
        assert f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' in step.detail or \
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" in step.detail
        assert _exists(pg, name)
    finally:
        for name, conn in inside:
            conn.close()
            with admin_conn(pg) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
