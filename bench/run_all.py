"""Benchmarks of the engine against the reference shell pipeline, on the ~600 MB database.

Runs on the embedded PostgreSQL 18 + SeaweedFS (bench/.work/), builds the benchmark
database once (bench/benchdb.py), then times each contender as a separate process, the way
an operator or cron runs it. Prints a markdown table and writes it to bench/.work/results.md.

    make bench            # issue 18's table at 0.6 GB: ours vs reference point vs ratio vs goal
    .venv/bin/python bench/run_all.py --size 3          # the same at ~3 GB (generated into bench_3gb)
    .venv/bin/python bench/run_all.py --only backup,verify,restore,encryption   # the detailed tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work"
BIN = Path(sys.executable).parent
OPSTOWER = str(BIN / "opstower")


@dataclass
class Row:
    section: str
    what: str
    seconds: float
    size: int | None = None
    rss_mb: float | None = None
    note: str = ""


def run_timed(cmd: list[str] | str, env: dict[str, str], shell: bool = False) -> tuple[float, float | None]:
    """Wall time of a command and the peak RSS (MB) of its top process (VmHWM polled)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            executable="/bin/bash" if shell else None)
    peak = [0.0]

    def poll() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) / 1024)
            except OSError:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    elapsed = time.monotonic() - t0
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {cmd}\n{err.decode()[-2000:]}")
    return elapsed, (peak[0] or None)


def newest(directory: Path, pattern: str) -> Path:
    files = sorted((p for p in directory.glob(pattern) if not p.is_symlink()), key=lambda p: p.stat().st_mtime)
    return files[-1]


