"""Retention never loses the last good copy (issue 13): proofs, holds, pre-restore copies, leftovers.

Real backups of a real PostgreSQL (and real SeaweedFS uploads), damaged as a disk damages
them; "later" is retention run with a clock 60 days ahead, so the backups are past
retention without waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opstower_core.artifacts.names import new_stamp, parse_name
from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import Settings
from opstower_core.repo.holds import active_holds, hold
from opstower_core.repo.retention import apply_retention
from opstower_core.runs.history import StateStore
from opstower_core.storage.s3 import S3Store
from opstower_core.verify import verify
from support.servers import admin_conn, create_database, settings_toml, unique

SMALL = "CREATE TABLE public.t (id integer primary key, v text); INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(1, 300) g;"
LATER = datetime.now(UTC) + timedelta(days=60)


def backups(pg, make_settings, n: int, s3=None, **changes) -> tuple[Settings, list[Path]]:
    """`n` real local backups of a fresh database, oldest first."""
    db = unique("rs")
    create_database(pg, db, SMALL)
    settings = make_settings(db, s3=s3, retention_days=30, **changes)
    paths = [run_backup(settings, options=BackupOptions(local_only=s3 is None)).path for _ in range(n)]
    return settings, paths


def flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit: only a checksum can tell
    path.write_bytes(bytes(data))


def decisions(report) -> dict[str, tuple[str, str]]:
    return {d.artifact: (d.action, d.reason) for d in report.decisions if d.where == "local"}


def test_corrupt_newest_copies_never_count_and_the_intact_older_ones_stay(pg, make_settings) -> None:
    settings, paths = backups(pg, make_settings, 5, keep_last=3)
    intact, corrupt = paths[:2], paths[2:]
    for p in corrupt:
        flip_one_bit(p)
        assert not verify(settings, p).ok  # recorded as FAIL in the state file
    state = StateStore(settings.state_dir)
    assert {state.verdict(p.name).status for p in corrupt} == {"FAIL"} and state.verdict(intact[0].name) is None

    # keep_last 3, only two can be proven good: nothing is redundant, nothing goes.
    report = apply_retention(settings, settings.target().dbname, now=LATER)
    assert report.deleted == []
    assert sorted(report.kept_for_safety) == sorted(p.name for p in intact)
    assert sorted(report.kept_unproven) == sorted(p.name for p in corrupt)
    why = decisions(report)
    assert why[intact[0].name][0] == "keep" and "sha256 re-checked" in why[intact[0].name][1]
    assert "only 2 of the newest 3 backups could be proven good" in why[corrupt[0].name][1]
    assert "verification FAILED" in why[corrupt[0].name][1]
    assert all(p.exists() for p in paths)

    # keep_last 2: the two intact ones are proven good, so the corrupt ones past retention are redundant.
    two = settings.with_changes(keep_last=2)
    report = apply_retention(two, two.target().dbname, now=LATER)
    assert sorted(report.deleted) == sorted(p.name for p in corrupt)
    assert all(p.exists() for p in intact) and not any(p.exists() for p in corrupt)
    assert "verification FAILED" in decisions(report)[corrupt[0].name][1]


def test_a_flipped_bit_is_caught_by_the_sha256_without_any_verification(pg, make_settings) -> None:
    settings, paths = backups(pg, make_settings, 3, keep_last=2)
    flip_one_bit(paths[-1])  # the newest: never verified, its size still matches
    report = apply_retention(settings, settings.target().dbname, now=LATER)
    assert report.deleted == [paths[-1].name]
    assert "sha256 does not match its metadata" in decisions(report)[paths[-1].name][1]
    assert paths[0].exists() and paths[1].exists()


def test_a_held_artifact_is_never_deleted_and_a_dead_holder_holds_nothing(pg, make_settings) -> None:
    settings, paths = backups(pg, make_settings, 3, keep_last=1)
    oldest = paths[0]
    with hold(settings, oldest, "restore of it into app"):
        report = apply_retention(settings, settings.target().dbname, now=LATER)
        assert oldest.exists() and report.deleted == [paths[1].name]
        action, reason = decisions(report)[oldest.name]
        assert action == "keep" and f"held by pid {os.getpid()} (restore of it into app)" in reason
        assert report.kept_held == [oldest.name]
    assert active_holds(settings) == {}  # released on exit

    # A holder killed with SIGKILL cannot release its hold: the dead pid's hold is ignored.
    code = ("import sys, time\nfrom opstower_core.config import Settings\nfrom opstower_core.repo.holds import hold\n"
            f"with hold(Settings(state_dir={str(settings.state_dir)!r}), {oldest.name!r}, 'killed restore'):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert oldest.name in active_holds(settings)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = apply_retention(settings, settings.target().dbname, now=LATER)
    assert report.deleted == [oldest.name] and not oldest.exists()
    assert not list((settings.state_dir / "holds").glob("*.json"))  # the dead hold's file tidied away


def test_pre_restore_copy_stays_while_its_kept_database_exists(pg, make_settings) -> None:
    settings, _ = backups(pg, make_settings, 1, keep_last=1)
    db = settings.target().dbname
    pre = [run_backup(settings, options=BackupOptions(pre_restore=True)).path for _ in range(2)]
    assert all(parse_name(p.name).pre_restore for p in pre)
    kept_db = f"{db}_pre_restore_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
    state = StateStore(settings.state_dir)
    # What a swap restore records: the copy it made and the old database it kept.
    state.record("restore", db, "success", artifact="x", details={"pre_restore_artifact": pre[0].name,
                                                                   "old_database": kept_db})
    report = apply_retention(settings, db, now=LATER)
    action, reason = decisions(report)[pre[0].name]
    assert action == "keep" and kept_db in reason and "--discard-old" in reason and pre[0].exists()
    assert report.kept_held == [pre[0].name]

    # The server's list wins when it can be read: the database is gone, so is the reason to keep the copy.
    report = apply_retention(settings, db, dry_run=True, now=LATER, kept_databases=[])
    assert decisions(report)[pre[0].name][0] == "delete"
    # A restore whose record was lost (an empty history here): a kept database of that day protects it by name.
    report = apply_retention(settings, db, dry_run=True, now=LATER, kept_databases=[kept_db],
                             state=StateStore(settings.state_dir.with_name("empty_state")))
    assert decisions(report)[pre[0].name][0] == "keep" and kept_db in decisions(report)[pre[0].name][1]
    state.record("discard_old", kept_db, "success")
    report = apply_retention(settings, db, now=LATER)  # discarded per the history: it goes
    assert report.deleted == [pre[0].name] and pre[1].exists()


def test_prune_asks_the_server_for_kept_databases(pg, make_settings, tmp_path, capsys) -> None:
    settings, _ = backups(pg, make_settings, 1, keep_last=1)
    db = settings.target().dbname
    pre = run_backup(settings, options=BackupOptions(pre_restore=True)).path
    newer = run_backup(settings, options=BackupOptions(pre_restore=True)).path
    aged = age(settings, pre, days=10)  # past the 7 days of pre-restore copies
    kept_db = f"{db}_pre_restore_{(datetime.now() - timedelta(days=10)).strftime('%Y%m%d_%H%M%S')}"
    cfg = settings_toml(settings, tmp_path / "c.toml")
    with admin_conn(pg) as conn:
        conn.execute(f'CREATE DATABASE "{kept_db}"')
    try:
        assert main(["--config", str(cfg), "prune", "--dry-run", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        by = {d["artifact"]: d for d in out["decisions"]}
        assert by[aged.name]["action"] == "keep" and kept_db in by[aged.name]["reason"]
        assert by[newer.name]["action"] == "keep" and out["deleted"] == []
    finally:
        with admin_conn(pg) as conn:
            conn.execute(f'DROP DATABASE "{kept_db}"')
    assert main(["--config", str(cfg), "prune"]) == 0
    assert f"deleted: {aged.name}" in capsys.readouterr().out and not aged.exists()


def age(settings: Settings, path: Path, days: float) -> Path:
    """Rename an artifact and its sidecars as if it had been taken `days` ago."""
    name = parse_name(path.name)
    new = name.__class__(name.database, new_stamp(datetime.now(UTC) - timedelta(days=days)), name.ext,
                         name.encrypted, name.pre_restore)
    for old_fn, new_fn in ((name.filename, new.filename), (name.meta_filename, new.meta_filename),
                           (name.globals_filename, new.globals_filename)):
        if (settings.backup_dir / old_fn).exists():
            (settings.backup_dir / old_fn).rename(settings.backup_dir / new_fn)
    return settings.backup_dir / new.filename


def test_prune_dry_run_shows_every_decision_local_and_s3(pg, s3, make_settings, tmp_path, capsys) -> None:
    settings, paths = backups(pg, make_settings, 3, s3=s3, keep_last=2)
    old = age(settings, paths[0], days=45)  # local copy aged; its S3 copy keeps its (recent) date
    cfg = settings_toml(settings, tmp_path / "c.toml", top="retention_days = 30\nkeep_last = 2")
    assert main(["--config", str(cfg), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split(None, 3) for line in out if line.startswith(("local ", "s3 "))]
    local = {r[2]: r for r in rows if r[0] == "local"}
    remote = {r[2].rsplit("/", 1)[-1]: r for r in rows if r[0] == "s3"}
    assert local[old.name][1] == "delete" and "past retention (30 days)" in local[old.name][3]
    assert local[paths[2].name][1] == "keep" and "one of the newest 2 good backups" in local[paths[2].name][3]
    assert set(remote) == {p.name for p in paths}
    assert all(r[1] == "keep" for r in remote.values())
    assert "recorded at upload match its metadata" in remote[paths[2].name][3]
    assert old.exists()  # a dry run
    assert main(["--config", str(cfg), "prune", "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {(d["where"], d["action"]) for d in data["decisions"]} == {("local", "keep"), ("local", "delete"),
                                                                       ("s3", "keep")}
    assert all(d["reason"] for d in data["decisions"]) and data["deleted"] == [old.name]


def test_leftovers_of_killed_runs_are_found_and_only_abandoned_ones_removed(make_settings, s3) -> None:
    settings = make_settings(unique("leak"), s3=s3)
    d = settings.backup_dir
    d.mkdir(parents=True)
    db = settings.target().dbname
    stamp = new_stamp()
    hour_ago = time.time() - 3600 * 2

    def temp(fn: str, old: bool = True) -> Path:
        p = d / fn
        p.write_bytes(b"partial")
        if old:
            os.utime(p, (hour_ago, hour_ago))
        return p

    abandoned = [temp(f".{db}_{stamp}.dump.zst.tmp"), temp(f".{db}_{stamp}.meta.json.tmp"),
                 temp(f".{db}_{stamp}.dump.zst.part")]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned.append(temp(f".restore_{db}_{stamp}_{dead.pid}.dump"))
    young = temp(f".{db}_{new_stamp()}.sql.gz.tmp", old=False)  # maybe a backup starting now
    running = temp(f".restore_{db}_{stamp}_{os.getpid()}.dump")  # our own pid: a restore still running
    held_open = temp(f".other_{stamp}.dump.zst.tmp")
    stranger = temp(".notes.tmp")  # not ours: never touched
    store = S3Store(settings.s3)
    key = f"{settings.s3.prefix}database/{stamp[:8]}/{db}_{stamp}.dump.zst"
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    foreign = store.client.create_multipart_upload(Bucket=store.bucket, Key=f"{settings.s3.prefix}database/x.bin")

    with open(held_open, "rb"):  # a live process has it open: whatever its age, it stays
        dry = apply_retention(settings, db, dry_run=True, s3=store, upload_min_age=timedelta(0))
        by = {Path(i.what).name if i.where == "local" else i.what: i for i in dry.leftovers}
        assert {n for n, i in by.items() if i.remove} == {p.name for p in abandoned} | {key}
        assert "open by running pid" in by[held_open.name].reason
        assert "still running" in by[running.name].reason and "may belong to a run" in by[young.name].reason
        assert stranger.name not in by
        assert all(p.exists() for p in abandoned)  # dry run
        # The default age for uploads (a day) protects a backup streaming right now.
        default = apply_retention(settings, db, dry_run=True, s3=store)
        assert not next(i for i in default.leftovers if i.what == key).remove
        report = apply_retention(settings, db, s3=store, upload_min_age=timedelta(0))
    assert not any(p.exists() for p in abandoned)
    assert all(p.exists() for p in (young, running, held_open, stranger))
    assert f"removed {len(abandoned) + 1} leftover(s) of killed runs" in report.summary
    open_uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=settings.s3.prefix).get("Uploads", [])
    assert [u["UploadId"] for u in open_uploads] == [foreign["UploadId"]]
    assert upload not in {u["UploadId"] for u in open_uploads}
    store.client.abort_multipart_upload(Bucket=store.bucket, Key=foreign["Key"], UploadId=foreign["UploadId"])


def test_with_nothing_past_retention_no_artifact_is_reread_but_a_dry_run_still_shows_each_proof(pg, make_settings):
    # Every backup's own run applies retention: re-reading the newest keep_last artifacts there, with
    # nothing that could go, cost ~0.5 s of a 6 s backup at 0.6 GB (issue 18). A dry run still proves.
    settings, paths = backups(pg, make_settings, 2, keep_last=2)
    flip_one_bit(paths[-1])  # only a re-read could tell
    report = apply_retention(settings, settings.target().dbname)
    assert report.deleted == [] and all(p.exists() for p in paths)
    action, reason = decisions(report)[paths[-1].name]
    assert action == "keep" and "within retention" in reason and "sha256" not in reason  # not read
    shown = apply_retention(settings, settings.target().dbname, dry_run=True)
    assert "its sha256 does not match its metadata" in decisions(shown)[paths[-1].name][1]
    assert "sha256 re-checked" in decisions(shown)[paths[0].name][1]
    # A real run with something past retention proves again, so the damaged copy never counts as good.
    later = apply_retention(settings, settings.target().dbname, now=LATER)
    assert later.deleted == [] and all(p.exists() for p in paths)
    assert "sha256 does not match" in decisions(later)[paths[-1].name][1]
