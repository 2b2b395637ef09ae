"""Issue 18: the artifact's table digests come from an idle-priority process beside the load
(pg/digest_job.py). They count only when that process read the verified bytes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.events import Status
from opstower_core.pg.digest import DumpDigester
from opstower_core.pg.digest_job import DigestJob
from opstower_core.restore import RestoreOptions, plan_restore, run_restore
from support.restore import contents
from support.servers import create_database

SCHEMA = """
CREATE TABLE "Mixed Case" (id int PRIMARY KEY, "Name" text, note text);
INSERT INTO "Mixed Case" SELECT g, 'naïve ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'tab\there' END
  FROM generate_series(1, 3000) g;
CREATE TABLE other (k text PRIMARY KEY);
INSERT INTO other SELECT 'k' || g FROM generate_series(1, 10) g;
SELECT lo_from_bytea(0, convert_to(repeat(E'a large object\nwith "COPY x FROM stdin;"\n', 2000), 'UTF8'));
"""


def _backup(pg, make_settings, fmt: str = "custom"):
    db = f"dj_{uuid.uuid4().hex[:8]}"
    create_database(pg, db, SCHEMA)
    settings = make_settings(db)
    return db, settings, run_backup(settings, options=BackupOptions(local_only=True, fmt=fmt))


@pytest.mark.parametrize("walker", ["python", "pg_restore"])
def test_the_job_digests_what_the_in_process_reader_digests(pg, make_settings, walker):
    """The same digests whether the job walks the archive's data blocks in Python or has pg_restore
    write them out as COPY text (what the restore and the full test use for a custom archive)."""
    _, _, backup = _backup(pg, make_settings)
    pg_restore = str(pg.bin_dir / "pg_restore") if walker == "pg_restore" else None
    got, why = DigestJob(backup.path, "zstd", multiset=True, pg_restore=pg_restore).result(backup.meta["sha256"])
    assert got is not None, why
    import zstandard

    d = DumpDigester()
    d.write(zstandard.ZstdDecompressor().decompress(backup.path.read_bytes(), max_output_size=1 << 30))
    d.close()
    assert got.tables == d.tables and got.copy_columns == d.copy_columns
    cheap, _ = DigestJob(backup.path, "zstd", pg_restore=pg_restore).result(backup.meta["sha256"])  # no sums
    assert cheap is not None and cheap.tables == {k: dataclasses.replace(v, multiset=None) for k, v in d.tables.items()}
    assert got.tables[("public", "Mixed Case")].rows == 3000


def test_a_pg_restore_that_cannot_read_the_archive_gives_no_digests_and_says_why(pg, make_settings, tmp_path):
    """A damaged data block: pg_restore stops, and the job says so in one line instead of digests."""
    _, _, backup = _backup(pg, make_settings)
    import zstandard

    raw = bytearray(zstandard.ZstdDecompressor().decompress(backup.path.read_bytes(), max_output_size=1 << 30))
    raw[-200:] = b"\xff" * 200  # the last data block and the trailer
    bad = tmp_path / "bad.dump.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    import hashlib

    got, why = DigestJob(bad, "zstd", pg_restore=str(pg.bin_dir / "pg_restore")).result(
        hashlib.sha256(bad.read_bytes()).hexdigest())
    assert got is None and "\n" not in why
    assert why.startswith("the artifact could not be digested (pg_restore could not read the archive (pg_restore: ")


def test_other_bytes_or_an_unreadable_file_give_no_digests_and_say_why(pg, make_settings, tmp_path):
    _, _, backup = _backup(pg, make_settings)
    got, why = DigestJob(backup.path, "zstd").result("0" * 64)
    assert got is None and "changed between the verified read and the digest read" in why
    cut = tmp_path / "cut.dump.zst"
    cut.write_bytes(backup.path.read_bytes()[: backup.path.stat().st_size // 2])
    got, why = DigestJob(cut, "zstd").result(backup.meta["sha256"])
    assert got is None and why


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_a_restore_proves_with_the_digests_taken_beside_the_load(pg, make_settings, fmt):
    """A custom archive is loaded in blocks: its digests come from that load's own data stream. A plain
    dump goes to psql whole: its digests come from the job."""
    db, settings, backup = _backup(pg, make_settings, fmt)
    target = f"{db}_new"
    result = run_restore(settings, plan_restore(settings, str(backup.path), options=RestoreOptions(target_db=target)))
    assert result.ok, result.sentence
    assert result.proof is not None and result.proof.status == Status.PASS and result.proof.rows == 3010
    log = max((settings.backup_dir / "logs").glob("restore_*.log"), key=os.path.getmtime).read_text()
    if fmt == "custom":
        assert "The artifact's table digests were taken from the load's own verified data stream" in log
    else:  # at idle priority beside the load, or by its normal-priority twin if this host was busy meanwhile
        assert "The artifact's table digests were computed" in log
    assert "(2 tables, ready after" in log
    assert contents(pg, target) == contents(pg, db)


def test_an_artifact_replaced_during_the_load_is_not_proven(pg, make_settings, monkeypatch):
    """The job reads the file after the verified read began: if the bytes differ, the proof is not
    made and the step says so (WARN), instead of comparing against digests of other bytes."""
    db, settings, backup = _backup(pg, make_settings, "plain")  # a custom archive's digests need no second read
    _, _, other = _backup(pg, make_settings, "plain")
    real = DigestJob.__init__

    def swapped(self, path, compression, **kw):  # the job reads another artifact's bytes
        real(self, other.path, compression, **kw)

    monkeypatch.setattr(DigestJob, "__init__", swapped)
    target = f"{db}_new"
    result = run_restore(settings, plan_restore(settings, str(backup.path), options=RestoreOptions(target_db=target)))
    assert result.ok, result.sentence
    step = {s.step: s for s in result.steps}["verify_restored"]
    assert step.status == Status.WARN
    assert "restore proof not made (the artifact's bytes changed between the verified read" in step.detail
    assert result.proof is None


def test_full_test_proves_with_the_jobs_digests(pg, make_settings):
    from opstower_core.events import StepLog
    from opstower_core.verify import verify

    for fmt, how in (("custom", "taken from the load's own verified data stream"), ("plain", "were computed")):
        _, settings, backup = _backup(pg, make_settings, fmt)
        events: list = []
        res = verify(settings, str(backup.path), full_test=True, on_event=events.append)
        assert res.ok and res.restored_proof is not None and res.restored_proof.status == Status.PASS
        assert res.restored_proof.rows == 3010
        logs = [e.line for e in events if isinstance(e, StepLog)]
        assert any(how in line and "(2 tables, ready after" in line for line in logs), fmt


def test_a_reordered_table_is_proven_by_a_second_read_with_the_sums(pg, make_settings):
    """The job's first pass leaves out the order-independent sums (a third of its work). A restored
    table whose order differs from the dump's is proven by a second read of the artifact with them:
    same rows in another order pass (noted); a changed row does not."""
    from opstower_core.verify import verify
    from support.restore import change_scratch_after_load

    _, settings, backup = _backup(pg, make_settings)
    first, _ = DigestJob(backup.path, "zstd").result(backup.meta["sha256"])
    assert first is not None and all(d.multiset is None for d in first.tables.values())

    def run(sql: str):  # an UPDATE writes a new row version at the heap's end
        return verify(settings, str(backup.path), full_test=True,
                      on_event=change_scratch_after_load(pg, sql)).restored_proof

    moved = run('UPDATE "Mixed Case" SET "Name" = "Name" WHERE id = 5')
    assert moved.status == Status.PASS, moved.differences
    assert any(n.startswith("row order of public.Mixed Case") for n in moved.not_compared)
    changed = run('UPDATE "Mixed Case" SET "Name" = \'other\' WHERE id = 5')
    assert changed.status == Status.FAIL
    assert changed.differences == ["table public.Mixed Case: 3,000 rows in the artifact and restored, content differs"]


@pytest.mark.parametrize("allowed", [True, False], ids=["raised", "twin"])
def test_a_starved_idle_job_is_raised_or_twinned_and_gives_the_same_digests(pg, make_settings, monkeypatch, allowed):
    """Once the caller waits, the digests are on the RTO clock. With its core kept busy by other
    work at normal priority, SCHED_IDLE gets almost no CPU (beside two busy loops, an idle child
    digesting 400,000 rows was not done after 120 s). The wait raises the starved child to normal
    priority where the system allows it (root here); where it does not (an unprivileged user: the
    permission refusal is simulated), a twin at normal priority reads the same file and the first
    to finish answers. Either way: the same digests, in seconds."""
    import zstandard

    from opstower_core.pg import digest_job

    if not allowed:
        monkeypatch.setattr(digest_job, "_promote", lambda pid: False)
    db = f"dj_{uuid.uuid4().hex[:8]}"  # enough rows that the digests take the idle child a while
    create_database(pg, db, SCHEMA + "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM "
                    "generate_series(1, 400000) g;")
    backup = run_backup(make_settings(db), options=BackupOptions(local_only=True))
    d = DumpDigester(multiset=False)
    d.write(zstandard.ZstdDecompressor().decompress(backup.path.read_bytes(), max_output_size=1 << 30))
    d.close()
    # One core, kept busy at normal priority: this thread and what it starts (the busy loop, the job,
    # its twin) run on it alone, so the other test worker keeps the other cores.
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        job = DigestJob(backup.path, "zstd")
        t0 = time.monotonic()
        got, why = job.result(backup.meta["sha256"])
        took = time.monotonic() - t0
    finally:
        os.sched_setaffinity(0, before)
        spin.kill()
        spin.wait()
    assert got is not None, why
    assert got.tables == d.tables and got.copy_columns == d.copy_columns
    assert took < 30
    assert job.proc.returncode is not None  # no child left running
    if allowed and os.geteuid() == 0:
        assert got.promoted and not got.twin and "then at normal priority" in got.how()
    if not allowed:
        assert got.twin and not got.promoted and "second reader at normal priority" in got.how()
