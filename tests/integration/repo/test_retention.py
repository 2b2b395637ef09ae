"""Retention (reference test case 1.8), local and S3, with the newest good backups always kept."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from opstower_core.artifacts.names import ArtifactName
from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.repo.retention import apply_retention
from opstower_core.runs.history import StateStore
from opstower_core.storage.s3 import S3Store
from support.servers import create_database, unique

NOW = datetime.now().astimezone()


def name_for(db: str, days: float, pre: bool = False, fmt: str = "custom") -> ArtifactName:
    return ArtifactName.new(db, fmt, when=NOW - timedelta(days=days), pre_restore=pre)


def make_local(directory: Path, db: str, days: float, state: str = "good", pre: bool = False,
               fmt: str = "custom") -> ArtifactName:
    """An artifact `days` old (by its name) with its sidecars; `state` says how its metadata is broken."""
    name = name_for(db, days, pre, fmt)
    directory.mkdir(parents=True, exist_ok=True)
    data = b"" if state == "empty" else os.urandom(2048)
    (directory / name.filename).write_bytes(data)
    (directory / name.globals_filename).write_text("-- roles\n")
    meta_path = directory / name.meta_filename
    # As a real backup writes it: size and sha256 of the bytes (retention re-checks the sha256).
    meta = {"timestamp": name.timestamp, "backup_file": name.filename, "size_bytes": 2048, "backup_size": "2048",
            "sha256": hashlib.sha256(data).hexdigest()}
    if state in ("good", "empty"):  # "empty": the file lost its bytes, the metadata says 2048
        meta_path.write_text(json.dumps(meta))
    elif state == "not_json":
        meta_path.write_text("{ this is not json")
    elif state == "wrong_size":
        meta_path.write_text(json.dumps({**meta, "size_bytes": 99, "backup_size": "99"}))
    elif state != "no_meta":
        raise ValueError(state)
    return name


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file()}


def sidecars(name: ArtifactName) -> set[str]:
    return {name.filename, name.meta_filename, name.globals_filename}


def test_keep_last_good_even_when_all_are_old(make_settings) -> None:
    db = unique("ret_all_old")
    settings = make_settings(db, retention_days=30, keep_last=3)
    names = [make_local(settings.backup_dir, db, days) for days in (40, 41, 42, 43, 44)]
    other = make_local(settings.backup_dir, "someone_else", 90)  # another database: never touched
    report = apply_retention(settings, db)
    assert sorted(report.deleted) == sorted(n.filename for n in names[3:])
    assert sorted(report.kept_for_safety) == sorted(n.filename for n in names[:3])
    left = files(settings.backup_dir)
    assert left == set().union(*(sidecars(n) for n in names[:3]), sidecars(other))
    assert "Deleted 2 old local backup(s)" in report.lines
    assert report.summary == "Deleted 2 old backup(s); kept 3 past retention as the newest good backups"


def test_only_backups_past_retention_go(make_settings) -> None:
    db = unique("ret_mixed")
    settings = make_settings(db, retention_days=30, keep_last=3)
    recent = [make_local(settings.backup_dir, db, d) for d in (1, 2, 3, 29.5)]
    old = [make_local(settings.backup_dir, db, d) for d in (30.5, 45, 400)]
    report = apply_retention(settings, db)
    assert sorted(report.deleted) == sorted(n.filename for n in old) and report.kept_for_safety == []
    assert files(settings.backup_dir) == set().union(*(sidecars(n) for n in recent))


def test_broken_artifacts_do_not_count_as_good(make_settings) -> None:
    db = unique("ret_broken")
    settings = make_settings(db, retention_days=30, keep_last=3)
    d = settings.backup_dir
    fresh_broken = make_local(d, db, 1, "no_meta")  # broken but recent: retention leaves it
    broken = [make_local(d, db, 40, "no_meta"), make_local(d, db, 41, "not_json"),
              make_local(d, db, 42, "wrong_size"), make_local(d, db, 43, "empty")]
    good = [make_local(d, db, days) for days in (44, 45, 46, 47)]
    report = apply_retention(settings, db)
    # The newest three *good* ones survive; the broken old ones and the oldest good one go.
    assert sorted(report.kept_for_safety) == sorted(n.filename for n in good[:3])
    assert sorted(report.deleted) == sorted(n.filename for n in [*broken, good[3]])
    assert files(d) == set().union(*(sidecars(n) for n in good[:3])) | {
        fresh_broken.filename, fresh_broken.globals_filename}


def test_dry_run_deletes_nothing(make_settings) -> None:
    db = unique("ret_dry")
    settings = make_settings(db, retention_days=30, keep_last=2)
    for days in (40, 41, 42, 43):
        make_local(settings.backup_dir, db, days)
    before = files(settings.backup_dir)
    report = apply_retention(settings, db, dry_run=True)
    assert files(settings.backup_dir) == before
    assert len(report.deleted) == 2 and report.summary.startswith("Would delete 2 old backup(s)")
    assert "Would delete 2 old local backup(s)" in report.lines
    real = apply_retention(settings, db)
    assert real.deleted == report.deleted  # the dry run announced exactly what a real run deletes


def test_pre_restore_copies_have_their_own_retention(make_settings) -> None:
    db = unique("ret_pre")
    settings = make_settings(db, retention_days=30, pre_restore_retention_days=7, keep_last=3)
    d = settings.backup_dir
    pre_new = make_local(d, db, 2, pre=True, fmt="plain")
    pre_old = [make_local(d, db, 8, pre=True, fmt="plain"), make_local(d, db, 20, pre=True, fmt="plain")]
    regular = [make_local(d, db, days) for days in (8, 20, 29)]  # within the 30 days of regular backups
    ancient = [make_local(d, db, days) for days in (31, 32, 33)]
    report = apply_retention(settings, db)
    # Regular backups: the 30-day rule; pre-restore copies do not count towards keep_last.
    assert sorted(report.deleted) == sorted(n.filename for n in [*pre_old, *ancient])
    assert files(d) == set().union(*(sidecars(n) for n in [pre_new, *regular]))


S3_DAYS_GOOD = (40, 41, 42, 43)


def put_s3(store: S3Store, name: ArtifactName, with_meta: bool = True) -> str:
    """An object as a backup's upload leaves it: sha256 recorded with it, metadata object beside it."""
    folder = f"{store.prefix}database/{name.day}"
    body = os.urandom(100)
    sha = hashlib.sha256(body).hexdigest()
    store.client.put_object(Bucket=store.bucket, Key=f"{folder}/{name.filename}", Body=body, Metadata={"sha256": sha})
    if with_meta:
        store.client.put_object(Bucket=store.bucket, Key=f"{folder}/{name.meta_filename}",
                                Body=json.dumps({"size_bytes": 100, "sha256": sha}).encode())
        store.client.put_object(Bucket=store.bucket, Key=f"{folder}/{name.globals_filename}", Body=b"--")
    return f"{folder}/{name.filename}"


