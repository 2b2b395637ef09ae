"""The restore-time forecast against real restores of the benchmark databases.

Restores the smaller databases (each once, into a new database, recorded in a fresh state
file), then forecasts the restore of the largest from those records and runs it: predicted vs
actual. Needs the databases built (bench/benchdb.py --dbname ... --rows ...).

    .venv/bin/python bench/forecast_check.py --learn bench_0_03gb,bench --predict bench_3_0gb
    .venv/bin/python bench/forecast_check.py --learn bench_0_03gb,bench_3_0gb --predict bench
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn", default="bench_0_03gb,bench")
    parser.add_argument("--predict", default="bench_3_0gb")
    args = parser.parse_args(argv)
    names = [*args.learn.split(","), args.predict]

    import psycopg

    from opstower_core.backup import BackupOptions, run_backup
    from opstower_core.config import Settings, Target
    from opstower_core.devenv.embedded import EmbeddedPostgres
    from opstower_core.restore import RestoreOptions, plan_restore, run_restore
    from opstower_core.runs.history import StateStore

    out = WORK / "forecast"
    shutil.rmtree(out, ignore_errors=True)
    with EmbeddedPostgres(WORK / "pg") as pg:
        targets = {n: Target(n, n, host=pg.host, port=pg.port, user=pg.user) for n in names}
        base = Settings(backup_dir=out / "b", state_dir=out / "s", pg_bin=pg.bin_dir, min_free_gb=0.0, targets=targets)
        state = StateStore(base.state_dir)

        def restore(name: str, plan_only: bool = False):
            s = base.with_changes(default_target=name)
            backup = run_backup(s, options=BackupOptions(local_only=True))
            with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}_fc" WITH (FORCE)')
            plan = plan_restore(s, str(backup.path), options=RestoreOptions(target_db=f"{name}_fc"))
            result = None if plan_only else run_restore(s, plan, state=state)
            with psycopg.connect(**pg.conninfo("postgres"), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}_fc" WITH (FORCE)')
            return plan, result

        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        for name in args.learn.split(","):
            plan, result = restore(name)
            print(f"learnt: {name}: {plan.uncompressed_size / 2**20:,.0f} MiB dump, restore {result.total_seconds:.1f} s "
                  f"({result.service_seconds or 0.0:.1f} s to service)")
        t0 = time.monotonic()
        plan, result = restore(args.predict)
        fc = plan.forecast
        # The forecast is of the RTO clock: until the restored database is in service (VACUUM and a swap's
        # pre-restore copy run after the switch, off the clock), so it is compared with service_seconds.
        actual_s = result.service_seconds if result.service_seconds is not None else result.total_seconds
        print(f"predicted {args.predict}: {fc.seconds:.1f} s ({fc.reason}); actual {actual_s:.1f} s to service "
              f"({result.total_seconds:.1f} s whole command); "
              f"error {100 * (fc.seconds - actual_s) / actual_s:+.0f}% "
              f"(load average {load} before, {' '.join(Path('/proc/loadavg').read_text().split()[:3])} after; "
              f"{time.monotonic() - t0:.0f} s with its backup)")
        actual = {s.step: s.seconds for s in result.steps}
        for s in fc.steps:
            print(f"  {s.step:16} predicted {s.seconds:7.2f} s  actual {actual.get(s.step, 0.0):7.2f} s  ({s.basis})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
