"""Point-in-time recovery end to end: a real PostgreSQL 18 archiving to a real SeaweedFS via barman-cloud."""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from opstower_core.cli import main
from opstower_core.doctor import run_doctor
from opstower_core.events import Status
from opstower_core.health import check_health
from opstower_core.health.checks import HealthState
from opstower_core.pitr import (
    RecoveryTarget,
    beat,
    find_accidents,
    pitr_status,
    read_heartbeat,
    recover_to,
    take_base_backup,
    wal_push,
)
from opstower_core.pitr.barman import client_argv, cloud_options, destination_url
from opstower_core.pitr.launcher import launcher_path
from opstower_core.pitr.status import archived_segments
from opstower_core.pitr.wal import archived_copy, wal_key
from opstower_core.storage.s3 import store_for

UGLY = """
CREATE SCHEMA "Ünïcode Schema";
CREATE TABLE "Ünïcode Schema"."Tab ""quoted"" é" ("Id" int PRIMARY KEY, "select" text, at timestamptz);
INSERT INTO "Ünïcode Schema"."Tab ""quoted"" é" VALUES (1, 'Zürich', '2026-01-01 12:00+01'), (2, '東京 🚀', NULL);
CREATE VIEW "Ünïcode Schema"."Vüe" AS SELECT "Id" FROM "Ünïcode Schema"."Tab ""quoted"" é";
"""
UGLY_TABLE = '"Ünïcode Schema"."Tab ""quoted"" é"'
PROOF = re.compile(r"(\d+) tables, ([\d,]+) rows, digests equal, inventory equal \((\d+) objects\)")


@dataclass
class History:
    after_b1: datetime
    after_b2: datetime
    drop_time: datetime


@pytest.fixture(scope="module")
def history(pitr_env) -> History:
    """A base backup, then three batches of rows (times noted between them), then DROP TABLE keep."""
    s = pitr_env.settings
    take_base_backup(s, s.target())
    with pitr_env.conn("app") as c:
        c.execute("CREATE TABLE rows_t (batch int, n int, PRIMARY KEY (batch, n))")  # keyed: a merge matches rows
        c.execute("CREATE TABLE keep (id int primary key, v text)")
        c.execute("INSERT INTO keep SELECT g, 'v' || g FROM generate_series(1, 50) g")
        c.execute(UGLY)  # what a copy-out must carry through dump, load and proof
        c.execute("INSERT INTO rows_t SELECT 1, g FROM generate_series(1, 100) g")
        # A second after the base backup: its end time (barman's backup.info) may be whole seconds, and
        # it must end before the recovery point. Between batches, commit times are microseconds on one
        # clock: a short pause keeps them apart.
        time.sleep(1.1)
        after_b1 = c.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.2)
        c.execute("INSERT INTO rows_t SELECT 2, g FROM generate_series(1, 100) g")
        time.sleep(0.2)
        after_b2 = c.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.2)
        c.execute("INSERT INTO rows_t SELECT 3, g FROM generate_series(1, 100) g")
        c.execute("DROP TABLE keep")
        drop_time = c.execute("SELECT clock_timestamp()").fetchone()[0]
    pitr_env.switch_wal()
    return History(after_b1, after_b2, drop_time)


def test_enable_reports_ready_and_launcher_runs_as_server_user(pitr_env):
    from opstower_core.pitr import enable

    report = enable(pitr_env.settings, pitr_env.settings.target())
    assert report.ready, report.as_dict()
    assert report.os_user == "pgserver"
    assert report.launcher_ok, report.launcher_detail
    assert {c.name: c.current for c in report.checks}["archive_mode"] == "on"
    # Its shebang is a Python the server's user can run (not the venv under /root).
    assert launcher_path(pitr_env.settings).read_text().splitlines()[0] in ("#!/usr/bin/python3", "#!/usr/bin/python3.11")


def test_status_shows_backup_window_and_archiver(pitr_env, history):
    st = pitr_status(pitr_env.settings, pitr_env.settings.target())
    assert [b.status for b in st.backups] == ["DONE"]
    assert st.segments >= 2 and not st.gaps
    assert st.earliest is not None and st.latest is not None and st.earliest <= st.latest
    assert st.archiver and st.archiver["failed_count"] == 0 and not st.archiver["failing"]