def s3_keys(store: S3Store) -> set[str]:
    return {o.key for o in store.iter_objects()}


def test_s3_retention_keeps_newest_good_and_honours_dry_run(make_settings, s3) -> None:
    db = unique("ret_s3")
    settings = make_settings(db, s3=s3, retention_days=30, keep_last=3)
    store = S3Store(settings.s3)
    fresh = put_s3(store, name_for(db, 1))
    broken = put_s3(store, name_for(db, 39), with_meta=False)  # no metadata object: not a good backup
    good = [put_s3(store, name_for(db, days)) for days in S3_DAYS_GOOD]
    foreign = put_s3(store, name_for("another_db", 100))
    pre = put_s3(store, name_for(db, 100, pre=True))
    before = s3_keys(store)

    dry = apply_retention(settings, db, dry_run=True, s3=store)
    assert s3_keys(store) == before
    assert sorted(dry.deleted) == sorted(f"s3:{k}" for k in [broken, good[2], good[3]])

    report = apply_retention(settings, db, s3=store)
    assert report.deleted == dry.deleted
    assert f"Deleted old S3 backup: {good[3]}" in report.lines
    assert sorted(report.kept_for_safety) == sorted(f"s3:{k.rsplit('/', 1)[1]}" for k in good[:2])
    left = s3_keys(store)
    for key in (fresh, good[0], good[1], foreign, pre):
        assert key in left
    for key in (broken, good[2], good[3]):
        assert key not in left
        assert key.replace(".dump.zst", ".meta.json") not in left  # sidecars go with it
        assert key.replace(".dump.zst", ".globals.sql") not in left


