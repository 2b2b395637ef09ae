"""Table recovery: merge of 1,000,000 missing rows back into the benchmark table.

Builds (or finds) a database `recbench` in bench/.work/pg with bench/benchdb.py's generator
(`events`: bigserial key, timestamptz, jsonb, text; two secondary indexes), takes one
custom-format backup, deletes every row, then times `run_recovery` (mode merge) and prints
each step: verification, the scratch restore and its proof, the preview (rows staged through
the client and compared), the pre-change copy, the transaction (staged again under the lock,
inserted) and the proof (every backup key present).

    .venv/bin/python bench/recover_bench.py [--rows N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / ".work"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    import shutil

    import psycopg

    from benchdb import build_bench_db
    from opstower_core.backup import run_backup
    from opstower_core.config import Settings, Target
    from opstower_core.devenv.embedded import EmbeddedPostgres
    from opstower_core.recover import RecoverOptions, run_recovery

    WORK.mkdir(exist_ok=True)
    out = WORK / "recover"
    shutil.rmtree(out, ignore_errors=True)
    with EmbeddedPostgres(WORK / "pg") as pg:
        build_bench_db(pg.conninfo("postgres"), "recbench", args.rows)
        settings = Settings(backup_dir=out / "backups", state_dir=out / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
                            targets={"recbench": Target("recbench", "recbench", host=pg.host, port=pg.port,
                                                        user=pg.user)},
                            default_target="recbench")
        run_backup(settings)
        with psycopg.connect(**pg.conninfo("recbench"), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS saved AS SELECT count(*) AS n FROM events")
            conn.execute("DELETE FROM events")
            conn.execute("VACUUM events")
        t0 = time.perf_counter()
        result = run_recovery(settings, "latest", RecoverOptions(tables=["events"], force=True))
        wall = time.perf_counter() - t0
        for s in result.steps:
            print(f"{s.title:55} {s.status.value:5} {s.seconds:7.2f} s")
        print(result.sentence)
        with psycopg.connect(**pg.conninfo("recbench"), autocommit=True) as conn:
            back = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            conn.execute("DROP TABLE saved")
        assert result.ok and back == args.rows, (result.sentence, back)
        print(f"merge of {args.rows:,} missing rows: {wall:.1f} s wall for the whole recovery; "
              f"{sum(s.seconds for s in result.steps if s.step in ('apply', 'prove')):.1f} s for the transaction "
              "and its proof")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
