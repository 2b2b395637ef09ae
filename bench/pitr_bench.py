"""Point-in-time recovery on the ~600 MB benchmark database (issue 15's benchmark).

Measures, on an archiving PostgreSQL 18 of its own (bench/.work/pitr/pg; the shared bench
server is left alone) and an embedded SeaweedFS:

1. base backup: `opstower base-backup` (barman-cloud-backup into S3) vs `pg_basebackup -Ft`
   to local disk;
2. recovery to a queryable cluster: `recover_to(latest)` (download + WAL replay + promote)
   vs a logical restore of the same data (`pg_dump -Fc` once, then timed `pg_restore -j 2`
   into a new database: what a logical restore costs without our proof steps);
3. WAL replay throughput: the WAL written by an UPDATE of --update-rows rows after the base
   backup, divided by the replay step's seconds.

    .venv/bin/python bench/pitr_bench.py [--rows 2000000] [--update-rows 500000] [--keep]

Prints a markdown table. Refuses to start when the 1-minute load average is 2 or more
(the machine is shared; --force overrides), since every number here is wall-clock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work" / "pitr"


def _config(root: Path, pg, s3) -> Path:
    cfg = root / "opstower.toml"
    cfg.write_text(f"""
state_dir = "{root / 'state'}"
backup_dir = "{root / 'backups'}"
default_target = "bench"
min_free_gb = 0
[s3]
bucket = "{s3.bucket}"
prefix = "pitr-bench/"
endpoint_url = "{s3.endpoint_url}"
region = "us-east-1"
[pitr]
server_name = "bench"
launcher_dir = "{root / 'launcher'}"
scratch_dir = "{root / 'scratch'}"
credentials_file = "{root / 'launcher' / 'aws-credentials'}"
[targets.bench]
dbname = "bench"
host = "{pg.host}"
port = {pg.port}
user = "postgres"
""")
    cfg.chmod(0o644)  # the server's OS user reads it (no secret in it)
    return cfg


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed(label: str, fn):
    t0 = time.monotonic()
    out = fn()
    seconds = time.monotonic() - t0
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return out, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--update-rows", type=int, default=500_000)
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/pitr (server data, S3) afterwards")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    if load >= 2 and not args.force:
        print(f"load average {load:.2f} >= 2: the numbers would measure the neighbours; rerun when quiet (or --force)")
        return 2

    import psycopg

    from benchdb import build_bench_db, database_size
    from opstower_core.config import load_settings
    from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
    from opstower_core.pitr import RecoveryTarget, enable, recover_to

    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)  # the server's OS user runs the launcher and the scratch cluster from here
    results: dict[str, float | int] = {"load_before": round(load, 2)}
    pg = EmbeddedPostgres(WORK / "pg").start()
    s3 = None
    try:
        s3 = EmbeddedS3(WORK / "s3").start()
        os.environ.update(s3.env())
        print("building the benchmark database", flush=True)
        build_bench_db(pg.conninfo("postgres"), "bench", args.rows)
        results["db_bytes"] = database_size(pg.conninfo("postgres"), "bench")
        cfg = _config(WORK, pg, s3)
        settings = load_settings(cfg)
        report = enable(settings, settings.target(), apply=True)
        if report.restart_needed:
            pg.stop()
            pg.start()
        settings = load_settings(cfg)
        _measure_base_backups(settings, pg, results)
        _measure_recovery(settings, pg, args.update_rows, results, psycopg, recover_to, RecoveryTarget)
        _measure_logical(pg, results)
    finally:
        if s3 is not None:
            s3.stop()
        pg.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    results["load_after"] = round(os.getloadavg()[0], 2)
    _print_table(results)
    return 0


def _measure_base_backups(settings, pg, results: dict) -> None:
    from opstower_core.pitr import take_base_backup

    print("base backup (barman-cloud to S3)", flush=True)
    backup, results["base_backup_s"] = _timed("opstower base-backup", lambda: take_base_backup(settings, settings.target()))
    # barman-cloud's backup.info leaves size empty for cloud backups: count the objects instead.
    from opstower_core.pitr.barman import key_root
    from opstower_core.storage.s3 import store_for

    prefix = f"{key_root(settings)}base/{backup.backup_id}/"
    results["base_backup_bytes"] = backup.size or sum(o.size for o in store_for(settings.s3).iter_objects(prefix))
    out = WORK / "basebackup-tar"
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(pg.bin_dir / "pg_basebackup"), "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-D", str(out),
            "-Ft", "-c", "fast"]
    _, results["pg_basebackup_s"] = _timed("pg_basebackup -Ft (local disk)", lambda: subprocess.run(argv, check=True))
    results["pg_basebackup_bytes"] = _du(out)
    shutil.rmtree(out, ignore_errors=True)


def _measure_recovery(settings, pg, update_rows: int, results: dict, psycopg, recover_to, RecoveryTarget) -> None:
    from opstower_core.events import StepFinished

    print(f"WAL: UPDATE of {update_rows} rows after the base backup", flush=True)
    with psycopg.connect(**pg.conninfo("bench"), autocommit=True) as c:
        start = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        c.execute("UPDATE events SET note = md5(note) WHERE id <= %s", (update_rows,))
        end = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        results["wal_bytes"] = int(c.execute("SELECT %s::pg_lsn - %s::pg_lsn", (end, start)).fetchone()[0])
        c.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 600
        want = c.execute("SELECT pg_walfile_name(%s::pg_lsn)", (end,)).fetchone()[0]
        while time.monotonic() < deadline:
            last = c.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if last and last >= want:
                break
            time.sleep(0.5)
    steps: dict[str, float] = {}

    def on_event(e) -> None:
        if isinstance(e, StepFinished):
            steps[e.step] = e.seconds

    print("recovery to latest (download + replay + promote)", flush=True)
    cluster, results["recover_s"] = _timed("recover_to(latest)", lambda: recover_to(
        settings, settings.target(), RecoveryTarget(), on_event=on_event))
    try:
        with psycopg.connect(**cluster.target("bench").conninfo()) as c:
            results["recovered_rows"] = c.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        cluster.discard()
    results["fetch_base_s"] = steps.get("fetch_base", 0.0)
    results["replay_s"] = steps.get("replay", 0.0)


def _measure_logical(pg, results: dict) -> None:
    dump = WORK / "bench.dump"
    bin_dir = pg.bin_dir
    conn = ["-h", pg.host, "-p", str(pg.port), "-U", "postgres"]
    print("logical: pg_dump -Fc, then timed pg_restore -j 2 into a new database", flush=True)
    subprocess.run([str(bin_dir / "pg_dump"), *conn, "-Fc", "-f", str(dump), "bench"], check=True)
    subprocess.run([str(bin_dir / "createdb"), *conn, "bench_logical"], check=True)
    _, results["logical_restore_s"] = _timed("pg_restore -j 2", lambda: subprocess.run(
        [str(bin_dir / "pg_restore"), *conn, "-j", "2", "--no-owner", "-d", "bench_logical", str(dump)], check=True))
    dump.unlink(missing_ok=True)


def _print_table(r: dict) -> None:
    mb = 1024 * 1024
    replay = r.get("replay_s") or 0.0
    rate = f"{r['wal_bytes'] / mb / replay:.0f} MB/s" if replay else "n/a"
    print()
    print(f"Database {r['db_bytes'] / mb:.0f} MB; load average {r['load_before']} before, {r['load_after']} after")
    print()
    print("| measure | PITR (barman-cloud, S3) | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| base backup | {r['base_backup_s']:.1f} s ({r['base_backup_bytes'] / mb:.0f} MB) | pg_basebackup -Ft "
          f"local {r['pg_basebackup_s']:.1f} s ({r['pg_basebackup_bytes'] / mb:.0f} MB) | "
          f"{r['base_backup_s'] / r['pg_basebackup_s']:.2f}x |")
    print(f"| recovery to a queryable cluster | {r['recover_s']:.1f} s (download {r['fetch_base_s']:.1f} s, "
          f"replay+promote {replay:.1f} s) | pg_restore -j 2 {r['logical_restore_s']:.1f} s | "
          f"{r['recover_s'] / r['logical_restore_s']:.2f}x |")
    print(f"| WAL replay | {r['wal_bytes'] / mb:.0f} MB in {replay:.1f} s = {rate} | - | - |")


if __name__ == "__main__":
    raise SystemExit(main())
