"""`opstower demo [--no-console]`: embedded PostgreSQL + S3 with sample data, then the console.

The demo runs in its own directory (OPSTOWER_DEMO_DIR, default ~/.cache/opstower-demo)
and never reads the operator's config or PG* environment. Both services stop on exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start a demo (embedded PostgreSQL + S3, sample data) and open the console",
                       description="Start an embedded PostgreSQL and S3 store in their own directory, create the "
                       "sample database and a few backups (one deliberately corrupted), then open the console. "
                       "Later runs reuse the data. Both services stop on exit.")
    p.add_argument("--no-console", action="store_true", help="set everything up, print the backups and exit")
    p.add_argument("--dir", metavar="DIR", help="demo directory (default: $OPSTOWER_DEMO_DIR or ~/.cache/opstower-demo)")
    p.set_defaults(func=run)


def _print_backups(settings) -> None:  # noqa: ANN001 - Settings, imported lazily
    from opstower_core.repo.catalog import list_catalog
    from opstower_core.runs.history import StateStore

    catalog = list_catalog(settings, state=StateStore(settings.state_dir))
    rows = [("NAME", "SIZE", "WHERE", "VERIFIED", "METADATA")]
    for e in catalog.entries:
        rows.append((e.filename, f"{e.size:,}", e.where, e.verified or "-", "ok" if e.meta else e.meta_problem or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if catalog.s3_error:
        print(f"WARN: {catalog.s3_error}", file=sys.stderr)


def _stop_on_term(_signum: int, _frame: FrameType | None) -> None:
    # SIGTERM / SIGHUP (a closed SSH session): unwind through `finally` so both services stop.
    raise SystemExit(143)


def run(args: argparse.Namespace) -> int:
    import warnings

    from opstower_core.devenv.demo import DemoEnvironment, default_demo_dir
    from opstower_core.devenv.embedded import DEMO_ACCESS_KEY, DEMO_SECRET_KEY

    # pgserver asks platformdirs for a runtime dir; its fallback warning is noise here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

    directory = Path(args.dir).expanduser() if args.dir else default_demo_dir()
    env = DemoEnvironment(directory)

    def say(line: str) -> None:
        try:
            print(f"[demo] {line}", file=sys.stderr, flush=True)
        except OSError:
            pass  # the terminal is gone (closed SSH session): keep going, the services must stop

    previous = {sig: signal.signal(sig, _stop_on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        say(f"Demo directory: {env.directory}")
        env.start(on_status=say)
        env.use_environment()
        if env.seed(on_status=say):
            say("Sample database and backups ready")
        else:
            say("Reusing the demo data from an earlier run")
        settings = env.settings()
        # How to drive the same demo from another shell (loopback-only demo keys, not secrets).
        # One short line each, so nothing wraps at 80 columns.
        hint = [f"export OPSTOWER_CONFIG={env.config_path}",
                f"export AWS_ACCESS_KEY_ID={DEMO_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={DEMO_SECRET_KEY}"]
        say("CLI against this demo while it runs (another shell):")
        for line in hint:
            say(f"  {line}")
        if args.no_console or args.open_console is None:
            _print_backups(settings)
            return 0
        # The console covers the terminal: it shows the same lines itself (Textual hides stderr).
        return args.open_console(settings, bool(getattr(args, "read_only", False)),
                                 "CLI against this demo (another shell):\n" + "\n".join(hint))
    finally:
        try:
            say("Stopping PostgreSQL and S3")
        finally:
            env.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
