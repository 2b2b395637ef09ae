"""Issue 18: a restored table is read for the proof as soon as pg_restore has moved on to the next
table's data (its COPY committed), beside the rest of the load; the last one waits for the index builds."""

from __future__ import annotations

import time
import uuid

from opstower_core.config import Target
from opstower_core.events import CancelToken
from opstower_core.verify import EarlyDigests
from support.servers import create_database

SCHEMA = """
CREATE TABLE "Ärger" (id int, v text);
INSERT INTO "Ärger" SELECT g, 'x' || g FROM generate_series(1, 500) g;
CREATE TABLE plain (id int);
INSERT INTO plain SELECT generate_series(1, 40);
CREATE TABLE last_one (id int);
INSERT INTO last_one SELECT generate_series(1, 7);
"""


def _early(pg, db: str) -> EarlyDigests:
    target = Target(name=db, dbname=db, host=pg.host, port=pg.port, user=pg.user)
    early = EarlyDigests.for_load(target, db, {"dump_timezone": "UTC"}, None, CancelToken(), lambda _line: None)
    assert early is not None
    return early


def _wait_for(early: EarlyDigests, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(early.digests) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_table_is_read_once_the_next_ones_data_starts_and_the_last_waits_for_the_index_builds(pg):
    db = f"ed_{uuid.uuid4().hex[:8]}"
    create_database(pg, db, SCHEMA)
    early = _early(pg, db)
    early.on_line('pg_restore: processing data for table "public.Ärger"')
    time.sleep(0.5)
    # Connected and ready while the first table loads, but nothing is read: its COPY has not committed.
    assert early.thread is not None and early.thread.is_alive() and early.digests == {}
    early.on_line('pg_restore: processing data for table "public.plain"')
    _wait_for(early, 1)
    early.on_line('pg_restore: processing data for table "public.last_one"')
    _wait_for(early, 2)
    read = {key[0]: d.rows for key, (d, _xmin) in early.digests.items()}
    assert read == {("public", "Ärger"): 500, ("public", "plain"): 40}  # not last_one: its data may still load
    early.on_line('pg_restore: creating CONSTRAINT "public.plain plain_pkey"')
    assert len(early.digests) == 2
    early.on_line('pg_restore: creating INDEX "public.plain_idx"')
    got = early.result()
    assert {key[0]: d.rows for key, (d, _xmin) in got.items()} == {
        ("public", "Ärger"): 500, ("public", "plain"): 40, ("public", "last_one"): 7}


def test_without_index_builds_the_reading_stops_at_the_end_of_the_load(pg):
    db = f"ed_{uuid.uuid4().hex[:8]}"
    create_database(pg, db, SCHEMA)
    early = _early(pg, db)
    early.on_line('pg_restore: processing data for table "public.Ärger"')
    early.on_line('pg_restore: processing data for table "public.plain"')
    got = early.result()  # the load ended: what was queued is read, the rest is left to the proof
    assert [key[0] for key in got] == [("public", "Ärger")]
    assert not early.thread.is_alive()
