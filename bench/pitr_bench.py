"""Point-in-time recovery on the ~600 MB benchmark database (issue 15's benchmark).

Measures, on an archiving PostgreSQL 18 of its own (bench/.work/pitr/pg; the shared bench
server is left alone) and an embedded SeaweedFS:

1. base backup: `opstower base-backup` (barman-cloud-backup into S3) vs `pg_basebackup -Ft`
   to local disk;
2. recovery to a queryable cluster: `recover_to(latest)` (download + WAL replay + promote)
   vs a logical restore of the same data (`pg_dump -Fc` once, then timed `pg_restore -j 2`
   into a new database on a second, non-archiving server: what a logical restore costs
   without our proof steps; on the archiving server its ~600 MB of WAL would be archived
   during the next measurements and replayed by the next recovery);
3. WAL replay throughput: the WAL written by an UPDATE of --update-rows rows after the base
   backup, divided by the replay step's seconds (replay + promote, as recover_to times it).

Each repetition takes both base backups, writes the WAL, then runs both recoveries; the two
contenders of a pair alternate which goes first, so a neighbour's burst of load falls on
both in turn. The table gives medians and the median of the per-repetition ratios (a ratio
of a pair run back to back drifts less than either time on a shared machine).

    .venv/bin/python bench/pitr_bench.py [--rows 2000000] [--update-rows 500000] [--reps 3]
                                         [--out FILE.md] [--keep] [--force] [--prefetch 8]
                                         [--compare-prefetch]

--prefetch K: WAL segments the recovery prefetches into its spool (0: each one fetched when
asked). --compare-prefetch: the recovery only, with 0 and with K in each repetition (the
replay before/after prefetching), instead of the three measurements.

Prints a markdown table (and writes it to --out). Refuses to start when the 1-minute load
average is 2 or more (the machine is shared; --force overrides), since every number here is
wall-clock; `uptime` before and after is part of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work" / "pitr"
RAW = HERE / ".work" / "pitr_runs.json"


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
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each pair (medians are reported)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/pitr (server data, S3) afterwards")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    parser.add_argument("--prefetch", type=int, default=8, help="WAL segments prefetched during replay (0: none)")
    parser.add_argument("--compare-prefetch", action="store_true",
                        help="only the recovery, with --prefetch 0 and with --prefetch K alternately in each "
                        "repetition (one base backup and one WAL write): the replay before/after prefetching")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    if load >= 2 and not args.force:
        print(f"load average {load:.2f} >= 2: the numbers would measure the neighbours; rerun when quiet (or --force)")
        return 2

    import psycopg

    from benchdb import build_bench_db, database_size
    from opstower_core.config import load_settings
    from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
    from opstower_core.pitr import enable

    started = time.monotonic()
    info: dict = {"uptime_before": _uptime(), "reps": args.reps, "rows": args.rows, "update_rows": args.update_rows,
                  "prefetch": args.prefetch}
    runs: list[dict] = []
    shutil.rmtree(WORK, ignore_errors=True)  # a run killed earlier leaves its cluster and objects here
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)  # the server's OS user runs the launcher and the scratch cluster from here
    pg = EmbeddedPostgres(WORK / "pg").start()
    plain = None
    s3 = None
    try:
        plain = EmbeddedPostgres(WORK / "pg-logical").start()
        s3 = EmbeddedS3(WORK / "s3").start()
        os.environ.update(s3.env())
        print("building the benchmark database", flush=True)
        build_bench_db(pg.conninfo("postgres"), "bench", args.rows)
        info["db_bytes"] = database_size(pg.conninfo("postgres"), "bench")
        with psycopg.connect(**pg.conninfo("bench")) as c:
            info["server"] = c.execute("SHOW server_version").fetchone()[0]
        cfg = _config(WORK, pg, s3)
        settings = load_settings(cfg)
        report = enable(settings, settings.target(), apply=True)
        if report.restart_needed:
            pg.stop()
            pg.start()
        settings = load_settings(cfg)
        if args.compare_prefetch:
            return _compare_prefetch(settings, pg, args, info, psycopg, started)
        dump = _logical_dump(pg)
        for rep in range(args.reps):
            print(f"repetition {rep + 1}/{args.reps}", flush=True)
            r: dict = {}
            _measure_base_backups(settings, pg, r, barman_first=rep % 2 == 0)
            _write_wal(pg, args.update_rows, r, psycopg)
            _measure_recoveries(settings, plain, dump, r, psycopg, recover_first=rep % 2 == 0, rows=args.rows,
                                prefetch=args.prefetch)
            runs.append(r)
            # Kept after every repetition, so a failure later (or in the table) loses no measurement.
            RAW.write_text(json.dumps({"info": info, "runs": runs}, indent=1))
    finally:
        if s3 is not None:
            s3.stop()
        if plain is not None:
            plain.stop()
        pg.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    info["uptime_after"] = _uptime()
    info["minutes"] = (time.monotonic() - started) / 60
    text = _table(info, runs)
    print()
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _measure_base_backups(settings, pg, r: dict, barman_first: bool) -> None:
    from opstower_core.pitr import take_base_backup
    from opstower_core.pitr.barman import key_root
    from opstower_core.storage.s3 import store_for

    def barman() -> None:
        backup, r["base_backup_s"] = _timed("opstower base-backup (barman-cloud to S3)",
                                            lambda: take_base_backup(settings, settings.target()))
        # barman-cloud's backup.info leaves size empty for cloud backups: count the objects instead.
        prefix = f"{key_root(settings)}base/{backup.backup_id}/"
        r["base_backup_bytes"] = backup.size or sum(o.size for o in store_for(settings.s3).iter_objects(prefix))

    def local() -> None:
        out = WORK / "basebackup-tar"
        shutil.rmtree(out, ignore_errors=True)
        argv = [str(pg.bin_dir / "pg_basebackup"), "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-D",
                str(out), "-Ft", "-c", "fast"]
        _, r["pg_basebackup_s"] = _timed("pg_basebackup -Ft (local disk)", lambda: subprocess.run(argv, check=True))
        r["pg_basebackup_bytes"] = _du(out)
        shutil.rmtree(out, ignore_errors=True)

    for fn in ((barman, local) if barman_first else (local, barman)):
        fn()


def _write_wal(pg, update_rows: int, r: dict, psycopg) -> None:
    """WAL after the newest base backup: an UPDATE that keeps the row size (sha256 hex of the note)."""
    print(f"  WAL: UPDATE of {update_rows} rows", flush=True)
    with psycopg.connect(**pg.conninfo("bench"), autocommit=True) as c:
        start = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        c.execute("UPDATE events SET note = encode(sha256(note::bytea), 'hex') WHERE id <= %s", (update_rows,))
        end = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        r["wal_bytes"] = int(c.execute("SELECT %s::pg_lsn - %s::pg_lsn", (end, start)).fetchone()[0])
        c.execute("SELECT pg_switch_wal()")
        want = c.execute("SELECT pg_walfile_name(%s::pg_lsn)", (end,)).fetchone()[0]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            last = c.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if last and last >= want:
                return
            time.sleep(0.5)
    raise RuntimeError(f"WAL up to {want} was not archived within 10 minutes")


def _logical_dump(pg) -> Path:
    dump = WORK / "bench.dump"
    conn = ["-h", pg.host, "-p", str(pg.port), "-U", "postgres"]
    print("logical: pg_dump -Fc once (its restore is timed in each repetition)", flush=True)
    subprocess.run([str(pg.bin_dir / "pg_dump"), *conn, "-Fc", "-f", str(dump), "bench"], check=True)
    return dump


def _measure_recoveries(settings, plain, dump: Path | None, r: dict, psycopg, recover_first: bool, rows: int,
                        prefetch: int) -> None:
    """recover_to(latest) on the archive vs pg_restore of the dump into `plain` (a server that does not archive).

    Without a dump (plain None): the recovery only."""
    from opstower_core.events import StepFinished, StepProgress
    from opstower_core.pitr import RecoveryTarget, recover_to

    steps: dict[str, float] = {}
    lsns: list[tuple[float, int]] = []  # (when, LSN replayed): recover_to samples it every 0.2 s

    def on_event(e) -> None:
        if isinstance(e, StepFinished):
            steps[e.step] = e.seconds
            if e.step == "replay":
                r["from_spool"] = e.data.get("wal_from_spool", 0)
        elif isinstance(e, StepProgress) and e.step == "replay" and e.unit == "lsn":
            lsns.append((time.monotonic(), e.done))

    def pitr() -> None:
        cluster, r["recover_s"] = _timed("recover_to(latest): download + replay + promote", lambda: recover_to(
            settings, settings.target(), RecoveryTarget(), on_event=on_event, wal_prefetch=prefetch))
        try:
            with psycopg.connect(**cluster.target("bench").conninfo()) as c:
                got = c.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            cluster.discard()
        if got != rows:
            raise RuntimeError(f"the recovered cluster holds {got} rows, not {rows}")
        r["fetch_base_s"] = steps.get("fetch_base", 0.0)
        r["replay_s"] = steps.get("replay", 0.0)
        # Replay proper: from the first sample (the cluster is consistent and answers) to the last LSN
        # change; the rest of the step is start-up, the look for a segment past the archive's end and promotion.
        moved = [i for i in range(1, len(lsns)) if lsns[i][1] > lsns[i - 1][1]]
        if moved:
            (t0, l0), (t1, l1) = lsns[0], lsns[moved[-1]]
            r["replayed_bytes"], r["replaying_s"] = l1 - l0, t1 - t0
        else:  # everything was replayed before the first sample (start-up until consistency)
            r["replayed_bytes"], r["replaying_s"] = 0, 0.0

    def logical() -> None:
        conn = ["-h", plain.host, "-p", str(plain.port), "-U", "postgres"]
        subprocess.run([str(plain.bin_dir / "dropdb"), *conn, "--if-exists", "bench_logical"], check=True)
        subprocess.run([str(plain.bin_dir / "createdb"), *conn, "bench_logical"], check=True)
        _, r["logical_restore_s"] = _timed("pg_restore -j 2 into a new database", lambda: subprocess.run(
            [str(plain.bin_dir / "pg_restore"), *conn, "-j", "2", "--no-owner", "-d", "bench_logical", str(dump)],
            check=True))
        subprocess.run([str(plain.bin_dir / "dropdb"), *conn, "bench_logical"], check=True)

    if plain is None:
        pitr()
        return
    for fn in ((pitr, logical) if recover_first else (logical, pitr)):
        fn()


def _compare_prefetch(settings, pg, args, info: dict, psycopg, started: float) -> int:
    """Recovery to latest with no prefetch and with K, alternating which goes first, on one archive."""
    from opstower_core.pitr import take_base_backup

    take_base_backup(settings, settings.target())
    w: dict = {}
    _write_wal(pg, args.update_rows, w, psycopg)
    runs: list[dict] = []
    for rep in range(args.reps):
        order = (0, args.prefetch) if rep % 2 == 0 else (args.prefetch, 0)
        for k in order:
            print(f"repetition {rep + 1}/{args.reps}: prefetch {k}", flush=True)
            r: dict = {"prefetch": k, "wal_bytes": w["wal_bytes"], "uptime": _uptime()}
            _measure_recoveries(settings, None, None, r, psycopg, True, args.rows, k)
            runs.append(r)
            RAW.write_text(json.dumps({"info": info, "runs": runs}, indent=1))
    info["uptime_after"] = _uptime()
    info["minutes"] = (time.monotonic() - started) / 60
    mb = 1024 * 1024
    lines = [f"database {info['db_bytes'] / mb:.0f} MiB ({args.rows:,} rows), {w['wal_bytes'] / mb:.0f} MiB of WAL "
             f"(UPDATE of {args.update_rows:,} rows), {args.reps} repetitions, {info['minutes']:.0f} min",
             f"- `uptime` before: {info['uptime_before']}", f"- `uptime` after: {info['uptime_after']}", "",
             "| prefetch | recovery s | replay + promote s | replay MiB/s (step) | while replaying MiB/s "
             "| segments from the spool | uptime at start |", "|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        rate = r["wal_bytes"] / mb / r["replay_s"] if r["replay_s"] else 0.0
        live = r["replayed_bytes"] / mb / r["replaying_s"] if r["replaying_s"] else 0.0
        lines.append(f"| {r['prefetch']} | {r['recover_s']:.1f} | {r['replay_s']:.1f} | {rate:.1f} | {live:.1f} "
                     f"| {r.get('from_spool', 0)} | {r['uptime'].split('load average:')[-1].strip()} |")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def _med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _spread(runs: list[dict], key: str, fmt: str = "{:.1f}") -> str:
    values = [r[key] for r in runs]
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _table(info: dict, runs: list[dict]) -> str:
    mb = 1024 * 1024
    for r in runs:
        r["base_ratio"] = r["base_backup_s"] / r["pg_basebackup_s"]
        r["recover_ratio"] = r["recover_s"] / r["logical_restore_s"]
        r["replay_mb_s"] = r["wal_bytes"] / mb / r["replay_s"] if r["replay_s"] else 0.0
        r["replaying_mb_s"] = r["replayed_bytes"] / mb / r["replaying_s"] if r["replaying_s"] else 0.0
        r["replayed_mb"] = r["replayed_bytes"] / mb
        r["wal_mb"] = r["wal_bytes"] / mb
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}; "
        f"PostgreSQL {info['server']} (embedded, archiving through `opstower wal-push`), SeaweedFS on loopback; "
        f"database {info['db_bytes'] / mb:.0f} MiB ({info['rows']:,} event rows); {len(runs)} interleaved "
        f"repetitions, {info['minutes']:.0f} min in all.",
        "",
        f"- `uptime` before: {info['uptime_before']}",
        f"- `uptime` after: {info['uptime_after']}",
        "",
        "Times in seconds: median (min-max) of the repetitions; ratio: median of the per-repetition ratios "
        "(PITR / reference, below 1 = PITR faster). The logical restore runs on a second server that does not "
        "archive.",
        "",
        "| measure | PITR (barman-cloud, S3) | reference | ratio |",
        "|---|---|---|---:|",
        f"| base backup | `opstower base-backup` {_spread(runs, 'base_backup_s')} s, "
        f"{_med(runs, 'base_backup_bytes') / mb:.0f} MiB in S3 | `pg_basebackup -Ft` to local disk "
        f"{_spread(runs, 'pg_basebackup_s')} s, {_med(runs, 'pg_basebackup_bytes') / mb:.0f} MiB | "
        f"{_med(runs, 'base_ratio'):.2f} |",
        f"| recovery to a queryable cluster | recovery to latest {_spread(runs, 'recover_s')} s (download "
        f"{_spread(runs, 'fetch_base_s')} s, replay + promote {_spread(runs, 'replay_s')} s) | `pg_restore -j 2` of "
        f"the same data {_spread(runs, 'logical_restore_s')} s | {_med(runs, 'recover_ratio'):.2f} |",
        f"| WAL replay throughput, whole replay step | {_spread(runs, 'replay_mb_s', '{:.1f}')} MiB/s "
        f"({_med(runs, 'wal_mb'):.0f} MiB of WAL from an UPDATE of {info['update_rows']:,} rows, over start-up, "
        "fetch, replay and promotion) | - | - |",
        f"| WAL replay throughput, while replaying | {_spread(runs, 'replaying_mb_s', '{:.1f}')} MiB/s "
        f"({_med(runs, 'replayed_mb'):.0f} MiB between the first and the last LSN sample in "
        f"{_spread(runs, 'replaying_s')} s; `opstower wal-fetch` prefetching {info.get('prefetch', 0)} segments) | - | - |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
