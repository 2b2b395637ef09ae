"""Drill scenario 3 (accidental data deletion) for real: the backup restored into a drill
database, 30% of a table's rows deleted there, brought back by the table recovery engine
(merge), the rows written since kept; production never touched."""

from __future__ import annotations

import re
import uuid

import pytest

from opstower_core.backup import run_backup
from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.drill import DrillOptions, DrillStore, start_drill
from support.servers import admin_conn, create_database

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int NOT NULL REFERENCES customers, note text);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, note) SELECT 1 + g % 200, md5(g::text) FROM generate_series(1, 2000) g;
"""


def snapshot(pg, db: str) -> dict[str, list[tuple]]:
    """Every row of every table, in key order: the content compared before and after."""
    with admin_conn(pg, db) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("customers", "orders")}


def databases(pg) -> set[str]:
    with admin_conn(pg) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


@pytest.fixture(scope="module")
def env(pg, tmp_path_factory):
    db = f"ddl_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, SCHEMA)
    root = tmp_path_factory.mktemp("deletion")
    (root / "config.toml").write_text(
        f'backup_dir = "{root / "backups"}"\nstate_dir = "{root / "state"}"\npg_bin = "{pg.bin_dir}"\n'
        f'min_free_gb = 0\ndefault_target = "{db}"\n[targets.{db}]\nhost = "{pg.host}"\nport = {pg.port}\n'
        f'user = "{pg.user}"\n')
    settings = load_settings(root / "config.toml")
    backup = run_backup(settings)
    yield settings, db, backup, root
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_unattended_deletion_drill_recovers_every_deleted_row(env, pg, tmp_path, capsys):
    settings, db, backup, root = env
    before, dbs_before = snapshot(pg, db), databases(pg)
    report = tmp_path / "deletion.md"
    rc = main(["--config", str(root / "config.toml"), "drill", "run", "data_deletion", "-d", db, "--unattended",
               "--report", str(report)])
    out = capsys.readouterr().out
    assert rc == 0, out
    d = DrillStore(settings.state_dir).recent(1)[0]
    p = d.phases[1]
    assert d.status == "passed" and p.status == "PASS", p.detail
    # None chosen: the largest table with a primary key; 30% of it deleted (none referenced by another table).
    assert p.data["tables"] == ["public.orders"]
    (acc,) = p.data["deletion"]["tables"]
    assert acc["rows_before"] == 2000 and acc["deleted"] == 600 and p.data["rows_back"] == 600
    assert acc["since_key"] == 2001 and p.data["deletion"]["problems"] == []
    assert p.data["recovery"]["ok"] and p.data["recovery"]["live_db"] == p.data["database"] != db
    assert p.data["recovery_point"]["taken_at"] == pytest.approx(backup.name and d.backup_created)
    # The recovery's steps are inside the phase's time (the drill's RTO).
    assert p.data["recovery"]["total_seconds"] <= d.phase_seconds(p)

    md = report.read_text()
    assert "## Recovery of deleted rows" in md
    assert "**600 of 600 deleted rows came back** (every deleted row back with its values" in md
    assert "| `public.orders` | 2,000 | 600 | 600 | kept (id = 2001) |" in md
    assert "The rows written since the backup were kept (public.orders)." in md
    assert re.search(rf"Recovery point: `{re.escape(backup.name.filename)}`, taken .+ before the incident", md)
    assert "Changing the live tables (one transaction)" in md  # the recovery's steps, timed
    assert "(removed with the drill database at the end)" in md and " (1 tables)" not in md

    # Production untouched, the drill database (and the scratch copy) gone, the pre-change copy removed.
    assert snapshot(pg, db) == before
    assert databases(pg) == dbs_before
    assert not list(settings.backup_dir.glob("pre_restore_*"))
    assert d.extra["cleanup"]["removed"]


def test_chosen_parent_and_child_tables_and_kept_database(env, pg):
    settings, db, _backup, _root = env
    before = snapshot(pg, db)
    runner = start_drill(settings, "data_deletion", db, DrillOptions(
        tables=["public.customers", "orders"], keep_databases=True, unattended=True, into_production=True))
    d = runner.run_unattended()
    p = d.phases[1]
    assert d.status == "passed" and p.status == "PASS", p.detail
    kept = p.data["database"]
    assert kept != db and d.extra["cleanup"] == {"kept": [kept]}  # into_production never applies to it
    acc = {t["table"]: t for t in p.data["deletion"]["tables"]}
    # Customers referenced by orders are not deleted (their foreign key would refuse it): only 201..300.
    assert acc["public.customers"]["deleted"] == 30 and acc["public.orders"]["deleted"] == 600
    assert p.data["rows_back"] == 630
    kept_rows = snapshot(pg, kept)
    assert len(kept_rows["customers"]) == 301 and len(kept_rows["orders"]) == 2001  # + the rows written since
    assert [r for r in kept_rows["customers"] if r[0] != 301] == before["customers"]
    assert [r for r in kept_rows["orders"] if r[0] != 2001] == before["orders"]
    assert snapshot(pg, db) == before
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{kept}" WITH (FORCE)')
