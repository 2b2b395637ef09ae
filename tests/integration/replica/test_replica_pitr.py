"""Point-in-time recovery's second copy: wal-push and base-backup copy to the replica, prune prunes it.

An archiving PostgreSQL of its own (`pitr_env`, archiving to the session's SeaweedFS) and a second
SeaweedFS as the replica. No recovery is run: the objects on the replica are checked. The tests
share the server and run in order (the second points the replica at a dead port, the third prunes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid

import pytest

from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.devenv.embedded import EmbeddedS3
from opstower_core.health.checks import HealthState
from opstower_core.health.run import check_health
from opstower_core.pitr.wal import wal_rel
from opstower_core.storage.replica import pitr_replica_lag, pitr_root
from support.pitr import pitr_env  # noqa: F401 - a fixture, found by pytest through this import


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, s3):
    store = EmbeddedS3(tmp_path_factory.mktemp("s3-pitr-replica"))
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="module")
def env(pitr_env, other):  # noqa: F811 - the fixture imported above
    """pitr_env with an [s3.replica] table on `other` (the archive command reads the same config)."""
    env = pitr_env
    env.base_config = env.config.read_text()
    env.replica_prefix = f"rp{uuid.uuid4().hex[:6]}/"
    point_replica(env, other)
    return env


def point_replica(env, other: EmbeddedS3, endpoint: str | None = None) -> None:
    """(Re)write the config with the replica at `other` (or at `endpoint`: a store that is down)."""
    text = env.base_config + (f'[s3.replica]\nbucket = "{other.bucket}"\nprefix = "{env.replica_prefix}"\n'
                              f'endpoint_url = "{endpoint or other.endpoint_url}"\nregion = "us-east-1"\n')
    tmp = env.config.with_name(env.config.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, env.config)  # atomically: the archiver may be reading it
    env.settings = load_settings(env.config)


def replica_objects(env, other: EmbeddedS3) -> dict[str, bytes]:
    rep = env.settings.s3.replica
    root = pitr_root(rep, env.settings)
    client = other.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=rep.bucket, Prefix=root):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(root):]] = obj
    return out


def write_some(env, rows: int = 2000) -> None:
    with env.conn("app") as c:
        c.execute("CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, v text)")
        c.execute("INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, %s) g", (rows,))


def test_wal_push_and_base_backup_copy_to_the_replica(env, other, capsys) -> None:
    write_some(env)
    segment = env.switch_wal()
    s = env.settings
    rel = wal_rel(segment)
    # Archived on the primary, then copied by wal-push itself: the same bytes under the same relative key.
    primary = env.s3.client().get_object(Bucket=s.s3.bucket, Key=pitr_root(s.s3, s) + rel)["Body"].read()
    copy = other.client().get_object(Bucket=s.s3.replica.bucket, Key=pitr_root(s.s3.replica, s) + rel)["Body"].read()
    assert copy == primary and len(copy) == 16 * 1024 * 1024
    # base-backup copies its base backup, and whatever WAL the replica lacks (segments archived before it was set up).
    assert main(["--config", str(env.config), "base-backup", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    done = {e["step"]: e for e in events if "status" in e}
    assert done["replica"]["status"] == "PASS", done
    backup_id = done["base_backup"]["data"]["backup_id"]
    on_replica = replica_objects(env, other)
    assert f"base/{backup_id}/backup.info" in on_replica and f"base/{backup_id}/data.tar" in on_replica
    lag = pitr_replica_lag(s)
    assert lag is not None and lag.missing == 0, lag.sentence


def test_replica_down_never_stalls_archiving_and_the_next_base_backup_catches_up(env, other, capsys) -> None:
    """The replica down (its endpoint refuses connections) while segments are archived: archiving goes on
    without a failure, health's measure (`pitr_replica_lag`) names what is missing, base-backup copies it."""
    with socket.socket() as probe:  # a loopback port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with env.conn() as c:
        failed_before = c.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]
    point_replica(env, other, dead)
    write_some(env)
    t0 = time.monotonic()
    segment = env.switch_wal()
    took = time.monotonic() - t0
    with env.conn() as c:
        assert c.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] == failed_before
    assert took < 20, took
    down = pitr_replica_check(env.settings)
    assert down.state == HealthState.WARNING and "PITR replica not reachable" in down.detail, down
    point_replica(env, other)  # back
    lag = pitr_replica_lag(env.settings)
    assert lag is not None and lag.missing >= 1 and lag.newest_missing == wal_rel(segment), lag.sentence
    assert "run `opstower replicate`" in lag.sentence
    # health: missing but younger than max_lag_minutes (60) is OK; past a limit of 0 minutes it is a WARN.
    young = pitr_replica_check(env.settings)
    assert young.state == HealthState.OK and young.metrics["missing"] >= 1, young
    s = env.settings
    strict = dataclasses.replace(s, s3=dataclasses.replace(s.s3, replica=dataclasses.replace(s.s3.replica,
                                                                                              max_lag_minutes=0)))
    late = pitr_replica_check(strict)
    assert late.state == HealthState.WARNING and "not on the replica" in late.detail, late
    assert "run `opstower replicate`" in late.detail and late.metrics["oldest_missing_age"] >= 0, late
    assert main(["--config", str(env.config), "base-backup"]) == 0
    assert "PITR:" in capsys.readouterr().out
    assert wal_rel(segment) in replica_objects(env, other)
    assert pitr_replica_lag(env.settings).missing == 0
    caught_up = pitr_replica_check(strict)
    assert caught_up.state == HealthState.OK and caught_up.metrics["missing"] == 0, caught_up


