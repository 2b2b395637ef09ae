"""The restore proof's cost on the ~600 MB benchmark database, against the restore step's own time.

Builds (or finds) the bench database in bench/.work/pg, takes one custom-format backup, then times:
verification checks 1-6 (its single read now also digests every table), the dump-side digest
alone, the restore step (pg/load, one job, streamed), and `prove_restored` on the restored
database (COPY of every table under the dump's settings + the inventory queries).
Budget (issue 12): the proof adds at most 0.5x the restore step's time.

    .venv/bin/python bench/proof_bench.py [--rows N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work"


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args(argv)

    import psycopg

    from benchdb import build_bench_db
    from opstower_core.artifacts.scan import scan_file
    from opstower_core.backup import run_backup
    from opstower_core.config import Settings, Target
    from opstower_core.devenv.embedded import EmbeddedPostgres
    from opstower_core.events import Reporter
    from opstower_core.pg.digest import DumpDigester
    from opstower_core.pg.load import restore_into
    from opstower_core.verify import prove_restored, verify

    WORK.mkdir(exist_ok=True)
    out = WORK / "proof"
    rows: list[tuple[str, float, float, str]] = []
    with EmbeddedPostgres(WORK / "pg") as pg:
        build_bench_db(pg.conninfo("postgres"), "bench", args.rows)
        settings = Settings(backup_dir=out / "backups", state_dir=out / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
                            targets={"bench": Target("bench", "bench", host=pg.host, port=pg.port, user=pg.user)},
                            default_target="bench")
        backup = run_backup(settings)
        assert backup.ok
        target = settings.target()

        result, wall, cpu = timed(lambda: verify(settings, backup.path, upto=6))
        proof = result.proof
        assert proof is not None, [r.detail for r in result.results]
        rows.append(("verify checks 1-6 (one read, digests included)", wall, cpu, ""))

        def digest_only() -> DumpDigester:
            d = DumpDigester()
            scan_file(backup.path, "zstd", on_data=d.write)
            d.close()
            return d

        d, wall, cpu = timed(digest_only)
        rows.append(("  of which: zstd read + dump-side digest alone", wall, cpu,
                     f"{d.bytes_in / 1e6:.0f} MB of dump"))

        with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench_proof WITH (FORCE)")
            conn.execute("CREATE DATABASE bench_proof")
        _, restore_wall, restore_cpu = timed(lambda: restore_into(settings, target, backup.path, "bench_proof",
                                                                  Reporter(None), "restore"))
        rows.append(("restore step (pg_restore, one job, streamed)", restore_wall, restore_cpu, "reference"))
        for label, psql in (("proof: psql COPY + inventory (the default)", proof.psql),
                            ("proof: libpq COPY in Python + inventory", None)):
            res, wall, cpu = timed(lambda psql=psql: prove_restored(target, "bench_proof",
                                                                    dataclasses.replace(proof, psql=psql),
                                                                    no_acl=True, database_settings=False))
            assert res.ok, res.differences
            rows.append((label, wall, cpu, f"{wall / restore_wall:.2f}x restore; {res.sentence[:60]}"))
        with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench_proof WITH (FORCE)")
    print("| step | wall s | own CPU s | note |\n|---|---|---|---|")
    for what, wall, cpu, note in rows:
        print(f"| {what} | {wall:.2f} | {cpu:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
