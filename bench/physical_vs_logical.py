"""Physical recovery vs our logical restore at the bench size, forecast and measured (issue 18).

On an archiving PostgreSQL 18 of its own (bench/.work/physical/pg) and an embedded SeaweedFS,
with the ~600 MB benchmark database (--rows 2000000; 10000000 for ~3 GB):

- the logical path: a drill's restore phase (our whole restore plan, new-database mode, from
  an `opstower backup` artifact; the drill database is dropped afterwards);
- the physical path: a drill's `pitr_latest` phase (download of the newest base backup,
  replay of the WAL since it, promotion: a queryable cluster), after a fresh base backup and
  an UPDATE of --update-rows rows (the WAL to replay).

Each round forecasts the restore from the rounds before it, and asks forecast.physical_offer what
a recovery would take (from the recoveries before it, for the archive as that recovery will find
it: after the new base backup and the UPDATE) right before measuring it; the rounds
alternate which path goes first (the restore's own WAL is archived too, so a new base backup is
taken after it, before the recovery: the recovery replays the UPDATE's WAL only). Wall seconds
and this process's CPU seconds (with the clients it waited for: pg_restore, barman-cloud; the
servers' own CPU is not in it) for each path, and `uptime` before each round.

    .venv/bin/python bench/physical_vs_logical.py [--rows 2000000] [--update-rows 500000]
                                                  [--rounds 3] [--out FILE.md] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work" / "physical"
MB = 2**20


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--update-rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/physical afterwards")
    args = parser.parse_args(argv)

    import psycopg

    from benchdb import build_bench_db, database_size
    from opstower_core.backup import run_backup
    from opstower_core.config import load_settings
    from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
    from opstower_core.pitr import enable
    from pitr_bench import _config, _write_wal

    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    WORK.chmod(0o755)  # the server's OS user runs the launcher and the scratch cluster from here
    pg = EmbeddedPostgres(WORK / "pg").start()
    s3 = None
    rows: list[dict] = []
    info: dict = {"uptime_before": _uptime()}
    try:
        s3 = EmbeddedS3(WORK / "s3").start()
        os.environ.update(s3.env())
        print("building the benchmark database", flush=True)
        build_bench_db(pg.conninfo("postgres"), "bench", args.rows)
        info["db_bytes"] = database_size(pg.conninfo("postgres"), "bench")
        cfg = _config(WORK, pg, s3)
        settings = load_settings(cfg)
        if enable(settings, settings.target(), apply=True).restart_needed:
            pg.stop()
            pg.start()
        settings = load_settings(cfg)
        backup = run_backup(settings)
        info["dump_bytes"], info["artifact_bytes"] = backup.meta["uncompressed_bytes"], backup.meta["size_bytes"]
        for n in range(args.rounds):
            r = {"round": n + 1, "uptime": _uptime().split("load average:")[-1].strip()}
            logical = _logical_forecast(settings, info)  # before either path runs in this round
            r["logical_fc"] = logical.seconds
            order = ("physical", "logical") if n % 2 == 0 else ("logical", "physical")
            for path in order:
                print(f"round {n + 1}: {path}", flush=True)
                if path == "logical":
                    r.update(_logical(settings))
                else:
                    r.update(_physical(settings, pg, args.update_rows, psycopg, _write_wal, logical))
            rows.append(r)
    finally:
        if s3 is not None:
            s3.stop()
        pg.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    info["uptime_after"] = _uptime()
    info["minutes"] = (time.monotonic() - started) / 60
    text = _table(info, rows, args)
    print()
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def _drill(settings, kind: str):
    from opstower_core.drill import DrillOptions, Phase, Scenario, start_drill

    sc = Scenario(f"bench_{kind}", kind, (Phase(kind, 60, kind),))
    t0, c0 = time.monotonic(), _cpu()
    drill = start_drill(settings, sc, options=DrillOptions(unattended=True)).run_unattended()
    p = drill.phases[0]
    if p.status not in ("PASS", "WARN"):
        raise RuntimeError(f"{kind}: {p.status} {p.detail}")
    return p, time.monotonic() - t0, _cpu() - c0


def _logical(settings) -> dict:
    p, wall, cpu = _drill(settings, "restore")
    return {"logical_s": p.data["restore"]["total_seconds"], "logical_wall_s": wall, "logical_cpu_s": cpu}


def _physical(settings, pg, update_rows: int, psycopg, write_wal, logical) -> dict:
    from opstower_core.pitr import take_base_backup

    take_base_backup(settings, settings.target())
    w: dict = {}
    write_wal(pg, update_rows, w, psycopg)
    offer = _offer(settings, logical)  # for the archive as this recovery will find it
    p, wall, cpu = _drill(settings, "pitr_latest")
    steps = {s["step"]: s["seconds"] for s in p.data["pitr"]["steps"]}
    return {"physical_s": steps["fetch_base"] + steps["replay"], "fetch_s": steps["fetch_base"],
            "replay_s": steps["replay"], "physical_wall_s": wall, "physical_cpu_s": cpu, "wal_mb": w["wal_bytes"] / MB,
            **offer}


def _logical_forecast(settings, info: dict):
    """The restore's forecast from the rounds before (as the plan makes it)."""
    from opstower_core.forecast import forecast_restore
    from opstower_core.runs.history import StateStore

    return forecast_restore(StateStore(settings.state_dir).runs("restore", limit=200), "bench",
                            dump_bytes=info["dump_bytes"], artifact_bytes=info["artifact_bytes"], rto_minutes=240,
                            mode="new_db")


