"""Spike (issue 18): would loading a big table in committed row ranges let the proof's read-back
run beside the COPY instead of beside the index builds?

What it measures, on the benchmark artifact (one 2 M-row table at 0.6 GB), interleaved:

- `bare`: `zstd -dc | pg_restore` into a new database (the issue's reference point);
- `read after`: the same, then the restored table read back once (as the proof's read-back
  does, two row ranges at once) — what the read costs when it cannot overlap anything;
- `chunked`: pre-data by pg_restore; the data section written out by `pg_restore --data-only
  --file=-`, each COPY block cut into blocks of `--rows` rows, loaded by psql (every block its own
  transaction); each block read back (`COPY (SELECT ... LIMIT n OFFSET k) TO STDOUT` through
  psql, hashed) as soon as psql reports it committed, while the next block loads; then post-data
  by pg_restore, beside the last reads.

This is a measurement, not the engine (which now loads this way: pg/blockload.py). It answered whether the
read-back can hide in the CPU the COPY phase leaves idle (on 2 cores the COPY backend keeps
about one busy), which would bring the restore with its proof close to a bare restore.

    .venv/bin/python bench/chunked_load_spike.py [--rounds 2] [--rows 262144]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

COLS = '"id", "ts", "user_id", "kind", "payload", "note"'

from opstower_core.pg.blockload import Markers, Splitter  # noqa: E402 - after the path set-up


def sh(cmd: str, env: dict[str, str]) -> None:
    subprocess.run(cmd, shell=True, env=env, check=True, stdout=subprocess.DEVNULL, executable="/bin/bash")


def read_back(psql: str, env: dict[str, str], query: str) -> int:
    """Run one COPY ... TO STDOUT through psql and sha256 it, as the proof's read-back does; bytes read."""
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", query], stdout=subprocess.PIPE,
                          env=env) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    if p.returncode != 0:
        raise SystemExit(f"read-back failed: {query}")
    return n


def chunked(ctx: dict, art: Path, db: str, rows: int, read: bool = True) -> dict[str, float]:
    env, bin_dir = ctx["env"], ctx["bin"]
    psql = f"{bin_dir}/psql"
    denv = {**env, "PGDATABASE": db}
    t0 = time.monotonic()
    sh(f"zstd -dc {art} | {bin_dir}/pg_restore --section=pre-data --exit-on-error -d {db}", env)
    t_pre = time.monotonic() - t0
    dump = subprocess.Popen(f"zstd -dc {art} | {bin_dir}/pg_restore --data-only --file=-", shell=True,
                            stdout=subprocess.PIPE, env=env, executable="/bin/bash")
    load = subprocess.Popen([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=denv)
    assert load.stdin is not None
    splitter = Splitter(dump.stdout, load.stdin, rows)

    def split() -> None:
        splitter.run()
        load.stdin.close()
    committed: queue.Queue[tuple[int, int] | None] = queue.Queue()
    read_bytes = [0]
    t_reads = [0.0]

    def tags() -> None:  # the engine's markers: a block once committed
        assert load.stdout is not None
        markers = Markers(splitter, lambda b: committed.put((b.seq, b.rows)), lambda text: None)
        for line in load.stdout:
            markers.line(line.decode().rstrip("\n"))
        committed.put(None)

    def reader() -> None:
        done = 0
        while (item := committed.get()) is not None:
            _, n = item
            if n == 0 or not read:
                continue
            read_bytes[0] += read_back(psql, denv, f"COPY (SELECT {COLS} FROM ONLY public.events LIMIT {n} "
                                                   f"OFFSET {done}) TO STDOUT")
            done += n
        t_reads[0] = time.monotonic() - t0

    threads = [threading.Thread(target=split), threading.Thread(target=tags), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    threads[0].join()
    if load.wait() != 0 or dump.wait() != 0:
        raise SystemExit("chunked load failed")
    t_data = time.monotonic() - t0
    sh(f"zstd -dc {art} | {bin_dir}/pg_restore --section=post-data --exit-on-error -d {db}", env)
    t_post = time.monotonic() - t0
    for t in threads[1:]:
        t.join()
    return {"pre": t_pre, "data": t_data, "reads": t_reads[0], "post": t_post,
            "total": max(t_post, t_reads[0]), "blocks": len(splitter.blocks), "read_mb": read_bytes[0] / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=262144, help="rows per committed block")
    parser.add_argument("--no-read", action="store_true", help="chunked load without the read-back (what the load costs)")
    parser.add_argument("--artifact", type=Path, default=None, help="a .dump.zst of the bench database (default: the "
                        "newest 0.6 GB one in bench/.work/out/backups)")
    args = parser.parse_args(argv)
    import psycopg

    from opstower_core.devenv.embedded import EmbeddedPostgres
    from run_all import WORK, newest

    with EmbeddedPostgres(WORK / "pg") as pg:
        ctx = {"env": {**os.environ, **pg.libpq_env()}, "bin": str(pg.bin_dir)}
        art = args.artifact or newest(WORK / "out" / "backups", "bench_2*.dump.zst")
        admin = psycopg.connect(**pg.conninfo("postgres"), autocommit=True)

        def fresh(db: str) -> None:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{db}"')
            admin.execute("CHECKPOINT")
            os.sync()

        times: dict[str, list[float]] = {"bare": [], "read after": [], "chunked": []}
        for i in range(args.rounds):
            fresh("spike")
            t0 = time.monotonic()
            sh(f"zstd -dc {art} | {ctx['bin']}/pg_restore --exit-on-error -d spike", ctx["env"])
            times["bare"].append(time.monotonic() - t0)
            t1 = time.monotonic()
            read_back(f"{ctx['bin']}/psql", {**ctx["env"], "PGDATABASE": "spike"},
                      f"COPY (SELECT {COLS} FROM ONLY public.events) TO STDOUT")
            times["read after"].append(times["bare"][-1] + time.monotonic() - t1)
            fresh("spike")
            got = chunked(ctx, art, "spike", args.rows, not args.no_read)
            times["chunked"].append(got["total"])
            print(f"round {i + 1}: bare {times['bare'][-1]:.2f} s; bare + read after {times['read after'][-1]:.2f} s; "
                  f"chunked {got['total']:.2f} s (pre-data {got['pre']:.2f}, data loaded {got['data']:.2f}, "
                  f"reads done {got['reads']:.2f}, post-data done {got['post']:.2f}; {got['blocks']} blocks, "
                  f"{got['read_mb']:.0f} MB read back)", flush=True)
            n = admin.execute("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = 'spike'").fetchone()[0]
            assert n == 1
        with psycopg.connect(**pg.conninfo("spike")) as c:
            rows = c.execute("SELECT count(*) FROM public.events").fetchone()[0]
            idx = c.execute("SELECT count(*) FROM pg_catalog.pg_indexes WHERE tablename = 'events'").fetchone()[0]
        print(f"chunked result: {rows:,} rows, {idx} indexes")
        admin.execute('DROP DATABASE IF EXISTS "spike" WITH (FORCE)')
        print("| contender | median s |\n|---|---|")
        for k, v in times.items():
            print(f"| {k} | {statistics.median(v):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
