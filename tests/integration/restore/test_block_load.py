"""Issue 18: a new database or staging copy is loaded in committed blocks (pg/blockload.py), and the
proof reads each block while the next one loads. The proof must stay a proof: a table counts as
read only when its rows are still exactly the blocks that were read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace

import psycopg
import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Reporter, Status
from opstower_core.pg import load as load_mod
from opstower_core.pg.blockload import BLOCK_ROWS, Block
from opstower_core.pg.digest_job import DigestJob, StreamDigests
from opstower_core.pg.load import FeedRefused, restore_into
from opstower_core.restore import RestoreOptions, plan_restore, run_restore
from opstower_core.verify.proof import EarlyDigests, _unchanged_since
from support.restore import contents, databases
from support.servers import admin_conn, create_database, settings_toml

BIG = 2 * BLOCK_ROWS + 1234  # three blocks, the last one partial

SCHEMA = f"""
CREATE ROLE "blk reader" NOLOGIN;
CREATE DOMAIN pos AS int CHECK (VALUE > 0);
CREATE TABLE "Big Ones" (id pos PRIMARY KEY, "Name" text, at timestamptz, doc jsonb);
INSERT INTO "Big Ones" SELECT g, 'naïve ' || g || CASE WHEN g % 7 = 0 THEN E'\\ttab' ELSE '' END,
  '2026-01-01'::timestamptz + g * interval '1 second', jsonb_build_object('g', g)
  FROM generate_series(1, {BIG}) g;
