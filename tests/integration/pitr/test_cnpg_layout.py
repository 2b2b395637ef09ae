"""A barman-cloud archive written the way CloudNativePG writes it, read and recovered by opstower.

Nothing here archives through opstower: the server's archive_command runs
barman-cloud-wal-archive with the options CloudNativePG's instance manager passes
(cloudnative-pg/barman-cloud pkg/archiver/command.go: --gzip, -e AES256, --endpoint-url,
--tags, --history-tags, --cloud-provider aws-s3, destinationPath, serverName = the cluster
name, the WAL path), and the base backup is barman-cloud-backup with the options of its
pkg/backup/backup.go (--user postgres --name <Backup name> --gzip --encryption AES256
--immediate-checkpoint --jobs 2 --endpoint-url --cloud-provider aws-s3, PGHOST for the
socket). The destinationPath is a bucket "folder" with a trailing slash, as in CNPG's docs.
Then an opstower config pointing at that bucket/path/server name browses, checks and
recovers it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
from opstower_core.errors import OpsError
from opstower_core.pitr import (
    RecoveryTarget,
    find_accidents,
    prune_base_backups,
    recover_to,
    take_base_backup,
    wal_push,
)
from opstower_core.pitr.launcher import OsUser, pick_interpreter, site_dirs

CLUSTER = "cluster-example"  # CNPG's serverName defaults to the Cluster's name


def cnpg_wal_options(s3: EmbeddedS3, destination: str) -> list[str]:
    """BarmanCloudWalArchiveOptions: compression, encryption, endpoint, tags, history tags, provider, dest, server."""
    return ["--gzip", "-e", "AES256", "--endpoint-url", s3.endpoint_url, "--tags", "backupRetentionPolicy,expire",
            "--history-tags", "backupRetentionPolicy,keep", "--cloud-provider", "aws-s3", destination, CLUSTER]


def cnpg_backup_options(s3: EmbeddedS3, destination: str, name: str) -> list[str]:
    """GetBarmanCloudBackupOptions with data: {compression: gzip, encryption: AES256, immediateCheckpoint, jobs: 2}."""
    return ["--user", "postgres", "--name", name, "--gzip", "--encryption", "AES256", "--immediate-checkpoint",
            "--jobs", "2", "--endpoint-url", s3.endpoint_url, "--cloud-provider", "aws-s3", destination, CLUSTER]


def write_archive_command(root: Path, server: EmbeddedPostgres, s3: EmbeddedS3, destination: str) -> Path:
    """barman-cloud-wal-archive for the server's OS user, whose environment holds the bucket's keys (as CNPG's pod).

    The venv's console script cannot be used: its interpreter sits under a home that user
    cannot enter, so a Python it can run imports barman from this installation instead.
    """
    import pwd

    owner = pwd.getpwuid(server.pgdata.stat().st_uid)
    user = OsUser(owner.pw_name, owner.pw_uid, owner.pw_gid)
    script = root / "barman-cloud-wal-archive"
    env = {**s3.env(), "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
           "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
    script.write_text("\n".join([
        f"#!{pick_interpreter(user)}",
        "import os, site, sys",
        *[f"site.addsitedir({d!r})" for d in site_dirs()],
        f"os.environ.update({env!r})",
        "from barman.clients.cloud_walarchive import main",
        f"main({cnpg_wal_options(s3, destination)!r} + sys.argv[1:])",
        "",
    ]))
    script.chmod(0o755)
    return script


def wait_archived(conn: psycopg.Connection) -> str:
    """Close the current segment and wait until the archiver has pushed it."""
    conn.execute("SELECT pg_switch_wal()")
    name = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn() - 1)").fetchone()[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last, failed = conn.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
        if last and last >= name:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{name} was not archived (last {last}, last failed {failed})")


def test_a_cloudnativepg_archive_is_browsed_checked_and_recovered(s3: EmbeddedS3, capsys):
    root = Path(tempfile.mkdtemp(prefix="opstower-test-cnpg-"))
    root.chmod(0o755)  # the server's OS user runs the archive command and the launcher from here
    folder = f"cnpg-{uuid.uuid4().hex[:8]}"
    destination = f"s3://{s3.bucket}/{folder}/"  # CNPG's destinationPath
    server = EmbeddedPostgres(root / "pg").start()
    cluster = None
    try:
        with psycopg.connect(**server.conninfo(), autocommit=True) as c:
            c.execute("ALTER SYSTEM SET archive_mode = 'on'")
            command = f"'{write_archive_command(root, server, s3, destination)}' %p"
            c.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
            c.execute("ALTER SYSTEM SET archive_timeout = '5min'")  # CNPG's default
            c.execute("CREATE DATABASE app")
        server.stop()
        server.start()
        with psycopg.connect(**server.conninfo("app"), autocommit=True) as c:
            c.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
            c.execute("INSERT INTO orders VALUES (1, 'before the base backup')")
            c.execute("CREATE TABLE scratch (n int)")

        backup_name = f"backup-{datetime.now(UTC):%Y%m%d%H%M%S}"
        proc = subprocess.run([sys.executable, "-m", "barman.clients.cloud_backup",
                               *cnpg_backup_options(s3, destination, backup_name)],
                              env={**os.environ, **s3.env(), "PGHOST": server.host, "PGPORT": str(server.port),
                                   "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                                   "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]

        with psycopg.connect(**server.conninfo("app"), autocommit=True) as c:
            c.execute("INSERT INTO orders VALUES (2, 'after the base backup')")
            c.execute("DROP TABLE scratch")
            wait_archived(c)
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{folder}/")["Contents"]]
        assert any(k.startswith(f"{folder}/{CLUSTER}/wals/") and k.endswith(".gz") for k in keys), keys
        assert any(k.startswith(f"{folder}/{CLUSTER}/base/") and k.endswith("data.tar.gz") for k in keys), keys

        # The on-call engineer's config: the bucket, the path, the cluster name. Nothing of opstower archives.
        config = root / "opstower.toml"
        config.write_text(f"""
state_dir = "{root / 'state'}"
backup_dir = "{root / 'backups'}"
default_target = "app"
min_free_gb = 0
[s3]
bucket = "{s3.bucket}"
prefix = "{folder}/"
endpoint_url = "{s3.endpoint_url}"
region = "us-east-1"
[pitr]
path = ""
server_name = "{CLUSTER}"
read_only = true
launcher_dir = "{root / 'launcher'}"
scratch_dir = "{root / 'scratch'}"
credentials_file = "{root / 'launcher' / 'aws-credentials'}"
[targets.app]
dbname = "app"
host = "{server.host}"
port = {server.port}
user = "postgres"
""")
        config.chmod(0o644)
        settings = load_settings(config)

        with pytest.raises(OpsError, match="another system's archive"):
            take_base_backup(settings, settings.target())  # CloudNativePG owns it
        capsys.readouterr()
        assert_read_only_refusals(config, settings, server, s3, folder, capsys)
        assert main(["--config", str(config), "pitr", "status", "--json"]) == 0  # what the on-call engineer runs
        st = json.loads(capsys.readouterr().out)
        assert [(b["status"], b["name"]) for b in st["backups"]] == [("DONE", backup_name)], st
        assert st["segments"] >= 2 and not st["gaps"] and st["timelines"] == [1], st
        assert st["earliest"] and st["latest"], st
        assert datetime.fromisoformat(st["earliest"]) <= datetime.fromisoformat(st["latest"]), st
        assert st["archiver"]["failed_count"] == 0, st["archiver"]

        drops = [a for a in find_accidents(settings, settings.target()) if a.kind == "DROP"]
        assert [a.database for a in drops] == ["app"], drops  # read from the gzip-compressed segments

        cluster = recover_to(settings, settings.target(), RecoveryTarget())  # latest
        with psycopg.connect(**cluster.target("app").conninfo(), autocommit=True) as c:
            rows = c.execute("SELECT id, note FROM orders ORDER BY id").fetchall()
        assert rows == [(1, "before the base backup"), (2, "after the base backup")]
    finally:
        if cluster is not None:
            cluster.discard()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def assert_read_only_refusals(config: Path, settings, server: EmbeddedPostgres, s3: EmbeddedS3, folder: str,
                              capsys) -> None:
    """[pitr] read_only: prune, `pitr enable --apply` and wal-push change nothing in CNPG's archive
    nor on the server, each saying so in one line."""
    def objects() -> dict[str, str]:
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{folder}/")
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    def archive_command() -> str:
        with psycopg.connect(**server.conninfo(), autocommit=True) as c:
            return c.execute("SHOW archive_command").fetchone()[0]

    before, command = objects(), archive_command()
    # A window of 0 days and keep_last 1 would delete nothing of one backup anyway: the refusal comes first.
    with pytest.raises(OpsError, match=r"another system's archive.*nothing was changed"):
        prune_base_backups(settings, dry_run=True)
    assert main(["--config", str(config), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"pitr: would skip the base backups and WAL in s3://{s3.bucket}/{folder}/{CLUSTER}/: another " \
           "system's archive ([pitr] read_only)" in out, out
    assert main(["--config", str(config), "prune", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pitr"] is None and "skipped" in report["pitr_skipped"], report

    assert main(["--config", str(config), "pitr", "enable", "--apply"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pitr enable --apply refused" in err and "nothing was changed" in err, err
    assert archive_command() == command and not (config.parent / "launcher").exists()

    segment = config.parent / "000000010000000000000099"
    segment.write_bytes(b"\0" * 16)
    log = io.StringIO()
    assert wal_push(settings, segment, err=log) == 1
    assert "REFUSED" in log.getvalue() and "nothing was changed" in log.getvalue(), log.getvalue()
    assert objects() == before  # not one object added or removed


@pytest.mark.parametrize("compression", ["zstd", "bzip2", "gzip"])
def test_wal_push_reads_an_archived_segment_in_any_compression_barman_writes(s3: EmbeddedS3, tmp_path, compression):
    """wal-push's overwrite check decompresses what another archiver wrote (CNPG's wal.compression: zstd
    too), as status does; no server needed: the object is put as barman-cloud-wal-archive names it."""
    from barman.clients.cloud_compression import compress

    from opstower_core.pitr.wal import archived_copy, wal_key

    folder = f"cnpg-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "opstower.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nbackup_dir = "{tmp_path / "b"}"\n[s3]\n'
                      f'bucket = "{s3.bucket}"\nprefix = "{folder}/"\nendpoint_url = "{s3.endpoint_url}"\n'
                      f'region = "us-east-1"\n[pitr]\npath = ""\nserver_name = "{CLUSTER}"\nread_only = true\n')
    settings = load_settings(config)
    name = "000000010000000000000042"
    plain = os.urandom(4096) * 8
    suffix = {"zstd": ".zst", "bzip2": ".bz2", "gzip": ".gz"}[compression]
    key = wal_key(settings, name) + suffix
    assert key == f"{folder}/{CLUSTER}/wals/0000000100000000/{name}{suffix}"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=compress(io.BytesIO(plain), compression, None).getvalue())
    try:
        assert archived_copy(settings, name) == (key, plain)
    finally:
        s3.client().delete_object(Bucket=s3.bucket, Key=key)
