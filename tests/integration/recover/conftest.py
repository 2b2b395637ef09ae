"""A live database for table recovery tests: sequence defaults, a domain, the `vector` type, a
partitioned table, foreign keys both ways, a trigger, grants to two roles; a custom-format
backup of it made once per module and a fresh live copy (CREATE DATABASE … TEMPLATE) per test."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.config import Settings, Target
from support.servers import admin_conn, create_database

SCHEMA = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rec_reader') THEN CREATE ROLE rec_reader; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rec_writer') THEN CREATE ROLE rec_writer; END IF;
END $$;
CREATE EXTENSION vector;
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
CREATE TABLE customers (id serial PRIMARY KEY, email email NOT NULL UNIQUE, name text, embedding vector(3),
                        favourite_order bigint);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
                     total numeric(10,2), note text);
ALTER TABLE customers ADD CONSTRAINT customers_favourite_fk FOREIGN KEY (favourite_order) REFERENCES orders
  ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX orders_customer_idx ON orders (customer_id);
COMMENT ON TABLE orders IS 'customer orders';
CREATE TABLE audit_log (at timestamptz DEFAULT now(), what text);
CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_log (what) VALUES (TG_OP || ' ' || TG_TABLE_NAME); RETURN NULL; END $$;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE OR DELETE ON orders FOR EACH ROW EXECUTE FUNCTION log_change();
GRANT SELECT ON orders TO rec_reader;
GRANT SELECT, INSERT, UPDATE ON orders TO rec_writer;
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, at date NOT NULL, what text, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO customers (email, name, embedding)
  SELECT 'c' || g || '@example.com', 'customer ' || g, ('[' || g || ',1,2]')::vector FROM generate_series(1, 200) g;
INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 200, (g % 97) * 1.25, md5(g::text)
  FROM generate_series(1, 2000) g;
UPDATE customers SET favourite_order = id WHERE id <= 50;
INSERT INTO events (at, what) SELECT DATE '2025-06-01' + (g % 400), 'event ' || g FROM generate_series(1, 600) g;
INSERT INTO audit_log (at, what) SELECT TIMESTAMPTZ '2026-01-01' + g * INTERVAL '1 minute', 'seed ' || g
  FROM generate_series(1, 30) g;
"""


@dataclass
class RecoverEnv:
    pg: object
    settings: Settings
    db: str
    artifact: Path

    def sql(self, sql: str, params: tuple = ()) -> list[tuple]:
        with admin_conn(self.pg, self.db) as c:
            cur = c.execute(sql, params or None)
            return cur.fetchall() if cur.description else []

    def one(self, sql: str, params: tuple = ()):
        return self.sql(sql, params)[0][0]


@pytest.fixture(scope="module")
def recover_source(pg, tmp_path_factory):
    """(live name, template name, backup path): the backup is taken of the live name."""
    tag = uuid.uuid4().hex[:8]
    live, template = f"rc_{tag}", f"rctpl_{tag}"
    root = tmp_path_factory.mktemp("recover_source")
    create_database(pg, live, SCHEMA)
    settings = Settings(backup_dir=root / "backups", state_dir=root / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
                        targets={live: Target(live, live, host=pg.host, port=pg.port, user=pg.user)},
                        default_target=live)
    backup = run_backup(settings, options=BackupOptions(local_only=True))
    with admin_conn(pg) as c:
        c.execute(f'ALTER DATABASE "{live}" RENAME TO "{template}"')
    yield live, template, backup.path
    with admin_conn(pg) as c:
        for (name,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s OR datname = %s",
                                 (live + "%", template)).fetchall():
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def env(pg, make_settings, recover_source) -> RecoverEnv:
    live, template, backup = recover_source
    with admin_conn(pg) as c:
        for (name,) in c.execute("SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                                 (live, live + "\\_%")).fetchall():
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{live}" TEMPLATE "{template}"')
    settings = make_settings(live)
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    for f in backup.parent.iterdir():
        if f.name.startswith(backup.name.split(".")[0]):
            shutil.copyfile(f, settings.backup_dir / f.name)
    return RecoverEnv(pg, settings, live, settings.backup_dir / backup.name)