def _offer(settings, logical) -> dict:
    """What the plan would say: the physical offer beside `logical`, from the recoveries before, for the archive now."""
    from opstower_core.forecast import physical_offer
    from opstower_core.pitr import pitr_status
    from opstower_core.pitr.barman import key_root
    from opstower_core.runs.history import StateStore
    from opstower_core.storage.s3 import store_for

    t0 = time.monotonic()
    offer = physical_offer(StateStore(settings.state_dir), "bench", logical, lambda: pitr_status(settings),
                           settings.pitr.server_name, lambda bid: sum(o.size for o in store_for(settings.s3).iter_objects(
                               f"{key_root(settings)}base/{bid}/")))
    return {"physical_fc": offer.physical_seconds, "offer_s": time.monotonic() - t0, "verdict": offer.reason,
            "sentence": offer.sentence}


def _f(v, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _table(info: dict, rows: list[dict], args) -> str:
    lines = [
        f"database {info['db_bytes'] / MB:,.0f} MiB ({args.rows:,} rows; dump {info['dump_bytes'] / MB:,.0f} MiB, "
        f"artifact {info['artifact_bytes'] / MB:,.0f} MiB), UPDATE of {args.update_rows:,} rows before each recovery, "
        f"{len(rows)} rounds, {info['minutes']:.0f} min",
        f"- `uptime` before: {info['uptime_before']}", f"- `uptime` after: {info['uptime_after']}", "",
        "Seconds. Logical: our whole restore plan (new database; a drill's restore phase). Physical: recovery to "
        "latest (download + start, replay, promote; a drill's pitr_latest phase). Forecast: from the rounds before "
        "(none in round 1). CPU: this process and the clients it waited for, not the servers.", "",
        "| round | load (1/5/15) | logical forecast | logical actual | logical CPU | physical forecast "
        "| physical actual (download + replay) | physical CPU | WAL MiB | physical/logical actual | offer (s to make) |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['uptime']} | {_f(r['logical_fc'])} | {r['logical_s']:.1f} | {r['logical_cpu_s']:.1f} "
            f"| {_f(r['physical_fc'])} | {r['physical_s']:.1f} ({r['fetch_s']:.1f} + {r['replay_s']:.1f}) "
            f"| {r['physical_cpu_s']:.1f} | {r['wal_mb']:.0f} | {r['physical_s'] / r['logical_s']:.2f} "
            f"| {r['verdict']} ({r['offer_s']:.1f} s) |")
    last = next((r["sentence"] for r in reversed(rows) if r["sentence"]), None)
    if last:
        lines += ["", f"The plan's note when offered: {last}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