def test_backup_cli_applies_retention_locally_and_in_s3(pg, s3, tmp_path, capsys) -> None:
    db = unique("ret_cli")
    create_database(pg, db, "CREATE TABLE public.t (id integer); INSERT INTO public.t VALUES (1);")
    prefix = f"{unique('retcli')}/"
    cfg = tmp_path / "opstower.toml"
    cfg.write_text("\n".join([
        f'backup_dir = "{tmp_path / "backups"}"', f'state_dir = "{tmp_path / "state"}"', f'pg_bin = "{pg.bin_dir}"',
        "min_free_gb = 0", "retention_days = 30", "keep_last = 2", f'default_target = "{db}"',
        f"[targets.{db}]", f'dbname = "{db}"', f'host = "{pg.host}"', f"port = {pg.port}", f'user = "{pg.user}"',
        "[s3]", f'bucket = "{s3.bucket}"', f'prefix = "{prefix}"', f'endpoint_url = "{s3.endpoint_url}"',
    ]) + "\n")
    settings = load_settings(cfg)
    store = S3Store(settings.s3)
    local_old = [make_local(settings.backup_dir, db, days) for days in (50, 60, 70)]
    s3_old = [put_s3(store, name_for(db, days)) for days in (50, 60, 70)]
    before_local, before_s3 = files(settings.backup_dir), s3_keys(store)

    assert main(["--config", str(cfg), "backup", "--dry-run-retention"]) == 0
    out = capsys.readouterr().out
    assert "Would delete" in out
    assert before_local <= files(settings.backup_dir) and before_s3 <= s3_keys(store)

    assert main(["--config", str(cfg), "backup", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    # Two new good backups now: they are the newest two, so every old one goes, locally and in S3.
    assert sorted(summary["deleted"]) == sorted([n.filename for n in local_old] + [f"s3:{k}" for k in s3_old])
    left_local = files(settings.backup_dir)
    assert not any(n.filename in left_local or n.meta_filename in left_local for n in local_old)
    assert not set(s3_old) & s3_keys(store)
    log_lines = [ev["line"] for ev in lines if ev["kind"] == "step_log" and ev["step"] == "retention"]
    assert "Deleted 3 old local backup(s)" in log_lines and f"Deleted old S3 backup: {s3_old[0]}" in log_lines


def test_a_latest_link_to_a_deleted_backup_goes_with_it(make_settings) -> None:
    db = unique("ret_link")
    settings = make_settings(db, retention_days=30, keep_last=1)
    d = settings.backup_dir
    old_plain = make_local(d, db, 50, fmt="plain")
    new_custom = make_local(d, db, 1)
    (d / f"{db}_latest.sql.gz").symlink_to(old_plain.filename)
    (d / f"{db}_latest.dump.zst").symlink_to(new_custom.filename)
    report = apply_retention(settings, db)
    assert report.deleted == [old_plain.filename]
    assert not (d / f"{db}_latest.sql.gz").is_symlink()  # no dangling link left behind
    assert os.readlink(d / f"{db}_latest.dump.zst") == new_custom.filename


def test_reference_pre_restore_copies_are_recognised_and_expire(make_settings):
    """restore-database.sh wrote pre_restore_<ts>.sql.gz (no database name): not a database called "pre_restore"."""
    from datetime import datetime, timedelta

    from opstower_core.artifacts.names import parse_name
    from opstower_core.repo.retention import apply_retention

    name = parse_name("pre_restore_20260207_143000.sql.gz")
    assert name is not None and name.pre_restore and name.database == "" and name.format == "plain"
    settings = make_settings("opstower")
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    old = (datetime.now() - timedelta(days=10)).strftime("%Y%m%d_%H%M%S")
    new = (datetime.now() - timedelta(days=1)).strftime("%Y%m%d_%H%M%S")
    for ts in (old, new):
        (settings.backup_dir / f"pre_restore_{ts}.sql.gz").write_bytes(b"\x1f\x8b legacy")
    # Neither copy can be proven good (no metadata, never verified): retention keeps both and says why.
    report = apply_retention(settings, "opstower")
    assert report.deleted == [] and report.kept_unproven == [f"pre_restore_{old}.sql.gz"]
    assert "could be proven good" in report.lines[0]
    # Once the newer one verified PASS, the older one is provably redundant and expires.
    StateStore(settings.state_dir).record("verify", "", "PASS", artifact=f"pre_restore_{new}.sql.gz")
    report = apply_retention(settings, "opstower")
    assert report.deleted == [f"pre_restore_{old}.sql.gz"]
    assert (settings.backup_dir / f"pre_restore_{new}.sql.gz").exists()


def test_prune_command_applies_retention_without_a_backup(make_settings, s3, tmp_path, capsys) -> None:
    from support.servers import settings_toml

    db = unique("ret_prune")
    settings = make_settings(db, s3=s3)
    store = S3Store(settings.s3)
    local = [make_local(settings.backup_dir, db, days) for days in (1, 40, 50, 60, 70)]
    remote = [put_s3(store, name_for(db, days)) for days in (1, 40, 50, 60, 70)]
    cfg = settings_toml(settings, tmp_path / "c.toml", top="retention_days = 30\nkeep_last = 2")
    before_local, before_s3 = files(settings.backup_dir), s3_keys(store)

    assert main(["--config", str(cfg), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete: {local[-1].filename}" in out
    assert files(settings.backup_dir) == before_local and s3_keys(store) == before_s3  # nothing gone

    assert main(["--config", str(cfg), "prune"]) == 0
    left = files(settings.backup_dir)
    # Newest two good kept (1 and 40 days old); older than 30 days and beyond them deleted, here and in S3.
    assert {local[0].filename, local[1].filename} <= left
    assert not {n.filename for n in local[2:]} & left
    assert set(remote[:2]) <= s3_keys(store) and not set(remote[2:]) & s3_keys(store)


def test_prune_with_s3_down_applies_local_retention_and_says_s3_was_untouched(make_settings, tmp_path, capsys,
                                                                               monkeypatch):
    from support.servers import settings_toml

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the live test store's endpoint would win
    from opstower_core.config import S3Settings

    db = unique("ret_s3down")
    settings = make_settings(db).with_changes(
        s3=S3Settings(bucket="opstower-backups", prefix="x/", endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    old = make_local(settings.backup_dir, db, 60)
    make_local(settings.backup_dir, db, 1)
    cfg = settings_toml(settings, tmp_path / "c.toml", top="retention_days = 30\nkeep_last = 1")
    rc = main(["--config", str(cfg), "prune"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert f"deleted: {old.filename}" in out
    assert err.startswith("ERROR: S3 retention failed") and "S3 was not touched" in err
    assert old.filename not in files(settings.backup_dir)
