"""zstd level and thread count against time, CPU and size, for the backup of the benchmark database.

Each configuration is a whole `run_backup --local-only` in this process (pg_dump, the server
and our pipeline share the 2 cores, as in production), interleaved with the floor (`pg_dump
-Fc -Z0` to a file) round by round; medians reported with the load average.

    .venv/bin/python bench/backup_levels.py [--rounds 3] [--configs 1:-1,1:0,-1:-1,-3:-1,3:-1]

With --before SRC (an earlier engine's source tree: `git archive <commit> src | tar -x -C DIR`,
then DIR/src) it compares engines instead of levels: each round runs the floor, the reference's
plain dump + gzip (unless --no-reference), then `opstower backup --local-only` and `opstower backup`
(local + S3, an embedded SeaweedFS of its own) with this engine and with SRC, as whole processes,
interleaved; wall and the CPU seconds of the process and its children (pg_dump, pg_dumpall; not the
server's), with the load average.
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
    parser.add_argument("--before", default=None, metavar="SRC", help="compare this engine with the one in SRC")
    parser.add_argument("--no-reference", action="store_true", help="--before: leave out the plain dump + gzip")
    parser.add_argument("--no-s3", action="store_true", help="--before: leave out the backups with S3")
    args = parser.parse_args(argv)
    if args.before:
        return compare(args)
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


def _timed(cmd: list[str] | str, env: dict[str, str], shell: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys of the command and the children it waited for)."""
    k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, shell=shell, executable="/bin/bash" if shell else None,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr[-1500:]}")
    return wall, (k1.ru_utime + k1.ru_stime) - (k0.ru_utime + k0.ru_stime)


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds of a process and of the children it has reaped (a postmaster's backends)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def compare(args: argparse.Namespace) -> int:
    from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3

    out = WORK / "levels"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    opstower = str(Path(sys.executable).parent / "opstower")
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    server: dict[str, list[float]] = {}  # the PostgreSQL server's CPU-s (postmaster and its backends)
    weed: dict[str, list[float]] = {}  # the embedded SeaweedFS's CPU-s, on the same 2 cores
    with EmbeddedPostgres(WORK / "pg") as pg, EmbeddedS3(WORK / "s3_levels") as s3:
        config = out / "bench.toml"
        config.write_text(
            f'backup_dir = "{out / "b"}"\nstate_dir = "{out / "s"}"\npg_bin = "{pg.bin_dir}"\nmin_free_gb = 0\n'
            f'[s3]\nbucket = "{s3.bucket}"\nendpoint_url = "{s3.endpoint_url}"\n'
            f'[targets.{args.db}]\nhost = "{pg.host}"\nport = {pg.port}\nuser = "postgres"\n')
        env = {**os.environ, **pg.libpq_env(), **s3.env(), "PGDATABASE": args.db, "OPSTOWER_CONFIG": str(config)}
        before_env = {**env, "PYTHONPATH": str(Path(args.before).resolve())}
        tools = pg.bin_dir

        postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
        store = s3._proc.pid if s3._proc is not None else None

        def run(key: str, cmd: list[str] | str, e: dict[str, str], shell: bool = False) -> None:
            s0, w0 = _proc_cpu(postmaster), _proc_cpu(store)
            w, c = _timed(cmd, e, shell)
            wall.setdefault(key, []).append(w)
            cpu.setdefault(key, []).append(c)
            server.setdefault(key, []).append(_proc_cpu(postmaster) - s0)
            weed.setdefault(key, []).append(_proc_cpu(store) - w0)
            for p in (out / "b").glob(f"{args.db}_*"):
                p.unlink()

        contenders: list[tuple[str, list[str] | str, dict[str, str], bool]] = [
            ("floor: pg_dump -Fc -Z0 to a file",
             f"{tools}/pg_dump -Fc -Z0 --dbname={args.db} --file={out}/floor.dump && rm {out}/floor.dump", env, True)]
        if not args.no_reference:
            contenders.append(("reference: pg_dump --format=plain > file && gzip",
                               f"{tools}/pg_dump --format=plain --no-owner --no-acl --dbname={args.db} > {out}/r.sql"
                               f" && gzip -f {out}/r.sql && rm {out}/r.sql.gz", env, True))
        for label, e in (("after", env), ("before", before_env)):
            contenders.append((f"backup --local-only ({label})", [opstower, "backup", "-d", args.db, "--local-only"],
                               e, False))
            if not args.no_s3:
                contenders.append((f"backup with S3 ({label})", [opstower, "backup", "-d", args.db], e, False))
        before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        for i in range(args.rounds):
            # Alternate the order of the two engines round by round: neither always runs first.
            order = contenders if i % 2 == 0 else contenders[:1 + (not args.no_reference)] + [
                c for lab in ("before", "after") for c in contenders if c[0].endswith(f"({lab})")]
            for key, cmd, e, shell in order:
                run(key, cmd, e, shell)
        after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    floor = statistics.median(wall["floor: pg_dump -Fc -Z0 to a file"])
    print(f"Medians of {args.rounds} interleaved rounds; load average {before} before, {after} after.\n")
    print("| contender | wall (s) | × floor | CPU-s (process + children) | server CPU-s | store CPU-s |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in wall:
        w = statistics.median(wall[key])
        print(f"| {key} | {w:.2f} | {w / floor:.2f} | {statistics.median(cpu[key]):.2f} | "
              f"{statistics.median(server[key]):.2f} | {statistics.median(weed[key]):.2f} |")
    print("\nEvery run (wall s / CPU s): " + "; ".join(
        f"{k}: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in zip(v, cpu[k], strict=True))}" for k, v in wall.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
