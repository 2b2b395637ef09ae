"""The eight verification checks (reference section 3) against real artifacts and services."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.events import CancelToken, Status, StepStarted
from opstower_core.storage.s3 import S3Store
from opstower_core.verify import CHECKS, verify
from support.servers import admin_conn, create_database

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int REFERENCES customers, note text);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 500) g;
INSERT INTO orders (customer_id, note) SELECT 1 + g % 500, md5(g::text) FROM generate_series(1, 20000) g;
CREATE SCHEMA audit;
CREATE TABLE audit.events (at timestamptz DEFAULT now(), what text);
INSERT INTO audit.events (what) VALUES ('created');
"""


@pytest.fixture(scope="module")
def env(pg, s3, tmp_path_factory):
    """One database with a custom and a plain backup, both uploaded to S3."""
    db = f"vfy_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, SCHEMA)
    root = tmp_path_factory.mktemp("verify")
    settings = Settings(
        backup_dir=root / "backups", state_dir=root / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
        s3=S3Settings(bucket=s3.bucket, prefix=f"v{uuid.uuid4().hex[:6]}/", endpoint_url=s3.endpoint_url,
                      region="us-east-1", part_size_mb=5),
        targets={db: Target(db, db, host=pg.host, port=pg.port, user=pg.user)}, default_target=db,
    )
    custom = run_backup(settings)
    plain = run_backup(settings, options=BackupOptions(fmt="plain"))
    assert custom.ok and plain.ok
    return settings, custom, plain, root


def statuses(result) -> dict[str, Status]:
    return {r.step: r.status for r in result.results}


