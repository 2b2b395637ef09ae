"""Backups against the real embedded PostgreSQL and SeaweedFS (reference test cases 1.1–1.7, 1.9).

Metadata, checksums, permissions, the latest symlink, the run log and history, local-only
mode, and the S3 path: multipart, storage class, object metadata, tags and the metadata
object beside the artifact.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import stat
import subprocess
import threading
from datetime import datetime
from pathlib import Path

import pytest
import zstandard

from opstower_core import __version__
from opstower_core.artifacts.names import REFERENCE_FIELDS, parse_name
from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.events import Status, StepFinished, StepLog
from opstower_core.repo.catalog import list_catalog
from opstower_core.runs.history import StateStore
from support.servers import admin_conn, create_database, unique

SMALL_SQL = """
CREATE TABLE public.accounts (id integer PRIMARY KEY, name text NOT NULL, balance numeric(12, 2));
INSERT INTO public.accounts SELECT g, 'account ' || g, g * 1.5 FROM generate_series(1, 250) AS g;
CREATE SCHEMA audit;
CREATE TABLE audit.events (id bigserial PRIMARY KEY, account_id integer REFERENCES public.accounts (id), note text);
INSERT INTO audit.events (account_id, note) SELECT g % 250 + 1, md5(g::text) FROM generate_series(1, 1000) AS g;
CREATE TABLE public.empty_one (id integer);
"""
LOG_LINE = re.compile(r"^\[(INFO|WARN|ERROR|DEBUG)\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d - .+")
MiB = 1024 * 1024


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_config(tmp_path: Path, pg, db: str, s3=None, prefix: str = "", extra: str = "") -> Path:
    """A TOML config pointing the CLI at the test services."""
    lines = [
        f'backup_dir = "{tmp_path / "backups"}"', f'state_dir = "{tmp_path / "state"}"',
        f'pg_bin = "{pg.bin_dir}"', "min_free_gb = 0", f'default_target = "{db}"', extra,
        f"[targets.{db}]", f'dbname = "{db}"', f'host = "{pg.host}"', f"port = {pg.port}", f'user = "{pg.user}"',
    ]
    if s3 is not None:
        lines += ["[s3]", f'bucket = "{s3.bucket}"', f'prefix = "{prefix}"', f'endpoint_url = "{s3.endpoint_url}"',
                  "part_size_mb = 5"]
    path = tmp_path / "opstower.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_backup_metadata_checksums_permissions_log_and_history(pg, make_settings) -> None:
    db = unique("bk_meta")
    create_database(pg, db, SMALL_SQL)
    settings = make_settings(db)
    events: list = []
    result = run_backup(settings, options=BackupOptions(), on_event=events.append)

    path = result.path
    assert path.parent == settings.backup_dir
    assert re.fullmatch(rf"{db}_\d{{8}}_\d{{6}}Z\.dump\.zst", path.name)
    name = parse_name(path.name)
    meta_path = settings.backup_dir / name.meta_filename
    meta = json.loads(meta_path.read_text())
    assert meta == json.loads(json.dumps(result.meta))

    # Every field of the reference's metadata, same names and shapes.
    assert not [f for f in REFERENCE_FIELDS if f not in meta]
    with admin_conn(pg, db) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        real_counts = {
            "public.accounts": conn.execute("SELECT count(*) FROM public.accounts").fetchone()[0],
            "audit.events": conn.execute("SELECT count(*) FROM audit.events").fetchone()[0],
            "public.empty_one": 0,
        }
    assert meta["timestamp"] == name.timestamp
    date = datetime.fromisoformat(meta["date"])
    assert date.tzinfo is not None and date.strftime("%Y%m%d_%H%M%SZ") == name.timestamp
    assert meta["database"] == db and meta["backup_file"] == path.name
    assert isinstance(meta["host"], str) and meta["host"] and not meta["host"].startswith("/")
    assert meta["port"] == pg.port
    assert meta["backup_size"] == str(path.stat().st_size)
    assert re.fullmatch(r"\d+ (bytes|kB|MB|GB|TB)", meta["database_size"])
    assert meta["compression"] == "zstd"
    assert meta["postgresql_version"] == f"PostgreSQL {server_version}"
    assert meta["backup_script_version"] == __version__
    assert meta["retention_days"] == settings.retention_days
    # Ours.
    assert meta["format"] == "custom"
    assert meta["sha256"] == sha256_of(path)
    assert meta["size_bytes"] == path.stat().st_size
    tool_version = subprocess.run([str(pg.bin_dir / "pg_dump"), "--version"], capture_output=True, text=True).stdout
    assert meta["pg_dump_version"] in tool_version
    assert 0 < meta["duration_seconds"] <= result.seconds + 0.5
    assert meta["row_counts"] == real_counts
    assert meta["table_count"] == len(real_counts)
    assert "password" not in meta_path.read_text().lower()

    # The artifact is a complete custom-format archive behind a checksummed zstd frame.
    with open(path, "rb") as fh:
        head = zstandard.ZstdDecompressor().stream_reader(fh).read(5)
    assert head == b"PGDMP"

    # Files 0600, directory 0750, nothing temporary left.
    assert mode(settings.backup_dir) == 0o750
    globals_path = settings.backup_dir / name.globals_filename
    for p in (path, meta_path, globals_path, result.log_path):
        assert mode(p) == 0o600, p
    assert meta["globals_file"] == globals_path.name
    assert "CREATE ROLE" in globals_path.read_text()
    assert not [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")]

    # One log file for the run, every line timestamped, reference-shaped messages.
    log_lines = result.log_path.read_text().splitlines()
    assert log_lines and all(LOG_LINE.match(ln) for ln in log_lines), [ln for ln in log_lines if not LOG_LINE.match(ln)]
    log = "\n".join(log_lines)
    for text in ("Checking prerequisites", "Prerequisites check passed", "Compressed size:", "% smaller)",
                 "Backup file integrity verified",
                 "Backup content verified (valid PostgreSQL dump)", "Completed Successfully"):
        assert text in log
    # No bucket configured and not --local-only: the reference's "skip upload with warning".
    assert "[WARN]" in log and "S3 bucket not configured" in log
    assert {e.step for e in events if isinstance(e, StepFinished) and e.status == Status.PASS} >= {
        "prerequisites", "dump", "readback", "metadata", "latest", "retention"}

    # Run history.
    runs = StateStore(settings.state_dir).runs("backup", db)
    assert len(runs) == 1
    run = runs[0]
    assert (run.status, run.artifact, run.size_bytes) == ("success", path.name, meta["size_bytes"])
    assert run.details["sha256"] == meta["sha256"] and run.error is None

    entries = list_catalog(settings, db).entries
    assert [e.filename for e in entries] == [path.name]
    assert entries[0].meta["sha256"] == meta["sha256"]


def test_latest_symlink_follows_the_newest_and_is_never_missing(pg, make_settings) -> None:
    db = unique("bk_latest")
    create_database(pg, db, SMALL_SQL)
    settings = make_settings(db)
    first = run_backup(settings, options=BackupOptions(local_only=True))
    link = settings.backup_dir / f"{db}_latest.dump.zst"
    assert os.readlink(link) == first.path.name  # relative, like the reference's `ls -la` output

    # A reader polls the link while the next backup replaces it: it must never be absent.
    stop = threading.Event()
    seen: set[str] = set()
    missing: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.add(os.readlink(link))
            except OSError as exc:
                missing.append(str(exc))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        second = run_backup(settings, options=BackupOptions(local_only=True))
    finally:
        stop.set()
        reader.join()
    assert not missing
    assert second.path.name > first.path.name
    assert os.readlink(link) == second.path.name and link.resolve() == second.path
    assert seen <= {first.path.name, second.path.name}
    assert first.path.exists()  # the older artifact stays
    assert first.log_path != second.log_path and first.log_path.exists()  # one log file per run

    plain = run_backup(settings, options=BackupOptions(fmt="plain", local_only=True))
    assert plain.path.name.endswith(".sql.gz")
    assert os.readlink(settings.backup_dir / f"{db}_latest.sql.gz") == plain.path.name
    assert os.readlink(link) == second.path.name  # the custom-format link is untouched
    assert not [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")]


def test_cli_local_only_skips_s3_and_json_output_parses(pg, s3, tmp_path, capsys) -> None:
    db = unique("bk_cli")
    create_database(pg, db, SMALL_SQL)
    prefix = f"{unique('cli')}/"
    cfg = write_config(tmp_path, pg, db, s3=s3, prefix=prefix)

    rc = main(["--config", str(cfg), "backup", "--local-only", "--format", "plain", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["ok"] is True and summary["s3_key"] is None
    artifact = Path(summary["file"])
    assert artifact.name.endswith(".sql.gz") and artifact.exists()
    assert summary["sha256"] == sha256_of(artifact) and summary["size_bytes"] == artifact.stat().st_size
    assert {e["step"] for e in events if e["kind"] == "step_finished"} >= {"dump", "readback", "metadata"}
    assert "upload" not in {e.get("step") for e in events}
    assert s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("KeyCount", 0) == 0
    meta = json.loads(artifact.with_name(artifact.name.replace(".sql.gz", ".meta.json")).read_text())
    assert meta["compression"] == "gzip" and meta["format"] == "plain"


@pytest.fixture(scope="module")
def big_db(pg) -> str:
    """A database whose dump is ~14 MiB of incompressible bytes: more than two 5 MiB parts."""
    db = unique("bk_big")
    create_database(pg, db, "CREATE TABLE public.noise (id integer PRIMARY KEY, data bytea NOT NULL);"
                            "CREATE TABLE public.small (id integer PRIMARY KEY);"
                            "INSERT INTO public.small SELECT generate_series(1, 10);")
    with admin_conn(pg, db) as conn, conn.cursor() as cur, cur.copy("COPY public.noise FROM STDIN") as copy:
        for i in range(56):
            copy.write_row((i, os.urandom(256 * 1024)))
    return db


def test_s3_multipart_upload_storage_class_metadata_tags_and_sidecar(pg, s3, make_settings, big_db) -> None:
    settings = make_settings(big_db, s3=s3)
    events: list = []
    result = run_backup(settings, on_event=events.append)
    assert result.ok and result.s3_error is None
    meta = result.meta
    name = parse_name(result.path.name)
    prefix = settings.s3.prefix
    assert result.s3_key == f"{prefix}database/{name.timestamp[:8]}/{result.path.name}"

    client = s3.client()
    head = client.head_object(Bucket=s3.bucket, Key=result.s3_key)
    assert head["ContentLength"] == meta["size_bytes"] > 2 * 5 * MiB
    parts = math.ceil(meta["size_bytes"] / (5 * MiB))
    assert parts >= 3 and head["ETag"].strip('"').endswith(f"-{parts}")  # a real multipart upload
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["Metadata"]["database"] == big_db and head["Metadata"]["timestamp"] == name.timestamp
    tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=s3.bucket, Key=result.s3_key)["TagSet"]}
    assert tags["sha256"] == meta["sha256"] == sha256_of(result.path)
    body = client.get_object(Bucket=s3.bucket, Key=result.s3_key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]

    meta_key = f"{prefix}database/{name.timestamp[:8]}/{name.meta_filename}"
    remote_meta = json.loads(client.get_object(Bucket=s3.bucket, Key=meta_key)["Body"].read())
    assert remote_meta == json.loads((settings.backup_dir / name.meta_filename).read_text())
    assert remote_meta["row_counts"] == {"public.noise": 56, "public.small": 10}
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]}
    assert keys == {result.s3_key, meta_key, f"{prefix}database/{name.timestamp[:8]}/{name.globals_filename}"}
    assert not client.list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads")

    upload = next(e for e in events if isinstance(e, StepFinished) and e.step == "upload")
    assert upload.status == Status.PASS and "verified" in upload.detail and "STANDARD_IA" in upload.detail
    logs = [e.line for e in events if isinstance(e, StepLog) and e.step == "upload"]
    assert f"Backup uploaded to S3: s3://{s3.bucket}/{result.s3_key}" in logs
    assert f"Metadata uploaded to S3: s3://{s3.bucket}/{meta_key}" in logs
    run = StateStore(settings.state_dir).last("backup", big_db)
    assert run.status == "success" and run.details["s3_ok"] is True and run.details["s3_key"] == result.s3_key

    entry = next(e for e in list_catalog(settings, big_db).entries if e.filename == result.path.name)
    assert entry.where == "both" and entry.s3_size == meta["size_bytes"]


def test_pre_restore_copy_is_local_with_its_own_retention(pg, s3, make_settings) -> None:
    db = unique("bk_pre")
    create_database(pg, db, SMALL_SQL)
    settings = make_settings(db, s3=s3, pre_restore_retention_days=7)
    result = run_backup(settings, options=BackupOptions(fmt="plain", pre_restore=True))
    assert re.fullmatch(rf"pre_restore_{db}_\d{{8}}_\d{{6}}Z\.sql\.gz", result.path.name)
    assert result.meta["kind"] == "pre_restore" and result.meta["retention_days"] == 7
    assert result.s3_key is None and result.ok  # the safety copy stays local: it is needed right now
    assert s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("KeyCount", 0) == 0
    assert not list(settings.backup_dir.glob("*_latest.*"))  # never the "latest" backup
    assert result.log_path.name.startswith("pre_restore_")
    run = StateStore(settings.state_dir).last("pre_restore", db)
    assert run.status == "success" and run.artifact == result.path.name
    assert StateStore(settings.state_dir).last("backup", db) is None


def test_dump_writes_timestamptz_in_utc_whatever_the_zones(pg, make_settings, monkeypatch) -> None:
    """pg_dump runs with PGTZ=UTC: the dump's text does not depend on the database's or the host's zone."""
    db = unique("bk_tz")
    create_database(pg, db, "CREATE TABLE public.ev (id integer, at timestamptz);"
                            "INSERT INTO public.ev VALUES (1, '2026-07-01 12:00:00+00');")
    with admin_conn(pg) as conn:
        conn.execute(f"ALTER DATABASE \"{db}\" SET timezone = 'America/New_York'")
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # the operator's own environment must not leak in either
    settings = make_settings(db)
    result = run_backup(settings, options=BackupOptions(fmt="plain", local_only=True))
    assert result.meta["dump_timezone"] == "UTC"
    text = gzip.decompress(result.path.read_bytes()).decode()
    assert "1\t2026-07-01 12:00:00+00\n" in text, [ln for ln in text.splitlines() if ln.startswith("1\t")]
