"""`opstower schedule --print cron|systemd [--output-dir DIR]`: the unattended jobs, ready to install."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from opstower_core.config import load_settings
from opstower_core.errors import OpsError
from opstower_core.schedule import find_opstower, jobs_for, render_cron, render_systemd

CRONTAB_NAME = "opstower.crontab"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `schedule` sub-command."""
    parser = subparsers.add_parser(
        "schedule",
        help="print cron lines or systemd units for hourly backup, weekly verify, 15-minute health",
        description=(
            "Print (or write) the schedule: hourly `opstower backup`, `opstower verify latest --full-test` "
            "on Sundays at 02:00 and `opstower health` every 15 minutes, with absolute paths of this "
            "installation. Only OPSTOWER_CONFIG is passed to the jobs; no secret is written."
        ),
    )
    parser.add_argument("--print", dest="format", required=True, choices=("cron", "systemd"), help="output format")
    parser.add_argument(
        "--output-dir", type=Path, metavar="DIR",
        help=f"write the files into DIR (systemd: one file per unit; cron: {CRONTAB_NAME}) instead of printing",
    )
    parser.add_argument("--log-dir", metavar="DIR", help="cron: where job logs go (default: <state_dir>/logs)")
    parser.add_argument(
        "--user", metavar="NAME", help="systemd: User= for the services (default: the user running this command)"
    )
    parser.add_argument("--no-base-backup", action="store_true",
                        help="with [pitr]: leave out the daily base backup (01:30)")
    parser.add_argument("--no-heartbeat", action="store_true",
                        help="with [pitr]: leave out the minute heartbeat (measured RPO)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the schedule for this installation and print or write it."""
    settings = load_settings(args.config)  # also validates the config the jobs will use
    config_path = Path(args.config).expanduser().resolve() if args.config else settings.config_path
    config = str(config_path) if config_path else None
    exe = find_opstower()
    # A read-only archive is another system's (e.g. CloudNativePG's): its owner takes the base backups,
    # and a heartbeat would write into a database we only watch.
    pitr = settings.pitr.enabled and not settings.pitr.read_only
    jobs = jobs_for(pitr, base_backup=not args.no_base_backup, heartbeat=not args.no_heartbeat)

    if args.format == "cron":
        log_dir = args.log_dir or str(settings.state_dir / "logs")
        files = {CRONTAB_NAME: render_cron(exe, config, log_dir, jobs)}
    else:
        files = render_systemd(exe, config, user=args.user or getpass.getuser(), jobs=jobs)

    if args.output_dir is None:
        if args.format == "cron":
            sys.stdout.write(files[CRONTAB_NAME])
        else:
            for name, content in files.items():
                sys.stdout.write(f"# ==> {name} <==\n{content}\n")
        return 0

    out: Path = args.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise OpsError(
            f"Cannot write the schedule into {out} ({exc.strerror})",
            "some files may be missing",
            "choose a writable --output-dir",
        ) from None
    for name in files:
        print(f"wrote {out / name}")
    if args.format == "systemd":
        timers = " ".join(name for name in files if name.endswith(".timer"))
        print(f"next: sudo cp {out}/opstower-* /etc/systemd/system/ && sudo systemctl daemon-reload")
        print(f"      sudo systemctl enable --now {timers}")
    else:
        print(f"next: (crontab -l 2>/dev/null; cat {out / CRONTAB_NAME}) | crontab -")
    return 0