def test_recover_to_time_between_batches_copies_exactly_batch_1(pitr_env, history, capsys):
    killed = pitr_env.root / "state" / "pitr-copy" / "copy-999999999-x"  # a killed copy-out's temporary artifact
    killed.mkdir(parents=True)
    with pitr_env.conn("app") as c:  # after the recovery point: 10 rows of batch 1 lost, 5 rows written
        c.execute("DELETE FROM rows_t WHERE batch = 1 AND n <= 10")
        c.execute("INSERT INTO rows_t SELECT 4, g FROM generate_series(1, 5) g")
    code = main(["--config", str(pitr_env.config), "restore", "--to-time", history.after_b1.isoformat(sep=" "),
                 "--copy-db", "app", "--as", "app_at_b1", "--tables", "rows_t", "--force"])
    out = capsys.readouterr().out
    assert code == 0, out
    # The same recovered cluster, then the table recovery from it: the lost rows merged back, later rows kept.
    with pitr_env.conn("app") as c:
        assert c.execute("SELECT batch, count(*) FROM rows_t GROUP BY 1 ORDER BY 1").fetchall() == [
            (1, 100), (2, 100), (3, 100), (4, 5)]
    merged = out.split("Table recovery:", 1)[1]
    assert "public.rows_t: insert 10 row(s)" in merged, out
    assert "all 100 keys of the recovered cluster present live" in merged, out
    moment = f"as it was just before {history.after_b1.isoformat(sep=' ')}"
    assert f"Recovered from database app {moment} (recovered cluster on 127.0.0.1:" in merged, out
    assert "Compared: the live tables against the recovered cluster's tables" in merged, out
    with pitr_env.conn("app_at_b1") as c:
        assert c.execute("SELECT batch, count(*) FROM rows_t GROUP BY 1 ORDER BY 1").fetchall() == [(1, 100)]
        assert c.execute("SELECT count(*) FROM keep").fetchone()[0] == 50
        assert c.execute(f'SELECT "select" FROM {UGLY_TABLE} ORDER BY "Id"').fetchall() == [("Zürich",), ("東京 🚀",)]
    # Through the restore engine: its verification, load and proof, each a timed step.
    for title in ("Dumping app from the recovered cluster", "Verifying backup file", "Restoring database from backup",
                  "Verifying restored database", "Removing the temporary artifact"):
        assert title in out, out
    proved = PROOF.search(out.split("Copied app", 1)[1])
    assert proved, out
    # rows_t, keep and the ugly table: 100 + 50 + 2 rows, digests and inventory equal.
    assert (int(proved[1]), proved[2]) == (3, "152"), proved[0]
    assert int(proved[3]) >= 6  # tables, the view, the schema, the primary keys
    with pitr_env.conn() as c:  # no staging database left beside the copy
        assert c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'app_at_b1%' ORDER BY 1").fetchall() \
            == [("app_at_b1",)]
    assert not list((pitr_env.root / "state" / "pitr-copy").iterdir())  # the temporary artifact was removed
    assert not list((pitr_env.root / "scratch").iterdir())  # the scratch cluster was removed


