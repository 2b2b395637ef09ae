"""The second off-site copy ([s3.replica]) against two real SeaweedFS stores.

The session's `s3` store and a second one started here (`other`) play primary and replica;
which is which is chosen per test, so stopping "the primary" or "the replica" never stops
the session's store other tests use. Tests that stop `other` run last in this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from opstower_core.backup import run_backup
from opstower_core.cli import main
from opstower_core.cli.list import _fit
from opstower_core.config import S3Settings, Settings, load_settings
from opstower_core.devenv.embedded import EmbeddedS3
from opstower_core.errors import Cancelled, ConfigError
from opstower_core.events import CancelToken, Reporter, Status, StepFinished
from opstower_core.health import HealthState, check_health
from opstower_core.pitr.wal import copy_to_replica
from opstower_core.repo.catalog import list_catalog, where_short, where_words
from opstower_core.repo.download import download
from opstower_core.repo.retention import apply_retention
from opstower_core.runs.history import StateStore
from opstower_core.storage import replica as replica_mod
from opstower_core.storage.replica import check_copy, doctor_replica
from opstower_core.storage.s3 import store_for
from opstower_core.verify import verify
from support.servers import admin_conn, create_database, settings_toml, unique

SQL = "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g;"


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, s3):
    """A second SeaweedFS with its own ports and directory (same demo credentials as `s3`)."""
    store = EmbeddedS3(tmp_path_factory.mktemp("s3-replica"))
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="module")
def db(pg) -> str:
    name = unique("rep")
    create_database(pg, name, SQL)
    return name


def side(store: EmbeddedS3, role: str = "replica", **kw) -> S3Settings:
    return S3Settings(bucket=store.bucket, prefix=f"{role[:3]}{uuid.uuid4().hex[:6]}/", endpoint_url=store.endpoint_url,
                      region="us-east-1", part_size_mb=5, role=role, **kw)


def with_replica(settings: Settings, replica: S3Settings) -> Settings:
    return settings.with_changes(s3=replace(settings.s3, replica=replica))


def events_of(sink: list):
    return {e.step: e for e in sink if isinstance(e, StepFinished)}


def test_config_replica_table(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[s3]\nbucket = "a"\n[s3.replica]\nbucket = "b"\nendpoint_url = "http://127.0.0.1:1"\n'
                   'prefix = "p"\nregion = "eu-west-1"\naccess_key_id_env = "REP_ID"\nsecret_access_key_env = "REP_SECRET"\n'
                   'lock_days = 30\nmax_lag_minutes = 15\n')
    s = load_settings(cfg, env={"AWS_ENDPOINT_URL": "http://primary:9000", "S3_BUCKET": "envbucket"})
    rep = s.s3.replica
    assert s.s3.bucket == "envbucket" and s.s3.endpoint_url == "http://primary:9000"
    # The environment steers the primary only.
    assert (rep.bucket, rep.endpoint_url, rep.prefix, rep.region) == ("b", "http://127.0.0.1:1", "p/", "eu-west-1")
    assert (rep.access_key_id_env, rep.secret_access_key_env, rep.lock_days, rep.max_lag_minutes, rep.role) == (
        "REP_ID", "REP_SECRET", 30, 15, "replica")
    cfg.write_text('[s3]\nbucket = "a"\n[s3.replica]\nbucket = "b"\naccess_key_id = "AKIA..."\n')
    with pytest.raises(ConfigError, match="access_key_id is not a known key"):
        load_settings(cfg, env={})
    cfg.write_text('[s3]\nbucket = "a"\n[s3.replica]\nbucket = "b"\naccess_key_id_env = "X"\n')
    with pytest.raises(ConfigError, match="only one of"):
        load_settings(cfg, env={})


def test_backup_copies_to_both_streamed_and_checked(pg, s3, other, db, make_settings, monkeypatch, tmp_path,
                                                      capsys) -> None:
    # The replica reaches its store with credentials named by environment variables.
    monkeypatch.setenv("REP_KEY_ID", other.access_key)
    monkeypatch.setenv("REP_SECRET", other.secret_key)
    rep = side(other, access_key_id_env="REP_KEY_ID", secret_access_key_env="REP_SECRET")
    settings = with_replica(make_settings(db, s3=s3), rep)
    cfg = settings_toml(settings, tmp_path / "c.toml", extra=(
        f'[s3.replica]\nbucket = "{rep.bucket}"\nprefix = "{rep.prefix}"\nendpoint_url = "{rep.endpoint_url}"\n'
        'region = "us-east-1"\naccess_key_id_env = "REP_KEY_ID"\nsecret_access_key_env = "REP_SECRET"\n'))
    assert main(["--config", str(cfg), "backup", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ok"] and summary["replica_error"] is None
    assert summary["replica"]["how"] == "streamed with the dump"
    assert summary["copies"]["replica"] == f"s3://{rep.bucket}/{rep.prefix}database/" + \
        summary["replica"]["key"].split("database/", 1)[1]
    name = Path(summary["file"]).name
    meta = json.loads(Path(summary["file"]).with_name(name.split(".")[0] + ".meta.json").read_text())
    # On the replica: the same bytes (sha256 in its object metadata), the metadata object, the globals file.
    client = other.client()
    head = client.head_object(Bucket=rep.bucket, Key=summary["replica"]["key"])
    # Streamed with the dump: the sha256 is known only at the end, so it is recorded as a tag (as on the primary).
    tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=rep.bucket,
                                                                    Key=summary["replica"]["key"])["TagSet"]}
    assert head["ContentLength"] == meta["size_bytes"] and tags["sha256"] == meta["sha256"]
    folder = summary["replica"]["key"].rsplit("/", 1)[0]
    keys = {o["Key"].rsplit("/", 1)[-1] for o in client.list_objects_v2(Bucket=rep.bucket, Prefix=folder)["Contents"]}
    assert {name, meta["globals_file"], name.split(".")[0] + ".meta.json"} <= keys
    body = client.get_object(Bucket=rep.bucket, Key=summary["replica"]["key"])["Body"].read()
    assert body == Path(summary["file"]).read_bytes()
    # list shows all three places at a glance.
    assert main(["--config", str(cfg), "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    row = next(r for r in rows if r.get("name") == name)
    assert row["where"] == "local+s3+rep" and row["replica_key"] == summary["replica"]["key"]


def test_server_side_copy_on_the_same_store(pg, s3, db, make_settings) -> None:
    """Same endpoint and credentials: copy_object, no bytes through this host; checked all the same."""
    primary = make_settings(db, s3=s3)
    s3.client().create_bucket(Bucket="opstower-replica")
    rep = replace(side(s3), bucket="opstower-replica")
    settings = with_replica(primary, rep)
    sink: list = []
    result = run_backup(settings, on_event=sink.append)
    assert result.ok and result.replica["how"] == "server-side copy"
    assert events_of(sink)["replica"].status == Status.PASS
    assert check_copy(store_for(rep), result.name, result.meta) is None


def test_download_falls_back_to_the_replica_when_the_primary_copy_fails_its_checks(pg, s3, other, db,
                                                                                   make_settings) -> None:
    settings = with_replica(make_settings(db, s3=s3), side(other))
    result = run_backup(settings)
    assert result.ok and result.replica
    # The primary's copy is damaged (same size, other bytes; its recorded sha256 unchanged).
    client = s3.client()
    head = client.head_object(Bucket=settings.s3.bucket, Key=result.s3_key)
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=settings.s3.bucket, Key=result.s3_key, Body=bytes(data), Metadata=head["Metadata"])
    client.put_object_tagging(Bucket=settings.s3.bucket, Key=result.s3_key,
                              Tagging={"TagSet": [{"Key": "sha256", "Value": result.meta["sha256"]}]})
    result.path.unlink()
    entry = next(e for e in list_catalog(settings, db).entries if e.filename == result.name.filename)
    assert entry.where == "s3+rep"
    lines: list[str] = []
    got = download(settings, entry, reporter=Reporter(lambda e: lines.append(getattr(e, "line", ""))))
    assert got.source == "replica" and "sha256" in (got.fallback or "")
    assert got.path.read_bytes() != bytes(data) and hashlib.sha256(got.path.read_bytes()).hexdigest() == result.meta["sha256"]
    assert any("Downloaded from the replica" in line for line in lines)
    # Asked for explicitly: the replica, without touching the primary.
    got.path.unlink()
    assert download(settings, entry, source="replica").source == "replica"


def test_restore_falls_back_to_the_replica_when_the_primary_copy_fails_its_checks(pg, s3, other, db, make_settings,
                                                                                  tmp_path, capsys) -> None:
    """The primary is reachable but its copy is damaged: restore verifies the replica's copy, restores
    it, and says which copy was used and that the primary's is bad."""
    settings = with_replica(make_settings(db, s3=s3), side(other))
    result = run_backup(settings)
    assert result.ok and result.replica
    rep = settings.s3.replica
    cfg = settings_toml(settings, tmp_path / "c.toml", extra=(
        f'[s3.replica]\nbucket = "{rep.bucket}"\nprefix = "{rep.prefix}"\nendpoint_url = "{rep.endpoint_url}"\n'
        'region = "us-east-1"\n'))
    # Other bytes of the same size, its recorded sha256 kept: only reading it can tell.
    client = s3.client()
    head = client.head_object(Bucket=settings.s3.bucket, Key=result.s3_key)
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=settings.s3.bucket, Key=result.s3_key, Body=bytes(data), Metadata=head["Metadata"])
    result.path.unlink()  # no local copy: the S3 copies are all there is
    target = unique("rep_fallback")
    code = main(["--config", str(cfg), "restore", result.name.filename, "--from-s3", "--target-db", target,
                 "--force", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    said = captured.err + captured.out
    assert "Restoring the replica copy" in said and "the primary copy is bad" in said
    assert "from the replica" in said
    with admin_conn(pg, target) as conn:
        assert conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == (500, 500 * 32)
    # Both copies damaged: refused, nothing restored, both named.
    rclient = other.client()
    rclient.put_object(Bucket=rep.bucket, Key=result.replica["key"], Body=bytes(data),
                       Metadata={"sha256": result.meta["sha256"]})
    code = main(["--config", str(cfg), "restore", result.name.filename, "--from-s3", "--target-db", unique("rep_no"),
                 "--force"])
    err = capsys.readouterr().err
    assert code != 0 and "verification failed" in err and "replica copy fails its checks too" in err


def test_replicate_copies_the_pitr_base_backups_and_wal(s3, other, db, make_settings, tmp_path, capsys) -> None:
    """Objects under barman-cloud's root (<prefix><pitr.path>/<server_name>/) the replica lacks are
    copied (streamed: another store), checked by size and MD5 where the ETag is one; a second run copies none."""
    rep = side(other)
    server = unique("srv")
    settings = with_replica(make_settings(db, s3=s3), rep)
    cfg = settings_toml(settings, tmp_path / "c.toml", extra=(
        f'[s3.replica]\nbucket = "{rep.bucket}"\nprefix = "{rep.prefix}"\nendpoint_url = "{rep.endpoint_url}"\n'
        f'region = "us-east-1"\n[pitr]\nserver_name = "{server}"\n'))
    root = f"{settings.s3.prefix}pitr/{server}/"
    client = s3.client()
    wal = {f"wals/0000000100000000/00000001000000000000000{i}": bytes([i]) * (64 * 1024 + i) for i in range(1, 4)}
    for rel, body in wal.items():
        client.put_object(Bucket=settings.s3.bucket, Key=root + rel, Body=body)
    client.put_object(Bucket=settings.s3.bucket, Key=root + "base/20261130T000000/backup.info", Body=b"status=DONE\n")
    big = bytes(range(256)) * (24 * 1024)  # 6 MiB, uploaded in parts: its ETag is no MD5, size is the check
    client.upload_fileobj(io.BytesIO(big), settings.s3.bucket, root + "base/20261130T000000/data.tar",
                          Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
    client.put_object(Bucket=settings.s3.bucket, Key=f"{settings.s3.prefix}pitr/other-server/x", Body=b"not ours")
    assert main(["--config", str(cfg), "replicate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pitr = out["pitr"]
    assert sorted(pitr["copied"]) == sorted([*wal, "base/20261130T000000/backup.info", "base/20261130T000000/data.tar"])
    assert pitr["md5_checked"] == 4 and pitr["failed"] == [] and out["ok"]
    rclient = other.client()
    dst = f"{rep.prefix}pitr/{server}/"
    for rel, body in [*wal.items(), ("base/20261130T000000/data.tar", big)]:
        assert rclient.get_object(Bucket=rep.bucket, Key=dst + rel)["Body"].read() == body
    assert "Contents" not in rclient.list_objects_v2(Bucket=rep.bucket, Prefix=f"{rep.prefix}pitr/other-server/")
    assert main(["--config", str(cfg), "replicate", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pitr"]
    assert again["copied"] == [] and again["present"] == 5
    # A WAL object changed on the primary (same size, other bytes) and one lost on the replica: both copied again.
    first = next(iter(wal))
    client.put_object(Bucket=settings.s3.bucket, Key=root + first, Body=b"\xee" * len(wal[first]))
    rclient.delete_object(Bucket=rep.bucket, Key=dst + "base/20261130T000000/backup.info")
    assert main(["--config", str(cfg), "replicate"]) == 0
    assert "PITR: 2 object(s) copied" in capsys.readouterr().out
    assert rclient.get_object(Bucket=rep.bucket, Key=dst + first)["Body"].read() == b"\xee" * len(wal[first])


def test_retention_applies_to_both_and_never_deletes_the_last_good_replica_copy(pg, s3, other, db,
                                                                                make_settings) -> None:
    settings = with_replica(make_settings(db, s3=s3, keep_last=1, retention_days=1), side(other))
    first = run_backup(settings)
    second = run_backup(settings)
    assert first.replica and second.replica
    rep = store_for(settings.s3.replica)
    later = datetime.now(UTC) + timedelta(days=10)
    # The newest replica copy damaged: nothing on the replica can be proven redundant, so nothing goes there.
    key = second.replica["key"]
    rep.client.put_object(Bucket=rep.bucket, Key=key, Body=b"x" * 10, Metadata={"sha256": "0" * 64})
    report = apply_retention(settings, db, now=later, s3=store_for(settings.s3), replica=rep)
    where = {(d.where, d.action) for d in report.decisions if first.name.filename in d.artifact}
    assert ("local", "delete") in where and ("s3", "delete") in where and ("replica", "keep") in where
    assert rep.head(first.replica["key"]) is not None
    # Repaired by `opstower replicate`'s catch-up, the older copy becomes redundant there too.
    run_backup(settings, options=None)  # its catch-up copies the damaged one again
    assert check_copy(rep, second.name, second.meta) is None
    report = apply_retention(settings, db, now=later, replica=rep)
    assert any(d.where == "replica" and d.action == "delete" and first.name.filename in d.artifact
               for d in report.decisions)
    assert rep.head(first.replica["key"]) is None


def test_where_values_filter_words_and_80_columns() -> None:
    assert [where_short(w) for w in ("local+s3+rep", "s3+rep", "rep", "both", "local")] == [
        "L+S+R", "S+R", "R", "both", "local"]
    assert set(where_words("local+s3+rep").split()) == {"local", "s3", "rep", "replica", "both"}
    assert set(where_words("both").split()) == {"both", "local", "s3"} and where_words("s3") == "s3"
    rows = [("NAME", "DATABASE", "AGE", "SIZE", "FORMAT", "WHERE", "VERIFIED", "METADATA"),
            ("accounting_20261130_021719Z.dump.zst", "accounting", "2 minutes", "148.0 MiB", "custom",
             "local+s3+rep", "PASS", "ok")]
    # Narrow: the replica's places cost no column over a copy in both places (L+S+R, legend printed by list).
    lines = _fit(rows, 80)
    without = _fit([rows[0], rows[1][:5] + ("both",) + rows[1][6:]], 80)
    assert "L+S+R" in lines[1] and max(map(len, lines)) == max(map(len, without))
    assert "local+s3+rep" in _fit(rows, 0)[1]  # piped output is never cut


def test_verify_check_7_checks_the_replica_copy_too(pg, s3, other, db, make_settings) -> None:
    settings = with_replica(make_settings(db, s3=s3), side(other))
    result = run_backup(settings)
    entry = next(e for e in list_catalog(settings, db).entries if e.filename == result.name.filename)
    check7 = next(r for r in verify(settings, entry, upto=7).results if r.step == "s3")
    assert check7.status == Status.PASS and "replica copy matches" in check7.detail
    # The replica's copy tampered with (same size, other bytes, its recorded sha256 kept): caught.
    client, key = other.client(), result.replica["key"]
    data = bytearray(result.path.read_bytes())
    data[100] ^= 0xFF
    client.put_object(Bucket=other.bucket, Key=key, Body=bytes(data), Metadata={"sha256": "f" * 64})
    check7 = next(r for r in verify(settings, entry, upto=7).results if r.step == "s3")
    assert check7.status == Status.FAIL and "replica copy sha256 differs" in check7.detail
    # Gone: named, with the way to make it good.
    client.delete_object(Bucket=other.bucket, Key=key)
    check7 = next(r for r in verify(settings, entry, upto=7).results if r.step == "s3")
    assert check7.status == Status.FAIL and "opstower replicate" in check7.detail


def test_object_lock_on_the_replica_and_doctor(pg, s3, other, db, make_settings) -> None:
    """lock_days writes the replica copy under COMPLIANCE retention where the bucket has Object Lock;
    on a bucket without it the copy is made unlocked, and both the backup and doctor say so."""
    client = other.client()
    client.create_bucket(Bucket="opstower-locked", ObjectLockEnabledForBucket=True)
    # A loaded SeaweedFS may answer for a new bucket's configuration a moment late.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.get_object_lock_configuration(Bucket="opstower-locked")["ObjectLockConfiguration"]:
                break
        except ClientError:
            time.sleep(0.2)
    locked = replace(side(other, lock_days=3), bucket="opstower-locked")
    settings = with_replica(make_settings(db, s3=s3), locked)
    result = run_backup(settings)
    assert result.ok and result.replica["locked_until"] and result.replica["how"] == "streamed with the dump"
    head = client.head_object(Bucket="opstower-locked", Key=result.replica["key"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=2)
    status, detail, _fix = doctor_replica(settings)
    assert status == Status.PASS and "Object Lock is enabled" in detail and "locked 3 days" in detail
    # The copy cannot be deleted before its retention date (SeaweedFS enforces it as AWS does): deleting
    # its version is refused, shortening its retention too; a plain delete only hides it behind a delete
    # marker, the locked version stays readable (a restore can name it).
    version = head["VersionId"]
    for attempt in (lambda: client.delete_object(Bucket="opstower-locked", Key=result.replica["key"], VersionId=version),
                    lambda: client.delete_object(Bucket="opstower-locked", Key=result.replica["key"], VersionId=version,
                                                 BypassGovernanceRetention=True),
                    lambda: client.put_object_retention(Bucket="opstower-locked", Key=result.replica["key"],
                                                        VersionId=version, Retention={
                                                            "Mode": "COMPLIANCE",
                                                            "RetainUntilDate": datetime.now(UTC) + timedelta(seconds=5)})):
        with pytest.raises(ClientError, match="AccessDenied"):
            attempt()
    assert check_copy(store_for(locked), result.name, result.meta) is None
    assert client.delete_object(Bucket="opstower-locked", Key=result.replica["key"])["DeleteMarker"]
    kept = client.get_object(Bucket="opstower-locked", Key=result.replica["key"], VersionId=version)["Body"].read()
    assert hashlib.sha256(kept).hexdigest() == result.meta["sha256"]

    plain = with_replica(make_settings(db, s3=s3), side(other, lock_days=3))
    sink: list = []
    result = run_backup(plain, on_event=sink.append)
    assert result.ok and result.replica["locked_until"] is None and "not enabled" in result.replica["lock_note"]
    assert events_of(sink)["replica"].status == Status.WARN
    status, detail, fix = doctor_replica(plain)
    assert status == Status.WARN and "Object Lock is not enabled" in detail and "without a lock" in detail


@pytest.fixture(scope="module")
def noisy_db(pg) -> str:
    """10 MiB of random bytes: a dump of several 5 MiB parts, long enough to stop a store in its middle."""
    name = unique("rep_big")
    create_database(pg, name, "CREATE TABLE public.noise (id integer PRIMARY KEY, data bytea NOT NULL);")
    with admin_conn(pg, name) as conn, conn.cursor() as cur, cur.copy("COPY public.noise FROM STDIN") as copy:
        for i in range(40):
            copy.write_row((i, os.urandom(256 * 1024)))
    return name


def test_a_hung_replica_holds_the_backup_a_bounded_time(pg, s3, noisy_db, make_settings, monkeypatch) -> None:
    """A replica that accepts connections and never answers: the dump waits for its overlapped copy
    FEED_WAIT_BUDGET seconds in all, the rest FEED_STALL; the backup is good, the copy reported missing."""
    monkeypatch.setattr(replica_mod, "FEED_WAIT_BUDGET", 1.0)
    monkeypatch.setattr(replica_mod, "FEED_STALL", 2.0)
    monkeypatch.setattr(replica_mod, "FEED_ABORT_WAIT", 0.5)
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # the kernel completes the handshakes; nothing ever reads or answers
        rep = S3Settings(bucket="hung", prefix="h/", endpoint_url=f"http://127.0.0.1:{hole.getsockname()[1]}",
                         region="us-east-1", part_size_mb=5, multipart_concurrency=1, role="replica")
        settings = with_replica(make_settings(noisy_db, s3=s3), rep)
        sink: list = []
        t0 = time.monotonic()
        result = run_backup(settings, on_event=sink.append)
        took = time.monotonic() - t0
    steps = events_of(sink)
    assert result.s3_key and result.s3_error is None and result.path.exists() and not result.ok
    assert result.replica is None and "fell behind the dump (1 s" in result.replica_error
    assert steps["upload"].status == Status.PASS and steps["replica"].status == Status.FAIL
    # The hung replica cost the dump 1 s of waiting and the end 0.5 s (abort), not its 60 s timeouts.
    assert steps["replica"].seconds < 5 and took < 45, (steps["replica"].seconds, took)


def test_cancel_mid_dump_aborts_the_replica_upload_too(pg, s3, other, noisy_db, make_settings) -> None:
    rep = side(other)
    settings = with_replica(make_settings(noisy_db, s3=s3), rep)
    ledger = settings.state_dir / "uploads" / f"{noisy_db}@replica.json"
    token = CancelToken()
    rclient = other.client()
    open_uploads: list[int] = []

    def cancel_once_recorded() -> None:  # the replica's upload opened (beside the dump) and recorded
        deadline = time.monotonic() + 60
        while not ledger.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if ledger.exists():
            open_uploads.append(len(rclient.list_multipart_uploads(Bucket=rep.bucket, Prefix=rep.prefix)
                                    .get("Uploads", [])))
        token.cancel()

    # The table locked: the dump waits mid-way, however fast this machine is, while the upload is opened.
    with admin_conn(pg, noisy_db) as held:
        held.execute("BEGIN")
        held.execute("LOCK TABLE public.noise IN ACCESS EXCLUSIVE MODE")
        watcher = threading.Thread(target=cancel_once_recorded, daemon=True)
        watcher.start()
        with pytest.raises(Cancelled):
            run_backup(settings, cancel=token)
        watcher.join()
    assert open_uploads == [1], "the replica's upload never opened during the dump"
    assert not rclient.list_multipart_uploads(Bucket=rep.bucket, Prefix=rep.prefix).get("Uploads")
    assert rclient.list_objects_v2(Bucket=rep.bucket, Prefix=rep.prefix).get("KeyCount", 0) == 0
    assert not ledger.exists()


def test_wal_copy_to_a_hung_replica_gives_up_within_its_timeout(s3, make_settings, tmp_path) -> None:
    """wal-push's replica copy never holds the archive command past its timeout (the segment is
    already archived on the primary): a WARNING for the server log, and the caller goes on."""
    segment = tmp_path / "000000010000000000000042"
    segment.write_bytes(os.urandom(1024 * 1024))
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # connections complete, nothing ever answers
        rep = S3Settings(bucket="hung", prefix="h/", endpoint_url=f"http://127.0.0.1:{hole.getsockname()[1]}",
                         region="us-east-1", role="replica")
        settings = with_replica(make_settings("x", s3=s3), rep)
        err = io.StringIO()
        t0 = time.monotonic()
        assert copy_to_replica(settings, segment, err, timeout=1.0) is None
        took = time.monotonic() - t0
    assert took < 3, took
    assert "WARNING: 000000010000000000000042 is archived on the primary but not copied to the replica" in err.getvalue()
    assert "no answer within 1 s" in err.getvalue() and "opstower replicate" in err.getvalue()


def test_replica_stopped_in_the_middle_of_the_dump(pg, s3, other, noisy_db, make_settings) -> None:
    """The replica's overlapped upload is open, then its store stops: the backup is good (local and
    primary), the copy reported missing; back, the next run copies it, and aborts the upload left open."""
    rep = side(other)
    settings = with_replica(make_settings(noisy_db, s3=s3), rep)
    ledger = settings.state_dir / "uploads" / f"{noisy_db}@replica.json"
    stopped: list[float] = []
    sink: list = []
    # The table locked: the dump waits mid-way, however fast this machine is, while the replica's upload
    # is opened beside it; once that upload is recorded the store stops, then the dump goes on.
    with admin_conn(pg, noisy_db) as held:
        held.execute("BEGIN")
        held.execute("LOCK TABLE public.noise IN ACCESS EXCLUSIVE MODE")

        def stop_once_recorded() -> None:
            deadline = time.monotonic() + 60
            while not ledger.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if ledger.exists():
                other.stop()
                stopped.append(time.monotonic())
            held.execute("ROLLBACK")  # the lock goes: the dump finishes with the replica down

        watcher = threading.Thread(target=stop_once_recorded, daemon=True)
        watcher.start()
        try:
            result = run_backup(settings, on_event=sink.append)
            watcher.join()
            assert stopped, "the replica's upload never opened during the dump"
            assert result.s3_key and result.s3_error is None and result.path.exists() and not result.ok
            assert result.replica is None and "replica" in result.replica_error.lower()
            assert events_of(sink)["replica"].status == Status.FAIL
            assert StateStore(settings.state_dir).runs("backup", limit=1)[0].status == "failed"
            assert json.loads(ledger.read_text())  # the upload it could not abort, for the next run
        finally:
            watcher.join()
            if stopped:
                other.start()
    moved = with_replica(settings, replace(rep, endpoint_url=other.endpoint_url))
    second = run_backup(moved)
    assert second.ok and second.replica["how"] == "streamed with the dump"
    store = store_for(moved.s3.replica)
    assert check_copy(store, result.name, result.meta) is None  # caught up
    assert not ledger.exists()
    assert not store.client.list_multipart_uploads(Bucket=rep.bucket, Prefix=rep.prefix).get("Uploads")


def test_replica_stopped_during_a_backup_then_caught_up(pg, s3, other, db, make_settings, tmp_path, capsys) -> None:
    rep = side(other)
    settings = with_replica(make_settings(db, s3=s3), rep)

    def config(endpoint: str) -> Path:
        return settings_toml(settings, tmp_path / "c.toml", extra=(
            f'[s3.replica]\nbucket = "{rep.bucket}"\nprefix = "{rep.prefix}"\nendpoint_url = "{endpoint}"\n'
            'region = "us-east-1"\n'))

    other.stop()
    try:
        assert main(["--config", str(config(rep.endpoint_url)), "backup", "--json"]) == 1
        captured = capsys.readouterr()
        summary = json.loads(captured.out.strip().splitlines()[-1])
        # The backup is good, locally and on the primary; the replica copy is missing and said so.
        assert summary["s3_key"] and summary["s3_error"] is None and Path(summary["file"]).exists()
        assert summary["replica"] is None and "Replica bucket" in summary["replica_error"]
        assert "opstower replicate" in captured.err
        record = StateStore(settings.state_dir).runs("backup", limit=1)[0]
        assert "replica" in (record.error or "")
        health = check_health(settings)
        assert any(c.check == "replica" and c.state == HealthState.WARNING and "not reachable" in c.detail
                   for c in health.checks)
    finally:
        other.start()
    moved = replace(rep, endpoint_url=other.endpoint_url)
    # Back (on new ports) but behind: health counts the lag against max_lag_minutes.
    lagging = with_replica(settings, moved)
    soon, late = (check_health(lagging, now=time.time() + t) for t in (60, 7200))
    assert next(c for c in soon.checks if c.check == "replica").state == HealthState.OK
    late_check = next(c for c in late.checks if c.check == "replica")
    assert late_check.state == HealthState.WARNING and "not on the replica after 2h" in late_check.detail
    # `opstower replicate` copies what it missed.
    cfg = config(other.endpoint_url)
    assert main(["--config", str(cfg), "replicate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(summary["file"]).name in [c["artifact"] for c in report["copied"]]
    assert main(["--config", str(cfg), "replicate", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["copied"] == [] and Path(summary["file"]).name in again["present"]
    assert next(c for c in check_health(lagging).checks if c.check == "replica").state == HealthState.OK
    # A copy lost later is made good by the next backup's catch-up.
    name = Path(summary["file"]).name
    store_for(moved).delete(next(k for k in [o.key for o in store_for(moved).iter_objects()] if k.endswith(name)))
    sink: list = []
    result = run_backup(with_replica(settings, moved), on_event=sink.append)
    assert result.ok and "catch-up: 1 copied" in events_of(sink)["replica"].detail


def test_primary_stopped_restore_from_the_replica(pg, s3, other, db, make_settings, tmp_path, capsys,
                                                  monkeypatch) -> None:
    """Runs last: it leaves `other` (the primary here) stopped."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # it names the session's store; the config names the primary here
    primary = side(other, role="primary")
    base = make_settings(db, s3=s3)
    rep = replace(side(s3), bucket=s3.bucket)
    settings = base.with_changes(s3=replace(primary, replica=rep))
    result = run_backup(settings)
    assert result.ok and result.replica
    cfg = settings_toml(settings, tmp_path / "c.toml", extra=(
        f'[s3.replica]\nbucket = "{rep.bucket}"\nprefix = "{rep.prefix}"\nendpoint_url = "{rep.endpoint_url}"\n'
        'region = "us-east-1"\n'))
    result.path.unlink()  # the host lost its copy too
    other.stop()
    target = unique("rep_restored")
    code = main(["--config", str(cfg), "restore", result.name.filename, "--target-db", target, "--force", "--json"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "S3 bucket" in err and "using the replica copy instead" in err
    with admin_conn(pg, target) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 500
        conn.execute("SELECT 1")

