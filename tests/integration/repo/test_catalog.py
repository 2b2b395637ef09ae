"""`opstower list`: one catalog over the local directory and S3, legacy and broken artifacts included."""

from __future__ import annotations

import gzip
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

from opstower_core.backup import run_backup
from opstower_core.cli import main
from opstower_core.repo.catalog import fetch_s3_metadata, list_catalog
from opstower_core.runs.history import StateStore
from support.servers import create_database, settings_toml, unique

# The reference's metadata example (test case 1.4), verbatim.
REFERENCE_META = """{
  "timestamp": "20260207_120000",
  "date": "2026-02-07T12:00:00+08:00",
  "database": "opstower",
  "host": "localhost",
  "port": 5432,
  "backup_file": "opstower_20260207_120000.sql.gz",
  "backup_size": "65011234",
  "database_size": "245 MB",
  "table_count": 47,
  "compression": "gzip",
  "postgresql_version": "PostgreSQL 15.3",
  "backup_script_version": "1.0.0",
  "retention_days": 30
}
"""
LEGACY = "opstower_20260207_120000.sql.gz"
SIZE_LIE = "opstower_20260206_120000.sql.gz"
NO_META = "opstower_20260208_120000.sql.gz"
BAD_META = "opstower_20260209_120000.sql.gz"
EMPTY = "opstower_20260210_120000.dump.zst"
S3_ONLY = "opstower_20260101_010101.dump.zst"
S3_BAD_META = "opstower_20260102_010101.dump.zst"
S3_NO_META = "opstower_20260103_010101.dump.zst"


def populate_local(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    plain = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (id integer);\n"
    for name in (LEGACY, NO_META, BAD_META):
        (directory / name).write_bytes(gzip.compress(plain))
    # The reference's metadata, exactly its shape, with backup_size the real file's (a string, as it wrote it).
    real_size = (directory / LEGACY).stat().st_size
    (directory / LEGACY.replace(".sql.gz", ".meta.json")).write_text(REFERENCE_META.replace("65011234", str(real_size)))
    (directory / BAD_META.replace(".sql.gz", ".meta.json")).write_text('{"timestamp": "20260209_120000",')
    # Metadata that disagrees with its file's size.
    (directory / SIZE_LIE).write_bytes(gzip.compress(plain))
    (directory / SIZE_LIE.replace(".sql.gz", ".meta.json")).write_text(REFERENCE_META.replace("20260207", "20260206"))
    (directory / EMPTY).write_bytes(b"")
    # Never listed: a half-written temp file, the latest link, a stray file.
    (directory / f".{EMPTY.replace('0210', '0211')}.tmp").write_bytes(b"partial")
    (directory / "opstower_latest.sql.gz").symlink_to(LEGACY)
    (directory / "notes.txt").write_text("not a backup")


def populate_s3(client, bucket: str, prefix: str) -> None:
    for name, meta in ((S3_ONLY, json.dumps({"timestamp": "20260101_010101", "size_bytes": 7})),
                       (S3_BAD_META, "not json"), (S3_NO_META, None)):
        folder = f"{prefix}database/{name[9:17]}"
        client.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=b"s3-only")
        if meta is not None:
            client.put_object(Bucket=bucket, Key=f"{folder}/{name.replace('.dump.zst', '.meta.json')}", Body=meta)