def test_accident_found_and_recovered_to_just_before_it(pitr_env, history):
    found = find_accidents(pitr_env.settings, pitr_env.settings.target(), min_rows=1000)
    drops = [a for a in found if a.kind == "DROP"]
    assert len(drops) == 1, [a.line() for a in found]
    drop = drops[0]
    assert drop.database == "app" and drop.time is not None
    assert abs((drop.time - history.drop_time).total_seconds()) < 5
    cluster = recover_to(pitr_env.settings, pitr_env.settings.target(), RecoveryTarget(xid=drop.xid))
    try:
        import psycopg

        with psycopg.connect(**cluster.target("app").conninfo(), autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM keep").fetchone()[0] == 50
            assert c.execute("SELECT count(*) FROM rows_t").fetchone()[0] == 300
        # The recovered cluster never archives into the archive it came from, and holds no secret.
        auto = (cluster.pgdata / "postgresql.auto.conf").read_text()
        assert "archive_mode = 'off'" in auto
        assert pitr_env.s3.secret_key not in auto and pitr_env.s3.access_key not in auto
        _copy_out_whose_proof_fails_leaves_nothing_then_the_same_name_copies(pitr_env, cluster)
        _tables_recovered_from_the_cluster(pitr_env, cluster, RecoveryTarget(xid=drop.xid).describe())
    finally:
        cluster.discard()


def _tables_recovered_from_the_cluster(pitr_env, cluster, moment: str) -> None:
    """The console's path (recover_tables_from_cluster): batch 2 deleted after the recovery point is merged
    back and the dropped table restored, from the cluster as it was just before the DROP; rows written
    later stay; the cluster is left to its caller."""
    from opstower_core.events import StepFinished
    from opstower_core.recover import (
        RecoverOptions,
        RecoveryPlan,
        RecoveryResult,
        recover_tables_from_cluster,
    )

    s, live = pitr_env.settings, pitr_env.settings.target()
    with pitr_env.conn("app") as c:
        c.execute("DELETE FROM rows_t WHERE batch = 2")
        c.execute("INSERT INTO rows_t SELECT 5, g FROM generate_series(1, 7) g")
        before = dict(c.execute("SELECT batch, count(*) FROM rows_t GROUP BY 1").fetchall())
    options = RecoverOptions(tables=["rows_t", "keep"])
    plan = recover_tables_from_cluster(s, cluster, "app", live, options, moment=moment, plan_only=True)
    assert isinstance(plan, RecoveryPlan) and plan.artifact is None
    assert {t.table: (t.action, t.insert) for t in plan.tables} == {"public.rows_t": ("merge", 100),
                                                                    "public.keep": ("restore", 50)}
    events: list = []
    asked: list = []
    result = recover_tables_from_cluster(s, cluster, "app", live, options, lambda p: asked.append(p) or "app",
                                         events.append, moment=moment)
    assert isinstance(result, RecoveryResult) and result.ok, result.sentence
    assert asked and asked[0].source == result.source
    with pitr_env.conn("app") as c:
        after = dict(c.execute("SELECT batch, count(*) FROM rows_t GROUP BY 1").fetchall())
        assert after == {**before, 2: 100} and after[5] == 7  # batch 2 back, the later rows still there
        assert c.execute("SELECT count(*), min(v) FROM keep").fetchone() == (50, "v1")
    # The result names the moment and what the proof compared with; the steps only a backup needs are skipped.
    assert result.source.startswith(f"database app as it was {moment} (recovered cluster on 127.0.0.1:{cluster.port}")
    assert moment in result.sentence and "proven against the recovered cluster's tables" in result.sentence
    assert "recovered cluster's tables" in result.compared and "independent record" in result.compared
    proofs = {t.table: (t.proven, t.proof) for t in result.tables}
    assert proofs["public.rows_t"] == (True, "all 300 keys of the recovered cluster present live"), proofs
    assert proofs["public.keep"][0] and "equal to the recovered cluster's (50 rows" in proofs["public.keep"][1]
    skipped = {e.step: e.detail for e in events if isinstance(e, StepFinished) and e.status == Status.SKIP}
    assert set(skipped) == {"verify", "download", "scratch", "prove_scratch"}, skipped
    assert "independent record" in skipped["prove_scratch"]
    assert result.pre_change_artifact and result.scratch_database is None
    assert cluster.running()  # the caller's to keep or discard


def _copy_out_whose_proof_fails_leaves_nothing_then_the_same_name_copies(pitr_env, cluster) -> None:
    """A copy-out is proven like a logical restore: a change to the staging copy between the load and
    the proof (a concurrent session here) fails it; nothing is left and the cluster is as it was."""
    import psycopg

    from opstower_core.errors import OpsError
    from opstower_core.events import StepFinished, StepStarted
    from opstower_core.restore import copy_from_cluster

    s, live = pitr_env.settings, pitr_env.settings.target()
    source = cluster.target("app")

    def state_of_cluster() -> list:
        with psycopg.connect(**source.conninfo(), autocommit=True) as c:
            return c.execute("SELECT batch, count(*), sum(n) FROM rows_t GROUP BY 1 ORDER BY 1").fetchall()

    before = state_of_cluster()
    with pytest.raises(OpsError, match="Database app already exists"):  # never into an existing database
        copy_from_cluster(s, cluster, "app", live, "app")

    def tamper(event) -> None:
        if isinstance(event, StepFinished) and event.step == "restore":
            with pitr_env.conn() as c:
                staging = c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'app_fix_restore_%'"
                                    ).fetchone()[0]
            with pitr_env.conn(staging) as c:  # same row count, other content: only the digests see it
                c.execute("UPDATE rows_t SET n = n + 1000 WHERE batch = 2 AND n = 7")

    with pytest.raises(OpsError) as failed:
        copy_from_cluster(s, cluster, "app", live, "app_fix", tamper)
    assert "differs from the artifact" in failed.value.what + failed.value.state, failed.value.sentence
    assert "table public.rows_t" in failed.value.sentence and "was dropped" in failed.value.sentence
    with pitr_env.conn() as c:
        assert c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'app_fix%'").fetchall() == []
    assert state_of_cluster() == before
    assert not list((pitr_env.root / "state" / "pitr-copy").iterdir())

    events: list = []
    done = copy_from_cluster(s, cluster, "app", live, "app_fix", events.append)
    assert done.database == "app_fix" and done.source == "app" and done.proof_status == "PASS"
    assert PROOF.match(done.proof) and (done.tables, done.rows) == (3, 352), done.proof  # before the DROP: keep too
    assert done.seconds > 0 and done.artifact_bytes > 0
    started = [e.step for e in events if isinstance(e, StepStarted)]
    finished = {e.step: e for e in events if isinstance(e, StepFinished)}
    assert started[0] == "copy_dump" and started[-1] == "copy_cleanup"
    assert {"verify", "drop_create", "restore", "verify_restored", "swap"} <= set(started)
    assert all(finished[step].seconds >= 0 for step in started)
    assert done.proof in finished["verify_restored"].detail
    assert [t for t, _, _ in done.phases][0].startswith("Dumping app") and len(done.phases) == len(started)
    with pitr_env.conn("app_fix") as c:
        assert c.execute(f"SELECT count(*) FROM {UGLY_TABLE}").fetchone()[0] == 2
    with pitr_env.conn() as c:
        c.execute("DROP DATABASE app_fix")
    assert state_of_cluster() == before