CREATE INDEX big_name ON "Big Ones" ("Name");
CREATE TABLE small (k text PRIMARY KEY, big int REFERENCES "Big Ones");
INSERT INTO small SELECT 'k' || g, g FROM generate_series(1, 10) g;
CREATE TABLE empty_one (x int);
CREATE TABLE parted (d date, v int) PARTITION BY RANGE (d);
CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO parted SELECT '2026-01-01'::date + g % 300, g FROM generate_series(1, 1000) g;
CREATE SEQUENCE counter START 40;
SELECT nextval('counter');
CREATE MATERIALIZED VIEW big_count AS SELECT count(*) AS n FROM "Big Ones";
GRANT SELECT ON "Big Ones" TO "blk reader";
SELECT lo_from_bytea(0, convert_to(repeat(E'COPY x FROM stdin;\\n', 500), 'UTF8'));
"""


@pytest.fixture(scope="module")
def source(pg, tmp_path_factory):
    db = f"blk_{uuid.uuid4().hex[:8]}"
    with admin_conn(pg, "postgres") as conn:
        conn.execute('DROP ROLE IF EXISTS "blk reader"')
    create_database(pg, db, SCHEMA)
    return db


def _backup(make_settings, db):
    settings = make_settings(db)
    return settings, run_backup(settings, options=BackupOptions(local_only=True))


def test_a_new_database_is_loaded_in_blocks_and_proven_by_the_block_reads(pg, make_settings, source):
    settings, backup = _backup(make_settings, source)
    target = f"{source}_new"
    plan = plan_restore(settings, str(backup.path), options=RestoreOptions(target_db=target))
    assert plan.load_spec.in_blocks
    assert any("--section=pre-data" in c for s in plan.steps if s.id == "restore" for c in s.commands)
    result = run_restore(settings, plan)
    assert result.ok, result.sentence
    assert result.proof is not None and result.proof.status == Status.PASS, result.proof.sentence
    assert result.proof.rows == BIG + 10 + 1000
    step = {s.step: s for s in result.steps}["restore"]
    assert "committed blocks" in step.detail
    log = max((settings.backup_dir / "logs").glob("restore_*.log"), key=os.path.getmtime).read_text()
    assert "Loaded " in log and "block(s) of at most" in log
    # Every table with rows was read beside the load, the big one in its three blocks.
    assert "restored table(s) were read beside the load" in log
    assert contents(pg, target) == contents(pg, source)
    with admin_conn(pg, target) as conn:
        assert conn.execute("SELECT n FROM big_count").fetchone()[0] == BIG
        assert conn.execute("SELECT has_table_privilege('blk reader', '\"Big Ones\"', 'SELECT')").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0] == 1
        assert conn.execute("SELECT last_value FROM counter").fetchone()[0] == 40
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'big_name'").fetchone()[0] == 1
        # Three transactions committed the big table, and nothing else wrote it.
        assert conn.execute('SELECT count(DISTINCT xmin::text) FROM "Big Ones"').fetchone()[0] == 3


def _load_in_blocks(pg, settings, backup, name, reader=None, data_tap=None, log=lambda line: None,
                    announce=lambda block: block):
    """restore_into with the proof's block reads: (EarlyDigests, the blocks announced).
    `announce`: what the reads are told of each block (a test may misplace one)."""
    create_database(pg, name)
    seen: list[Block] = []
    cancel = CancelToken()
    target = settings.target()
    early = EarlyDigests(target, name, "UTC", "hex", str(pg.bin_dir / "psql"), cancel, log)

    def on_block(block: Block) -> None:
        seen.append(block)
        early.on_block(announce(block))

    restore_into(settings, target, str(backup.path), name, Reporter(cancel=cancel), "restore",
                 on_line=early.on_line, on_block=on_block, reader=reader, data_tap=data_tap)
    return early, seen


def test_a_table_read_in_blocks_counts_as_unchanged_only_while_its_rows_are_the_blocks(pg, make_settings, source):
    settings, backup = _backup(make_settings, source)
    name = f"{source}_evidence"
    stream = StreamDigests(backup.path, "zstd", str(pg.bin_dir / "pg_restore"))
    early, seen = _load_in_blocks(pg, settings, backup, name, data_tap=stream.tap)
    # The digests taken from the load's data stream are the job's, which reads the file on its own.
    got_stream, why = stream.result(backup.meta["sha256"])
    got_job, why_job = DigestJob(backup.path, "zstd", pg_restore=str(pg.bin_dir / "pg_restore")).result(
        backup.meta["sha256"])
    assert got_stream is not None and got_job is not None, (why, why_job)
    assert got_stream.tables == got_job.tables and got_stream.copy_columns == got_job.copy_columns
    assert len(got_stream.tables) >= 4 and got_stream.tables[("public", "Big Ones")].rows == BIG
    big = [b for b in seen if b.table == ("public", "Big Ones")]
    assert [b.rows for b in big] == [BLOCK_ROWS, BLOCK_ROWS, 1234] and big[-1].last
    got = early.result()
    (digest, since), = [v for k, v in got.items() if k[0] == ("public", "Big Ones")]
    assert digest.rows == BIG and isinstance(since, dict) and sorted(since.values()) == [1234, BLOCK_ROWS, BLOCK_ROWS]
    key = ("public", "Big Ones")
    with psycopg.connect(**pg.conninfo(name), autocommit=True) as conn:
        assert _unchanged_since(conn, key, digest, since)
        conn.execute('UPDATE "Big Ones" SET "Name" = "Name" WHERE id = 5')  # same text, a new row version
        assert not _unchanged_since(conn, key, digest, since)
    name2 = f"{source}_evidence2"
    early2, _ = _load_in_blocks(pg, settings, backup, name2)
    (digest2, since2), = [v for k, v in early2.result().items() if k[0] == key]
    assert digest2.ordered == digest.ordered  # the same digest from another load
    with psycopg.connect(**pg.conninfo(name2), autocommit=True) as conn:
        assert _unchanged_since(conn, key, digest2, since2)
        conn.execute('DELETE FROM "Big Ones" WHERE id = 100')  # a row gone: one block's count is off
        assert not _unchanged_since(conn, key, digest2, since2)
        # As many rows again, the new one from another transaction: the count alone would not see it.
        conn.execute('INSERT INTO "Big Ones" SELECT id + 10000000, "Name", at, doc FROM "Big Ones" WHERE id = 101')
        assert conn.execute('SELECT count(*) FROM "Big Ones"').fetchone()[0] == BIG
        assert not _unchanged_since(conn, key, digest2, since2)


def test_a_block_that_does_not_read_back_whole_has_its_table_read_again_and_says_so(
        pg, make_settings, source):
    """Rows outside the pages a block is read on (simulated: its second block announced on half of
    the first block's pages) make the read fall short: the table is read again as a whole, and
    the run log names the table and the shortfall."""
    settings, backup = _backup(make_settings, source)
    key = ("public", "Big Ones")
    first: list[Block] = []

    def misplace(block: Block) -> Block:
        if block.table != key:
            return block
        if block.index == 0:
            first.append(block)
            return block
        return replace(block, pages=first[0].pages // 2) if block.index == 1 else block

    lines: list[str] = []
    early, seen = _load_in_blocks(pg, settings, backup, f"{source}_short", log=lines.append, announce=misplace)
    got = early.result()
    # The big table was read again as a whole (its "unchanged since" is a snapshot horizon, not
    # blocks); the others still come from their block reads.
    (digest, since), = [v for k, v in got.items() if k[0] == key]
    assert isinstance(since, int) and digest.rows == BIG
    assert all(isinstance(v[1], dict) for k, v in got.items() if k[0] != key)
    assert [ln for ln in lines if "read again" in ln] == [
        f"Table public.Big Ones: block 2 read back 0 of its {BLOCK_ROWS:,} rows; it is read again as a whole"]


def test_a_refused_stream_commits_no_partial_block(pg, make_settings, source):
    """A failed check refuses the stream after part of it was loaded: psql is killed before it sees
    an end, so every block it committed is whole and the load fails with the refusal."""
    settings, backup = _backup(make_settings, source)
    name = f"{source}_refused"
    fed = [0]

    def reader(sink):
        import zstandard

        with open(backup.path, "rb") as fh:
            stream = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
            while chunk := stream.read(1 << 20):
                sink(memoryview(chunk))
                fed[0] += len(chunk)
                if fed[0] > 30 << 20:
                    break
        raise FeedRefused("the artifact failed an earlier check", "", "")

    with pytest.raises(FeedRefused):
        _load_in_blocks(pg, settings, backup, name, reader=reader)
    with admin_conn(pg, name) as conn:
        n = conn.execute('SELECT count(*) FROM "Big Ones"').fetchone()[0]
    assert 0 < n < BIG and n % BLOCK_ROWS == 0
    assert not _children_left()


def test_a_psql_that_fails_stops_the_load_with_its_error_in_one_line(pg, make_settings, source, monkeypatch):
    settings, backup = _backup(make_settings, source)
    name = f"{source}_psqlfail"
    real = load_mod.data_psql_argv
    monkeypatch.setattr(load_mod, "data_psql_argv", lambda tools, db: real(tools, f"{db}_missing"))
    with pytest.raises(OpsError) as exc:
        _load_in_blocks(pg, settings, backup, name)
    assert str(exc.value).startswith("psql failed (exit 2): ") and "does not exist" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not _children_left()


def _children_left() -> list[str]:
    """The load's pg_restore or psql children still running."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                reading = b"COPY (SELECT" in fh.read()  # the proof's read of a committed block, not the load
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and comm in ("pg_restore", "psql") and fields[0] != "Z" and not reading:
            out.append(comm)
    return out


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_signal_mid_block_load_leaves_live_untouched_and_no_partial_block(pg, make_settings, source, tmp_path, sig):
    """A signal while psql commits blocks into the staging copy. SIGKILL: the children lose their
    input, so the block psql had open is rolled back, not committed, and `restore --recover` drops the
    staging copy. SIGTERM: the run stops its tools, drops the staging copy itself and exits 128+15.
    Either way the live database was never touched."""
    settings, backup = _backup(make_settings, source)
    cfg = settings_toml(settings, tmp_path / "opstower.toml")
    before = contents(pg, source)
    proc = subprocess.Popen([sys.executable, "-m", "opstower_core", "--config", str(cfg), "restore", str(backup.path),
                             "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # until the first block is in
        staging = next((d for d in databases(pg, source) if "_restore_" in d), None)
        if staging is not None:
            try:
                with admin_conn(pg, staging) as conn:
                    if conn.execute('SELECT count(*) FROM "Big Ones"').fetchone()[0] >= BLOCK_ROWS:
                        break
            except psycopg.Error:
                pass  # not created or not loaded yet
        time.sleep(0.05)
    assert proc.poll() is None and staging is not None, "the restore ended before a block was committed"
    proc.send_signal(getattr(signal, sig))
    rc = proc.wait(timeout=60)
    if sig == "SIGTERM":
        assert rc == 128 + signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
        assert staging not in databases(pg, source)  # rolled back by the run itself
        assert contents(pg, source) == before
        assert not _tools_for(staging)
        return
    with admin_conn(pg, staging) as conn:  # what the orphans leave: whole blocks only
        for _ in range(100):
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                                "AND backend_type = 'client backend'", (staging,)).fetchone():
                break
            time.sleep(0.1)
        n = conn.execute('SELECT count(*) FROM "Big Ones"').fetchone()[0]
    assert n % BLOCK_ROWS == 0 or n == BIG, n
    out = subprocess.run([sys.executable, "-m", "opstower_core", "--config", str(cfg), "restore", "--recover"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert staging not in databases(pg, source)
    assert contents(pg, source) == before
    assert not _tools_for(staging)  # the killed run's psql and pg_restore ended with their input


def _tools_for(dbname: str) -> list[str]:
    """psql or pg_restore processes, anyone's, whose command line names `dbname`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) in (b"psql", b"pg_restore") and any(
                dbname.encode() in a for a in argv):
            out.append(argv[0].decode())
    return out