def test_list_merges_legacy_broken_current_and_s3_only(pg, s3, make_settings, tmp_path, capsys) -> None:
    db = unique("cat_cur")
    create_database(pg, db, "CREATE TABLE public.t (id integer); INSERT INTO public.t VALUES (1);")
    settings = make_settings(db, s3=s3)
    populate_local(settings.backup_dir)
    populate_s3(s3.client(), s3.bucket, settings.s3.prefix)
    current = run_backup(settings)
    assert current.ok
    StateStore(settings.state_dir).record("verify", "opstower", "PASS", artifact=LEGACY)
    cfg = settings_toml(settings, tmp_path / "opstower.toml")

    assert main(["--config", str(cfg), "list", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {LEGACY, SIZE_LIE, NO_META, BAD_META, EMPTY, S3_ONLY, S3_BAD_META, S3_NO_META,
                            current.path.name}
    assert by_name[SIZE_LIE]["metadata"] == "size differs from its metadata"
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)  # newest first

    legacy = by_name[LEGACY]
    assert (legacy["metadata"], legacy["format"], legacy["compression"], legacy["where"]) == ("ok", "plain", "gzip",
                                                                                              "local")
    assert legacy["database"] == "opstower" and legacy["verified"] == "PASS"
    assert legacy["size_bytes"] == (settings.backup_dir / LEGACY).stat().st_size
    assert by_name[NO_META]["metadata"] == "metadata file missing"
    assert by_name[BAD_META]["metadata"].startswith("metadata is not valid JSON")
    assert by_name[EMPTY]["size_bytes"] == 0 and by_name[EMPTY]["metadata"] == "metadata file missing"
    cur = by_name[current.path.name]
    assert (cur["where"], cur["metadata"], cur["s3_key"]) == ("both", "ok", current.s3_key)
    for name in (S3_ONLY, S3_BAD_META, S3_NO_META):
        assert by_name[name]["where"] == "s3" and by_name[name]["local_path"] is None
        assert by_name[name]["s3_key"] == f"{settings.s3.prefix}database/{name[9:17]}/{name}"

    # S3-only metadata is fetched on demand, and its problems are named.
    entries = {e.filename: e for e in list_catalog(settings).entries}
    for name, expected in ((S3_ONLY, None), (S3_BAD_META, "metadata in S3 is not valid JSON"),
                           (S3_NO_META, "metadata object missing in S3")):
        fetch_s3_metadata(settings, entries[name])
        assert entries[name].meta_problem == expected
    assert entries[S3_ONLY].meta == {"timestamp": "20260101_010101", "size_bytes": 7}
    assert entries[LEGACY].meta == {**json.loads(REFERENCE_META), "backup_size": str(entries[LEGACY].size)}

    # The table for people says the same.
    assert main(["--config", str(cfg), "list"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["NAME", "DATABASE", "AGE", "SIZE", "FORMAT", "WHERE", "VERIFIED",
                                           "METADATA"]
    table = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(table) == set(by_name)
    assert "metadata file missing" in table[NO_META] and "not valid JSON" in table[BAD_META]
    assert table[LEGACY].split()[-1] == "ok" and "PASS" in table[LEGACY]


def test_list_with_unreachable_s3_shows_local_rows_and_warns(make_settings, s3, tmp_path, capsys) -> None:
    settings = make_settings("cat_nos3", s3=s3)
    populate_local(settings.backup_dir)
    cfg = settings_toml(settings, tmp_path / "opstower.toml", bucket=unique("missing-bucket").replace("_", "-"))
    assert main(["--config", str(cfg), "list", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["name"] for r in rows if "name" in r} == {LEGACY, SIZE_LIE, NO_META, BAD_META, EMPTY}
    assert rows[-1]["kind"] == "warning" and "S3" in rows[-1]["s3_error"]
    assert main(["--config", str(cfg), "list"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("WARN:") and "only local backups are shown" in err and "Traceback" not in err


def test_list_pages_through_more_than_a_thousand_s3_objects(make_settings, s3, tmp_path, capsys) -> None:
    settings = make_settings("cat_many", s3=s3)
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                          config=Config(max_pool_connections=24, request_checksum_calculation="when_required"))
    keys = []
    for i in range(1005):
        ts = f"20260301_{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}"
        keys.append(f"{settings.s3.prefix}database/20260301/pagedb_{ts}.dump.zst")

    def put(key: str) -> None:
        client.put_object(Bucket=s3.bucket, Key=key, Body=b"")

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(put, keys))
    cfg = settings_toml(settings, tmp_path / "opstower.toml")
    assert main(["--config", str(cfg), "list", "--json", "-d", "pagedb"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1005 and {r["s3_key"] for r in rows} == set(keys)
    assert all(r["where"] == "s3" for r in rows)
    assert not os.path.exists(settings.backup_dir) or not any(settings.backup_dir.iterdir())


def test_list_fits_80_columns_on_a_terminal_but_never_cuts_piped_output() -> None:
    from opstower_core.cli.list import _fit

    rows = [("NAME", "DATABASE", "AGE", "SIZE", "FORMAT", "WHERE", "VERIFIED", "METADATA"),
            ("opstower_20261126_110634.dump.zst", "opstower", "2 hours", "223.1 KiB", "custom", "both", "PASS",
             "metadata is not valid JSON (line 1: Expecting value)")]
    narrow = _fit(rows, 80)
    assert all(len(line) <= 80 for line in narrow) and "PASS" in narrow[1] and "2 hours" in narrow[1]
    piped = _fit(rows, 0)
    assert "opstower  " in piped[1] and piped[1].endswith("(line 1: Expecting value)")