def test_wal_push_refuses_different_bytes_and_accepts_identical(pitr_env, history, tmp_path):
    st = pitr_status(pitr_env.settings)
    name = st.latest_segment
    key, data = archived_copy(pitr_env.settings, name)
    same = tmp_path / "same" / name
    same.parent.mkdir()
    same.write_bytes(data)
    assert wal_push(pitr_env.settings, same) == 0
    other = tmp_path / "other" / name
    other.parent.mkdir()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert wal_push(pitr_env.settings, other) == 1
    assert archived_copy(pitr_env.settings, name)[1] == data  # the archive is unchanged


def test_secrets_absent_from_argv_launcher_and_config(pitr_env, history):
    s = pitr_env.settings
    argv = client_argv("cloud_backup", [*cloud_options(s), destination_url(s), s.pitr.server_name])
    secret = pitr_env.s3.secret_key
    assert not any(secret in a or pitr_env.s3.access_key in a for a in argv)
    assert secret not in launcher_path(s).read_text()
    assert secret not in pitr_env.config.read_text()
    creds = s.pitr.credentials_file
    info = creds.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid != os.geteuid()  # owned by the server's user

# --- PITR in the operations commands: health, doctor, schedule, prune ---------------------------


def _pitr_checks(report):
    return {c.check: c for c in report.checks if c.check.startswith("pitr_")}