def copy_artifact(src: Path, dest_dir: Path, name: str | None = None, with_meta: bool = True) -> Path:
    """Copy an artifact (and its metadata) to a scratch dir; optionally under a new timestamp name."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / (name or src.name)
    shutil.copyfile(src, target)
    if with_meta:
        stem_src = src.name.split(".")[0]
        stem_dst = target.name.split(".")[0]
        meta = json.loads(src.with_name(f"{stem_src}.meta.json").read_text())
        meta["backup_file"] = target.name
        (dest_dir / f"{stem_dst}.meta.json").write_text(json.dumps(meta))
    return target


def test_good_custom_backup_passes_all_eight(env):
    settings, custom, _plain, _ = env
    seen: list[StepStarted] = []
    result = verify(settings, custom.path, full_test=True, on_event=lambda e: isinstance(e, StepStarted) and seen.append(e))
    assert [s.step for s in seen] == [c[0] for c in CHECKS]
    assert [s.index for s in seen] == list(range(1, 9)) and all(s.total == 8 for s in seen)
    assert statuses(result) == {c[0]: Status.PASS for c in CHECKS}, [r.detail for r in result.results]
    assert result.tables_in_dump == 3
    full = result.results[-1]
    assert "3 tables" in full.detail and "20,501 rows" in full.detail
    # The scratch database is always dropped.
    with admin_conn_for(settings) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{settings.default_target}_verify_%",)).fetchone()[0]
    assert left == 0


def admin_conn_for(settings):
    from opstower_core.pg.tools import connect

    return connect(settings.target(), dbname="postgres")


def test_good_plain_backup_passes_and_counts_sql(env):
    settings, _custom, plain, _ = env
    result = verify(settings, plain.path, full_test=True)
    assert result.ok, [r.detail for r in result.results]
    st = statuses(result)
    assert st["content"] == Status.PASS and st["full_restore"] == Status.PASS
    content = next(r for r in result.results if r.step == "content")
    assert "3 tables" in content.detail and "COPY" in content.detail


def test_resolves_catalog_name_latest_and_s3_key(env):
    settings, custom, plain, _ = env
    assert verify(settings, custom.name.filename).entry.local_path == custom.path
    assert verify(settings, "latest").entry.filename == plain.name.filename
    by_key = verify(settings, custom.s3_key)
    assert by_key.entry.filename == custom.name.filename and by_key.ok


def test_s3_only_artifact_is_streamed_from_s3(env, tmp_path):
    settings, custom, _plain, _ = env
    # A settings view whose backup dir does not hold the artifact: only S3 has it.
    remote = settings.with_changes(backup_dir=tmp_path / "empty")
    result = verify(remote, custom.s3_key, full_test=True)
    assert result.ok, [r.detail for r in result.results]
    assert "S3 only" in result.results[0].detail


@pytest.mark.parametrize("fraction", [0.0001, 0.5, 0.999])
def test_truncated_artifact_fails_compression_check_with_offset(env, tmp_path, fraction):
    settings, custom, _plain, _ = env
    bad = copy_artifact(custom.path, tmp_path)
    data = bad.read_bytes()
    bad.write_bytes(data[: max(1, int(len(data) * fraction))])
    result = verify(settings, bad)
    st = statuses(result)
    assert st["compression"] == Status.FAIL and not result.ok
    detail = next(r.detail for r in result.results if r.step == "compression")
    assert "truncated" in detail and "at byte" in detail
    assert st["metadata"] == Status.FAIL  # size no longer matches


def test_flipped_byte_fails(env, tmp_path):
    settings, custom, _plain, _ = env
    bad = copy_artifact(custom.path, tmp_path)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    result = verify(settings, bad)
    st = statuses(result)
    assert st["compression"] == Status.FAIL
    assert st["metadata"] == Status.FAIL  # sha256 differs
    assert "sha256" in next(r.detail for r in result.results if r.step == "metadata")


def test_flipped_byte_in_gzip_fails(env, tmp_path):
    settings, _custom, plain, _ = env
    bad = copy_artifact(plain.path, tmp_path)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert statuses(verify(settings, bad))["compression"] == Status.FAIL


def test_empty_file_fails_not_empty(env, tmp_path):
    settings, custom, _plain, _ = env
    bad = copy_artifact(custom.path, tmp_path)
    bad.write_bytes(b"")
    st = statuses(verify(settings, bad))
    assert st["exists"] == Status.PASS and st["not_empty"] == Status.FAIL
    assert st["compression"] == Status.SKIP


def test_valid_gzip_that_is_not_a_dump(env, tmp_path):
    settings, *_ = env
    bad = tmp_path / "opstower_20260101_000000.sql.gz"
    bad.write_bytes(gzip.compress(b"hello, this is a shopping list\nmilk\neggs\n" * 100))
    result = verify(settings, bad)
    st = statuses(result)
    assert st["compression"] == Status.PASS
    assert st["content"] == Status.FAIL
    assert "PostgreSQL database dump" in next(r.detail for r in result.results if r.step == "content")
    assert st["metadata"] == Status.WARN  # no metadata beside it: named, the content check decides


def test_custom_dump_with_wrong_header(env, tmp_path):
    import zstandard

    settings, custom, _plain, _ = env
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(custom.path.read_bytes())
    bad = tmp_path / "opstower_20260101_000001.dump.zst"
    bad.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b"XXDMP" + raw[5:]))
    result = verify(settings, bad)
    assert statuses(result)["content"] == Status.FAIL
    assert "PGDMP" in next(r.detail for r in result.results if r.step == "content")


def test_metadata_missing_not_json_and_mismatching(env, tmp_path):
    settings, custom, _plain, _ = env
    art = copy_artifact(custom.path, tmp_path / "a", with_meta=False)
    result = verify(settings, art)
    assert statuses(result)["metadata"] == Status.WARN  # a missing file is named, not a verdict on the dump
    assert "No metadata file" in next(r.detail for r in result.results if r.step == "metadata")

    art = copy_artifact(custom.path, tmp_path / "b")
    art.with_name(art.name.split(".")[0] + ".meta.json").write_text("{not json")
    detail = next(r.detail for r in verify(settings, art).results if r.step == "metadata")
    assert "not valid JSON" in detail

    art = copy_artifact(custom.path, tmp_path / "c")
    meta_path = art.with_name(art.name.split(".")[0] + ".meta.json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    assert "sha256" in next(r.detail for r in verify(settings, art).results if r.step == "metadata")

    meta["sha256"] = json.loads((custom.path.with_name(custom.name.meta_filename)).read_text())["sha256"]
    meta["size_bytes"] = meta["size_bytes"] + 1
    meta_path.write_text(json.dumps(meta))
    result = verify(settings, art)
    assert statuses(result)["metadata"] == Status.FAIL
    assert "size" in next(r.detail for r in result.results if r.step == "metadata")


def test_legacy_reference_metadata_without_sha256_is_warn(env, tmp_path):
    settings, _custom, plain, _ = env
    art = copy_artifact(plain.path, tmp_path, "opstower_20260207_120000.sql.gz", with_meta=False)
    legacy = {  # the reference script's metadata, exactly its fields
        "timestamp": "20260207_120000", "date": "2026-02-07T12:00:00+08:00", "database": "opstower",
        "host": "localhost", "port": 5432, "backup_file": art.name, "backup_size": str(art.stat().st_size),
        "database_size": "245 MB", "table_count": 47, "compression": "gzip",
        "postgresql_version": "PostgreSQL 15.3", "backup_script_version": "1.0.0", "retention_days": 30,
    }
    (tmp_path / "opstower_20260207_120000.meta.json").write_text(json.dumps(legacy))
    result = verify(settings.with_changes(s3=S3Settings()), art)
    st = statuses(result)
    assert st["metadata"] == Status.WARN and result.ok
    assert "no sha256" in next(r.detail for r in result.results if r.step == "metadata")


def test_s3_copy_missing_or_other_size(env, tmp_path):
    settings, custom, _plain, _ = env
    store = S3Store(settings.s3)
    renamed = custom.name.filename.replace(custom.name.timestamp, "20250101_000000")
    art = copy_artifact(custom.path, tmp_path, renamed)
    result = verify(settings, art)
    assert statuses(result)["s3"] == Status.FAIL
    assert "missing" in next(r.detail for r in result.results if r.step == "s3")
    key = f"{settings.s3.prefix}database/20250101/{renamed}"
    store.put_bytes(key, b"short", "application/octet-stream")
    result = verify(settings, art)
    assert "size differs" in next(r.detail for r in result.results if r.step == "s3")


def test_s3_unreachable_is_a_warning_in_one_line_and_the_file_checks_still_pass(env):
    settings, custom, _plain, _ = env
    down = settings.with_changes(s3=S3Settings(bucket=settings.s3.bucket, prefix=settings.s3.prefix,
                                               endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    result = verify(down, custom.path)
    st = statuses(result)
    assert st["s3"] == Status.WARN and st["compression"] == Status.PASS and st["metadata"] == Status.PASS
    detail = next(r.detail for r in result.results if r.step == "s3")
    assert detail.startswith("S3 not reachable, off-site copy not confirmed (") and "\n" not in detail


def test_s3_not_configured_is_skip(env):
    settings, custom, _plain, _ = env
    local = settings.with_changes(s3=S3Settings())
    result = verify(local, custom.path)
    assert statuses(result)["s3"] == Status.SKIP and result.ok
    assert "not configured" in next(r.detail for r in result.results if r.step == "s3")


def test_directory_unreadable_and_missing_paths(env, tmp_path):
    settings, custom, _plain, _ = env
    st = statuses(verify(settings, tmp_path))
    assert st["exists"] == Status.FAIL
    assert statuses(verify(settings, tmp_path / "nope_20260101_000000.dump.zst"))["exists"] == Status.FAIL
    art = copy_artifact(custom.path, tmp_path / "locked")
    art.chmod(0)
    try:
        if os.geteuid() == 0:
            # Root reads anything: run the CLI as root without the DAC-override capabilities.
            import subprocess
            import sys

            env_vars = dict(os.environ, BACKUP_DIR=str(tmp_path), OPSTOWER_STATE_DIR=str(tmp_path / "state"),
                            XDG_CONFIG_HOME=str(tmp_path / "no-config"))
            proc = subprocess.run(
                ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                 "opstower_core", "verify", str(art)],
                capture_output=True, text=True, env=env_vars, timeout=60,
            )
            assert proc.returncode == 1, proc.stderr
            assert "FAIL: Backup file is not readable" in proc.stdout
            assert "Traceback" not in proc.stderr
        else:
            assert statuses(verify(settings, art))["readable"] == Status.FAIL
    finally:
        art.chmod(0o600)


def test_cli_output_shape_and_exit_codes(env, tmp_path, capsys, monkeypatch):
    settings, custom, _plain, root = env
    cfg = tmp_path / "c.toml"
    target = settings.target()
    cfg.write_text(
        f'backup_dir = "{settings.backup_dir}"\nstate_dir = "{settings.state_dir}"\npg_bin = "{settings.pg_bin}"\n'
        f'[s3]\nbucket = "{settings.s3.bucket}"\nprefix = "{settings.s3.prefix}"\nendpoint_url = "{settings.s3.endpoint_url}"\n'
        f'[targets.{target.name}]\nhost = "{target.host}"\nport = {target.port}\nuser = "{target.user}"\n'
    )
    assert main(["--config", str(cfg), "verify", custom.name.filename]) == 0
    out = capsys.readouterr().out
    assert "Test 4/8: Testing compression integrity..." in out
    assert "PASS: zstd integrity test passed" in out
    assert "VERIFICATION PASSED" in out

    assert main(["--config", str(cfg), "verify", "no_such_backup_20200101_000000"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "No backup named" in out and "Traceback" not in out

    assert main(["--config", str(cfg), "verify", custom.name.filename, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-1]["ok"] is True
    assert sum(1 for ln in lines if ln["kind"] == "step_finished") == 8

    with pytest.raises(SystemExit) as exc:
        main(["--config", str(cfg), "verify"])
    assert exc.value.code == 2


def test_results_go_into_run_history(env):
    from opstower_core.runs.history import StateStore

    settings, custom, _plain, _ = env
    verify(settings, custom.path)
    last = StateStore(settings.state_dir).last("verify", artifact=custom.name.filename)
    assert last is not None and last.status in ("PASS", "WARN")
    assert last.details["checks"]["compression"] == "PASS"


@pytest.mark.parametrize("when", ["compression", "s3", "restoring"])
def test_cancel_is_honoured_and_leaves_no_scratch_database(env, pg, when):
    from opstower_core.errors import Cancelled

    settings, custom, _plain, _ = env
    cancel = CancelToken()

    def on_event(event):
        if when == "restoring":
            hit = getattr(event, "kind", "") == "step_log" and "Restoring" in event.line
        else:
            hit = isinstance(event, StepStarted) and event.step == when
        if hit:
            cancel.cancel()

    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        verify(settings, custom.path, full_test=True, on_event=on_event, cancel=cancel)
    assert time.monotonic() - t0 < 10
    with admin_conn(pg) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_verify\\_%'").fetchall()
    assert left == []


def test_local_only_backup_skips_the_s3_check_but_a_lost_upload_fails(env):
    settings, _custom, _plain, _ = env
    local = run_backup(settings, options=BackupOptions(local_only=True))
    meta = json.loads(local.path.with_name(local.name.meta_filename).read_text())
    assert meta["s3_planned"] is False
    result = verify(settings, local.path)
    assert statuses(result)["s3"] == Status.SKIP and result.ok
    assert "Local-only" in next(r.detail for r in result.results if r.step == "s3")
    # A backup that was meant to reach S3 but is not there fails.
    uploaded = run_backup(settings)
    S3Store(settings.s3).delete(uploaded.s3_key)
    assert statuses(verify(settings, uploaded.path))["s3"] == Status.FAIL


def test_reference_style_name_backup_sql_gz_verifies_by_its_extension(env, tmp_path):
    """The reference's own examples call a backup `backup.sql.gz`: a good one must pass, not 'corrupt zstd'."""
    settings, _custom, plain, _ = env
    art = tmp_path / "backup.sql.gz"
    shutil.copyfile(plain.path, art)
    result = verify(settings, art, full_test=True)
    st = statuses(result)
    assert st["compression"] == Status.PASS and st["content"] == Status.PASS and st["full_restore"] == Status.PASS
    assert st["s3"] == Status.SKIP and "cannot be located" in next(r.detail for r in result.results if r.step == "s3")
    assert result.entry.filename == "backup.sql.gz"
    odd = tmp_path / "mystery.bin"  # no extension at all: the first bytes decide
    shutil.copyfile(plain.path, odd)
    assert statuses(verify(settings, odd))["compression"] == Status.PASS


def test_full_test_with_the_server_down_is_not_a_verdict_on_the_backup(env, tmp_path):
    settings, custom, _plain, _ = env
    down = settings.with_changes(targets={settings.default_target: Target(
        settings.default_target, settings.default_target, host=str(tmp_path), port=5432, user="postgres")})
    result = verify(down, custom.path, full_test=True)
    st, detail = statuses(result)["full_restore"], result.results[-1].detail
    assert st == Status.WARN and "not run" in detail and result.ok
