"""The live inventory keeps long names whole (a UNION typed `name` cut them at 63 bytes)."""

from __future__ import annotations

import psycopg

from opstower_core.pg.inventory import live_inventory
from support.servers import create_database, unique

LONG = "driver_vehicle_assignments"


def test_constraint_tags_longer_than_63_bytes_are_not_cut(pg) -> None:
    db = unique("inv_names")
    create_database(pg, db, f"""
        CREATE TABLE drivers (id int PRIMARY KEY);
        CREATE TABLE {LONG} (id int PRIMARY KEY, driver_id int REFERENCES drivers,
                             vehicle_id int, assigned_from date, UNIQUE (vehicle_id, assigned_from));
    """)
    with psycopg.connect(**pg.conninfo(db)) as conn:
        inventory = live_inventory(conn)
    tags = {tag for (kind, _ns, tag) in inventory.objects if kind == "CONSTRAINT"}
    fk, unique_key = f"{LONG}_driver_id_fkey", f"{LONG}_vehicle_id_assigned_from_key"
    assert f"{LONG} {fk}" in tags and len(f"{LONG} {fk}".encode()) > 63
    assert f"{LONG} {unique_key}" in tags