def test_deleted_segment_is_a_gap_in_status_and_critical_in_health(pitr_env, history):
    s = pitr_env.settings
    assert s.pitr.enabled
    before = _pitr_checks(check_health(s))
    assert before["pitr_archive"].state == HealthState.OK, before["pitr_archive"].line()
    assert before["pitr_archiver"].state == HealthState.OK, before["pitr_archiver"].line()

    for _ in range(2):  # two more closed segments: the one deleted below has archived WAL after it
        with pitr_env.conn("app") as c:
            c.execute("CREATE TABLE IF NOT EXISTS filler (n int); INSERT INTO filler VALUES (1)")
        pitr_env.switch_wal()
    st = pitr_status(s)
    segments, _ = archived_segments(s)
    first = int(st.backups[0].begin_wal[8:16], 16) * 256 + int(st.backups[0].begin_wal[16:24], 16)
    inside = [g for g in segments if g.number > first and g.number < segments[-1].number]
    assert inside, [g.name for g in segments]
    victim = inside[0]
    store = store_for(s.s3)
    key = wal_key(s, victim.name)
    data = store.get_bytes(key)
    store.client.delete_object(Bucket=store.bucket, Key=key)
    try:
        st = pitr_status(s, s.target())
        assert len(st.gaps) == 1 and victim.name not in {n for gap in st.gaps for n in gap}
        report = check_health(s)
        archive = _pitr_checks(report)["pitr_archive"]
        assert archive.state == HealthState.CRITICAL and "gap" in archive.detail, archive.line()
        assert report.state == HealthState.CRITICAL and "gap" in report.summary
    finally:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=data)
    assert not pitr_status(s).gaps


def test_doctor_runs_the_launcher_as_the_server_user_and_fails_on_an_unreadable_config(pitr_env):
    s = pitr_env.settings
    steps = {r.step: r for r in run_doctor(s)}
    assert steps["pitr_launcher"].status == Status.PASS, steps["pitr_launcher"].detail
    assert "as pgserver" in steps["pitr_launcher"].detail
    pitr_env.config.chmod(0o600)  # root's only: the server's user can no longer read it
    try:
        launcher = {r.step: r for r in run_doctor(s)}["pitr_launcher"]
    finally:
        pitr_env.config.chmod(0o644)
    assert launcher.status == Status.FAIL and "pgserver" in launcher.detail, launcher.detail


