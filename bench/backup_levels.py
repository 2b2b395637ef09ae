"""zstd level and thread count against time, CPU and size, for the backup of the benchmark database.

Each configuration is a whole `run_backup --local-only` in this process (pg_dump, the server
and our pipeline share the 2 cores, as in production), interleaved with the floor (`pg_dump
-Fc -Z0` to a file) round by round; medians reported with the load average.

    .venv/bin/python bench/backup_levels.py [--rounds 3] [--configs 1:-1,1:0,-1:-1,-3:-1,3:-1]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default="1:-1,1:0,-1:-1,-1:0,-3:-1,3:-1", help="level:threads,...")
    parser.add_argument("--db", default="bench")
    args = parser.parse_args(argv)
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]

    from opstower_core.backup import BackupOptions, run_backup
    from opstower_core.config import Settings, Target
    from opstower_core.devenv.embedded import EmbeddedPostgres

    out = WORK / "levels"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    size: dict[str, int] = {}
    with EmbeddedPostgres(WORK / "pg") as pg:
        settings = Settings(backup_dir=out / "b", state_dir=out / "s", pg_bin=pg.bin_dir, min_free_gb=0.0,
                            targets={args.db: Target(args.db, args.db, host=pg.host, port=pg.port, user=pg.user)},
                            default_target=args.db)
        env = {**os.environ, **pg.libpq_env()}
        before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        for _ in range(args.rounds):
            t0 = time.monotonic()
            subprocess.run([f"{pg.bin_dir}/pg_dump", "-Fc", "-Z0", f"--dbname={args.db}", f"--file={out}/floor.dump"],
                           env=env, check=True)
            wall.setdefault("floor", []).append(time.monotonic() - t0)
            size["floor"] = (out / "floor.dump").stat().st_size
            (out / "floor.dump").unlink()
            for level, threads in configs:
                key = f"level {level}, threads {threads}"
                c0, k0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.monotonic()
                r = run_backup(settings, options=BackupOptions(local_only=True, zstd_level=level, zstd_threads=threads))
                wall.setdefault(key, []).append(time.monotonic() - t0)
                k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                ours = time.process_time() - c0
                child = (k1.ru_utime + k1.ru_stime) - (k0.ru_utime + k0.ru_stime)
                cpu.setdefault(key, []).append(ours)
                cpu.setdefault(key + " (pg_dump)", []).append(child)
                size[key] = r.meta["size_bytes"]
                for p in (out / "b").glob(f"{args.db}_*"):
                    p.unlink()
        after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    floor = statistics.median(wall["floor"])
    print(f"Medians of {args.rounds} interleaved rounds; load average {before} before, {after} after.\n")
    print("| configuration | wall (s) | × floor | our CPU-s | pg_dump CPU-s | size (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| floor: pg_dump -Fc -Z0 to a file | {floor:.2f} | 1.00 | | | {size['floor'] / 2**20:,.0f} |")
    for level, threads in configs:
        key = f"level {level}, threads {threads}"
        w = statistics.median(wall[key])
        print(f"| zstd {key} | {w:.2f} | {w / floor:.2f} | {statistics.median(cpu[key]):.2f} | "
              f"{statistics.median(cpu[key + ' (pg_dump)']):.2f} | {size[key] / 2**20:,.1f} |")
    print("\nEvery run (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in wall.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