def pitr_replica_check(settings):
    """health's pitr_replica check, as `opstower health` computes it (and its perfdata)."""
    report = check_health(settings)
    found = [c for c in report.checks if c.check == "pitr_replica"]
    assert len(found) == 1, [c.check for c in report.checks]
    if "missing" in found[0].metrics:  # an unreachable replica has no measure
        assert f"_replica_missing'={found[0].metrics['missing']}" in report.perfdata(), report.perfdata()
    return found[0]


def test_prune_applies_the_recovery_window_to_the_replica_too(env, other, capsys) -> None:
    """Two base backups on both stores: `prune` applies the window to both; a window of 0 days keeping 1
    on the replica: the older goes (with the WAL only it needed), the newer stays; again, nothing goes."""
    import dataclasses

    from opstower_core.pitr import prune_base_backups

    before = {k.split("/")[1] for k in replica_objects(env, other) if k.startswith("base/")}
    assert len(before) == 2, before
    oldest, newest = sorted(before)
    # The configured window (7 days) covers both, on both stores.
    assert main(["--config", str(env.config), "prune", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["pitr_replica"] == {"copy": "replica", "policy": "RECOVERY WINDOW OF 7 DAYS, keep_last 2",
                                   "dry_run": False, "deleted": [], "kept": [oldest, newest]}
    assert out["pitr_replica_error"] is None
    s = env.settings
    narrow = dataclasses.replace(s, pitr=dataclasses.replace(s.pitr, window_days=0, keep_last=1))
    wal_before = sorted(k for k in replica_objects(env, other) if k.startswith("wals/"))
    done = prune_base_backups(narrow, copy="replica")
    assert done.deleted == [oldest] and done.kept == [newest]
    assert "pitr deleted on the replica: base backup " + oldest in "\n".join(done.lines())
    after = replica_objects(env, other)
    assert {k.split("/")[1] for k in after if k.startswith("base/")} == {newest}
    wal_after = sorted(k for k in after if k.startswith("wals/"))
    assert wal_after and len(wal_after) < len(wal_before)  # the WAL only the older backup needed went too
    # Never the last one: keep_last 1 leaves the newest on the replica whatever its age.
    again = prune_base_backups(narrow, copy="replica")
    assert again.deleted == [] and again.kept == [newest]


def test_the_replica_root_is_pitr_key_root_for_its_store() -> None:
    """A CloudNativePG-style layout (empty pitr path, a prefix with or without its slash) is addressed on the
    replica exactly as pitr addresses it on the primary: no "//" in the key."""
    import dataclasses

    from opstower_core.config import S3Settings, Settings
    from opstower_core.pitr.barman import key_root

    base = Settings()
    for prefix, path in [("cnpg/", ""), ("", ""), ("a/b", "pitr"), ("x/", "/deep/er/")]:
        rep = S3Settings(bucket="rep", prefix=prefix)
        settings = dataclasses.replace(base, s3=rep, pitr=dataclasses.replace(base.pitr, path=path,
                                                                                server_name="cluster-example"))
        root = pitr_root(rep, settings)
        assert root == key_root(settings) and "//" not in root and not root.startswith("/"), (prefix, path, root)