def test_schedule_adds_daily_base_backup_and_minute_heartbeat_beside_the_hourly_dump(pitr_env, capsys):
    cfg = str(pitr_env.config)
    assert main(["--config", cfg, "schedule", "--print", "cron"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith("#")]
    by_job = {ln.rsplit("/", 1)[-1].split(".log")[0]: ln for ln in lines}
    assert by_job["backup"].startswith("0 * * * * ")
    assert by_job["base-backup"].startswith("30 1 * * * ") and "base-backup >>" in by_job["base-backup"]
    assert by_job["heartbeat"].startswith("* * * * * ") and "pitr heartbeat >>" in by_job["heartbeat"]
    assert main(["--config", cfg, "schedule", "--print", "systemd", "--no-heartbeat"]) == 0
    out = capsys.readouterr().out
    assert "opstower-base-backup.timer" in out and "OnCalendar=*-*-* 01:30:00" in out
    assert "heartbeat" not in out
    # Another system's archive ([pitr] read_only): neither its base backups nor a heartbeat row are ours.
    ro = pitr_env.root / "read-only.toml"
    ro.write_text(pitr_env.config.read_text().replace("[pitr]\n", "[pitr]\nread_only = true\n"))
    assert main(["--config", str(ro), "schedule", "--print", "cron"]) == 0
    out = capsys.readouterr().out
    assert "backup >>" in out and "base-backup" not in out and "heartbeat" not in out


def test_recover_to_latest_reads_back_the_heartbeat_then_its_timeline_2_is_followed(pitr_env, history, capsys):
    """Recovery to latest; then that cluster made the service archives timeline 2 into the same place.

    After the gap test on purpose: from here on the archive holds two timelines.
    """
    import psycopg

    from opstower_core.pg.admin import literal
    from opstower_core.pitr import archive_command

    s = pitr_env.settings
    written = beat(s.target())
    pitr_env.switch_wal()
    cluster = recover_to(s, s.target(), RecoveryTarget())
    try:
        assert read_heartbeat(cluster.target("app")) == written
        assert "timeline 2" in cluster.reached
        # Replay took segments from the cluster's prefetch spool, removed at promotion.
        assert "--spool" in (cluster.pgdata / "postgresql.auto.conf").read_text()
        print("spool use (prefetched, delivered):", cluster.spool_use)
        assert cluster.spool_use[1] >= 1, cluster.spool_use
        assert not cluster.spool.exists()
        cluster.stop()
        with open(cluster.pgdata / "postgresql.auto.conf", "a") as fh:
            fh.write(f"archive_mode = 'on'\narchive_command = {literal(archive_command(s))}\n")
        assert cluster.pg_ctl("start", "-w", "-t", "60", "-l", str(cluster.directory / "postgres.log"))[0] == 0
        # Promotion happened with archiving off, so the history file is pushed by hand (replacement step 3).
        assert wal_push(s, cluster.pgdata / "pg_wal" / "00000002.history") == 0
        with psycopg.connect(**cluster.target("app").conninfo(), autocommit=True) as c:
            c.execute("CREATE TABLE after_failover (n int)")
            c.execute("INSERT INTO after_failover VALUES (1)")
            c.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                last = c.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
                if last and last.startswith("00000002"):
                    break
                time.sleep(0.2)
        pitr_env.switch_wal()  # the old server keeps archiving timeline 1 past the switch point
        st = pitr_status(s)
        assert st.timelines == [1, 2]
        assert [(h["parent"], h["timeline"]) for h in st.history] == [(1, 2)]
        assert st.latest_segment == last and not st.gaps
        assert st.as_dict()["history"][0]["switch_lsn"]
        capsys.readouterr()
        assert main(["--config", str(pitr_env.config), "pitr", "status"]) == 0
        assert "timeline 2 branched from 1 at" in capsys.readouterr().out
    finally:
        cluster.discard()
    assert not cluster.directory.exists()


def test_prune_applies_the_recovery_window_keeping_the_newest_base_backups(pitr_env, history, capsys):
    """Runs last: it deletes the first base backup (and the WAL only it needed)."""
    import dataclasses

    from opstower_core.pitr import prune_base_backups

    s = pitr_env.settings
    take_base_backup(s, s.target())
    ids = [b.backup_id for b in pitr_status(s).backups]
    assert len(ids) == 2
    # The configured window (7 days) covers both: prune --dry-run would delete nothing.
    assert main(["--config", str(pitr_env.config), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "pitr: base backups by RECOVERY WINDOW OF 7 DAYS, keep_last 2: 2 kept, 0 would delete" in out, out
    # A window of 0 days with keep_last 1: only the newest is needed; dry run first, then for real.
    narrow = dataclasses.replace(s, pitr=dataclasses.replace(s.pitr, window_days=0, keep_last=1))
    dry = prune_base_backups(narrow, dry_run=True)
    assert dry.deleted == [ids[0]] and dry.kept == [ids[1]]
    assert [b.backup_id for b in pitr_status(s).backups] == ids  # nothing deleted by the dry run
    done = prune_base_backups(narrow)
    assert done.deleted == [ids[0]]
    st = pitr_status(s)
    assert [b.backup_id for b in st.backups] == [ids[1]] and not st.gaps


def test_table_recovery_from_a_moment_refuses_bad_usage_before_recovering(pitr_env, capsys):
    """Usage errors come before the minutes a recovery takes: nothing is recovered (no scratch cluster)."""
    cfg = str(pitr_env.config)
    cases = [
        (["latest", "--to-latest", "--tables", "rows_t", "--force"], "Two sources"),
        (["--to-latest", "--tables", "rows_t", "--mode", "copy"], "needs --into"),
        (["--to-latest", "--tables", "rows_t", "--mode", "replace", "--with-parents", "--force"], "--with-parents"),
        (["--to-latest", "--tables", "rows_t"], "no terminal to ask on"),  # pytest's stdin is not a terminal
        (["--to-latest", "--mode", "replace"], "belongs to a table recovery"),
    ]
    for argv, said in cases:
        assert main(["--config", cfg, "restore", *argv]) != 0, argv
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (argv, err)
    scratch = pitr_env.root / "scratch"
    assert not scratch.exists() or not list(scratch.iterdir())