def best_of(n: int, fn):
    """Run fn n times, keep the fastest (first runs warm the page cache)."""
    results = [fn() for _ in range(n)]
    return min(results, key=lambda r: r[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="rows of events (default: from --size)")
    parser.add_argument("--size", type=float, default=0.6, help="database size in GB: 0.6 (bench) or e.g. 3")
    parser.add_argument("--rounds", type=int, default=3, help="issue18: interleaved rounds; medians reported")
    parser.add_argument("--repeat", type=int, default=2, help="runs per contender; the fastest counts")
    parser.add_argument("--only", default="issue18", help="issue18 and/or backup,verify,restore,encryption")
    parser.add_argument("--contenders", default=None,
                        help="issue18: only these contenders (comma-separated keys, e.g. "
                        "zstd,verify,bare_restore,restore_new,restore_swap,full_test); rows need both of a pair")
    parser.add_argument("--before", default=None, metavar="SRC",
                        help="issue18: also run verify/restore/full test with the engine source tree SRC (e.g. "
                        "`git archive <commit> src | tar -x -C DIR`, then DIR/src), interleaved")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    # Bytecode as an installed copy (or any second run) has it: this machine sets PYTHONDONTWRITEBYTECODE,
    # which would make every timed process recompile the engine (~0.1-0.3 CPU-s per start).
    import compileall

    compileall.compile_dir(str(HERE.parent / "src"), quiet=1)
    if args.before:
        compileall.compile_dir(args.before, quiet=1)

    from benchdb import build_bench_db, database_size
    from issue18 import bench_issue18, db_name, size_rows

    args.rows = args.rows or size_rows(args.size)
    dbname = db_name(args.size)
    from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3

    WORK.mkdir(exist_ok=True)
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    rows: list[Row] = []
    with EmbeddedPostgres(WORK / "pg") as pg, EmbeddedS3(WORK / "s3") as s3:
        build_bench_db(pg.conninfo("postgres"), dbname, args.rows)
        db_bytes = database_size(pg.conninfo("postgres"), dbname)
        env = {**os.environ, **pg.libpq_env(), **s3.env(), "PGDATABASE": dbname}
        config = WORK / "bench.toml"
        config.write_text(
            f'backup_dir = "{out / "backups"}"\nstate_dir = "{out / "state"}"\npg_bin = "{pg.bin_dir}"\n'
            f'min_free_gb = 0\n[s3]\nbucket = "{s3.bucket}"\nendpoint_url = "{s3.endpoint_url}"\n'
            f'[targets.{dbname}]\nhost = "{pg.host}"\nport = {pg.port}\nuser = "postgres"\n'
        )
        env["OPSTOWER_CONFIG"] = str(config)
        tools = pg.bin_dir
        ctx = {"pg": pg, "s3": s3, "env": env, "out": out, "tools": tools, "repeat": args.repeat, "rows": rows,
               "config": config}
        if "issue18" in only:
            table = bench_issue18(ctx, dbname, args.rounds,
                                  args.contenders.split(",") if args.contenders else None, args.before)
            head = render([], db_bytes, args.rows).split("\n\n")[0]
            print(head + "\n\n" + table)
            (WORK / f"issue18_{dbname}.md").write_text(head + "\n\n" + table)
        if "backup" in only or "verify" in only or "restore" in only:
            bench_backup(ctx)
        if "encryption" in only:
            bench_encryption(ctx)
        if "verify" in only:
            bench_verify(ctx)
        if "restore" in only:
            bench_restore(ctx)
    if rows:
        text = render(rows, db_bytes, args.rows)
        print(text)
        (WORK / "results.md").write_text(text)  # the curated, committed tables live in bench/results.md
    return 0


def bench_backup(ctx: dict) -> None:
    env, out, tools, rows, n = ctx["env"], ctx["out"], ctx["tools"], ctx["rows"], ctx["repeat"]
    ref = out / "ref"
    ref.mkdir(exist_ok=True)

    def reference() -> tuple[float, float | None]:
        for p in ref.glob("*"):
            p.unlink()
        cmd = (f"{tools}/pg_dump --format=plain --no-owner --no-acl --dbname=bench > {ref}/bench.sql "
               f"&& gzip {ref}/bench.sql")
        return run_timed(cmd, env, shell=True)

    t, _ = best_of(n, reference)
    rows.append(Row("backup", "(a) reference: pg_dump --format=plain > file, then gzip", t,
                    (ref / "bench.sql.gz").stat().st_size))

    def floor() -> tuple[float, float | None]:
        return run_timed([f"{tools}/pg_dump", "-Fc", "-Z0", "--dbname=bench", f"--file={out}/floor.dump"], env)

    t, _ = best_of(n, floor)
    rows.append(Row("backup", "(c) floor: bare pg_dump -Fc -Z0 to a file", t, (out / "floor.dump").stat().st_size))
    (out / "floor.dump").unlink()

    t, rss = best_of(n, lambda: run_timed([OPSTOWER, "backup", "--local-only"], env))
    rows.append(Row("backup", "(b) opstower backup --local-only", t,
                    newest(out / "backups", "bench_*.dump.zst").stat().st_size, rss))
    t, rss = best_of(n, lambda: run_timed([OPSTOWER, "backup"], env))
    ctx["artifact"] = newest(out / "backups", "bench_*.dump.zst")  # in both places: check 7 has its S3 copy
    rows.append(Row("backup", "(d) opstower backup (local + S3)", t, ctx["artifact"].stat().st_size, rss))
    t, rss = run_timed([OPSTOWER, "backup", "--format", "plain"], env)
    rows.append(Row("backup", "opstower backup --format plain (legacy .sql.gz, local + S3)", t,
                    newest(out / "backups", "bench_*.sql.gz").stat().st_size, rss))


def bench_encryption(ctx: dict) -> None:
    import pyrage

    env, out, rows, n = ctx["env"], ctx["out"], ctx["rows"], ctx["repeat"]
    ident = pyrage.x25519.Identity.generate()
    key = out / "bench-key.txt"
    key.write_text(f"{ident}\n")
    plain_t, _ = best_of(n, lambda: run_timed([OPSTOWER, "backup", "--local-only"], env))
    enc_env = {**env, "OPSTOWER_AGE_RECIPIENTS": str(ident.to_public())}
    t, rss = best_of(n, lambda: run_timed([OPSTOWER, "backup", "--local-only"], enc_env))
    rows.append(Row("encryption", "opstower backup --local-only, unencrypted (same run)", plain_t))
    rows.append(Row("encryption", "opstower backup --local-only, age-encrypted", t,
                    newest(out / "backups", "bench_*.dump.zst.age").stat().st_size, rss,
                    f"{100 * (t / plain_t - 1):+.0f}% vs unencrypted"))
    ctx["encrypted_key"] = key


def bench_verify(ctx: dict) -> None:
    env, out, rows, n = ctx["env"], ctx["out"], ctx["rows"], ctx["repeat"]
    art = ctx["artifact"]
    t, _ = best_of(n, lambda: run_timed(f"zstd -d -c {art} > /dev/null", env, shell=True))
    rows.append(Row("verify", "floor: zstd -d of the artifact to /dev/null", t, art.stat().st_size))
    t, rss = best_of(n, lambda: run_timed([OPSTOWER, "verify", str(art)], env))
    rows.append(Row("verify", "opstower verify (checks 1-7) of the .dump.zst, whole process", t, art.stat().st_size, rss))
    engine = min(engine_verify_seconds(art, env) for _ in range(n))
    rows.append(Row("verify", "verify() checks 1-7 in the engine (no interpreter start-up)", engine, art.stat().st_size))
    gz = out / "ref" / "bench.sql.gz"
    # The reference verify-backup.sh way: gzip -t, then zcat | grep for the header and SQL commands.
    ref_cmd = (f"gzip -t {gz} && zcat {gz} | head -n 20 | grep -q 'PostgreSQL database dump' "
               f"&& zcat {gz} | grep -qE '^(CREATE TABLE|COPY|INSERT)' && zcat {gz} | grep -cE '^CREATE TABLE' >/dev/null")
    t, _ = best_of(n, lambda: run_timed(ref_cmd, env, shell=True))
    rows.append(Row("verify", "reference: gzip -t, then zcat | grep header / SQL commands (.sql.gz)", t, gz.stat().st_size))
    plain_art = newest(out / "backups", "bench_*.sql.gz")
    t, _ = best_of(n, lambda: run_timed([OPSTOWER, "verify", str(plain_art)], env))
    rows.append(Row("verify", "opstower verify (checks 1-7) of the legacy .sql.gz", t, plain_art.stat().st_size))


def engine_verify_seconds(art: Path, env: dict[str, str]) -> float:
    """Seconds spent in verify() itself (checks 1-7), measured inside a fresh process."""
    code = (
        "import sys, time\n"
        "from opstower_core.config import load_settings\n"
        "from opstower_core.verify.run import verify\n"
        "s = load_settings()\n"
        "t = time.perf_counter(); r = verify(s, sys.argv[1], upto=7); t = time.perf_counter() - t\n"
        "assert r.ok, [x.detail for x in r.failed]\n"
        "print(t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(art)], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_restore(ctx: dict) -> None:
    env, out, tools, rows = ctx["env"], ctx["out"], ctx["tools"], ctx["rows"]
    import psycopg

    pg = ctx["pg"]
    art = ctx["artifact"]

    def recreate(name: str) -> None:
        with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')

    recreate("bench_bare")
    t, _ = run_timed(f"zstd -d -c {art} | {tools}/pg_restore --exit-on-error --dbname=bench_bare", env, shell=True)
    rows.append(Row("restore", "bare: zstd -d | pg_restore into an empty database", t))
    dump = out / "bench.dump"
    subprocess.run(f"zstd -d -q -c {art} > {dump}", shell=True, check=True)
    recreate("bench_bare")
    t, _ = run_timed([f"{tools}/pg_restore", "--exit-on-error", "--jobs=2", "--dbname=bench_bare", str(dump)], env)
    rows.append(Row("restore", "bare: pg_restore -j2 of the uncompressed dump file", t))
    dump.unlink()
    with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as c:
        c.execute('DROP DATABASE IF EXISTS "bench_bare" WITH (FORCE)')
    proc = subprocess.run([OPSTOWER, "restore", str(art), "--force", "--target-db", "bench_restored", "--json"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        rows.append(Row("restore", "opstower restore (failed)", 0.0, note=proc.stderr.strip()[-200:]))
        return
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = summary.get("steps", [])
    load = sum(s["seconds"] for s in steps if s.get("step") in ("drop_create", "restore"))
    rows.append(Row("restore", "opstower restore --target-db: steps 6-7 (create + restore)", load))
    for s in steps:
        rows.append(Row("restore", f"  step: {s.get('title', s.get('step'))}", s["seconds"]))
    rows.append(Row("restore", "opstower restore: whole plan", summary.get("total_seconds", 0.0)))
    with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as c:
        c.execute('DROP DATABASE IF EXISTS "bench_restored" WITH (FORCE)')


def render(rows: list[Row], db_bytes: int, nrows: int) -> str:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    head = (f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; PostgreSQL 18.4 (embedded); database {db_bytes / 2**20:,.0f} MiB, "
            f"{nrows:,} event rows; {time.strftime('%Y-%m-%d')}.\n\n")
    lines = ["| section | what | time (s) | size (MiB) | peak RSS (MiB) | note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.section} | {r.what} | {r.seconds:.2f} | "
                     f"{'' if r.size is None else f'{r.size / 2**20:,.0f}'} | "
                     f"{'' if r.rss_mb is None else f'{r.rss_mb:.0f}'} | {r.note} |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
