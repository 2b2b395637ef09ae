"""`opstower list [--json]`: local and S3 backups in one table."""

from __future__ import annotations

import argparse
import json
import shutil
import sys

import humanize

from opstower_core.cli.common import add_json, settings_from
from opstower_core.repo.catalog import WHERE_LEGEND, list_catalog, where_short
from opstower_core.runs.history import StateStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list local and S3 backups with their metadata state")
    p.add_argument("-d", "--database", metavar="NAME", help="only this database")
    p.add_argument("--local-only", action="store_true", help="do not list S3")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    catalog = list_catalog(settings, args.database, include_s3=not args.local_only,
                           state=StateStore(settings.state_dir))
    if args.json:
        for e in catalog.entries:
            print(json.dumps(e.as_dict()))
        if catalog.s3_error:
            print(json.dumps({"kind": "warning", "s3_error": catalog.s3_error}))
        if catalog.replica_error:
            print(json.dumps({"kind": "warning", "replica_error": catalog.replica_error}))
        return 0
    rows = [("NAME", "DATABASE", "AGE", "SIZE", "FORMAT", "WHERE", "VERIFIED", "METADATA")]
    future = []
    for e in catalog.entries:
        ahead = e.future_seconds()
        if ahead:
            future.append(e.filename)
        age = f"FUTURE +{humanize.naturaldelta(ahead)}" if ahead else humanize.naturaldelta(e.age_seconds())
        rows.append((
            e.filename, e.database or "(unknown)", age, humanize.naturalsize(e.size, binary=True),
            e.name.format + (" +age" if e.name.encrypted else ""), e.where, e.verified or "-",
            e.meta_problem or ("ok" if e.meta else "-"),
        ))
    lines = _fit(rows, shutil.get_terminal_size().columns if sys.stdout.isatty() else 0)
    for r in lines:
        print(r)
    if any("L+" in line or "+R" in line for line in lines[1:]):
        print(WHERE_LEGEND)
    if not catalog.entries:
        print(f"No backups in {settings.backup_dir}" + (" or S3" if catalog.s3_enabled else ""))
    if catalog.s3_error:
        print(f"WARN: {catalog.s3_error}; only local backups are shown", file=sys.stderr)
    if catalog.replica_error:
        print(f"WARN: {catalog.replica_error}; replica copies are not shown", file=sys.stderr)
    if future:
        print(f"WARN: {len(future)} backup(s) dated in the future ({', '.join(future[:3])}"
              f"{', …' if len(future) > 3 else ''}): never taken as latest; check the clock of the host that made "
              "them", file=sys.stderr)
    return 0


def _fit(rows: list[tuple[str, ...]], columns: int) -> list[str]:
    """Aligned lines; on a narrow terminal (80 columns over SSH) the DATABASE and FORMAT columns
    go (the name carries both), then METADATA notes are shortened. Piped output is never cut."""
    def lay(table: list[tuple[str, ...]]) -> list[str]:
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]

    lines = lay(rows)
    if not columns or max(map(len, lines)) <= columns:
        return lines
    rows = [r[:1] + r[2:] for r in rows]
    lines = lay(rows)
    if max(map(len, lines)) > columns:
        rows = [r[:3] + r[4:] for r in rows]  # FORMAT too: the name's extension says it
        lines = lay(rows)
    over = max(map(len, lines)) - columns
    if over > 0 and any("+" in r[-3] for r in rows[1:]):
        rows = [r[:-3] + (where_short(r[-3]),) + r[-2:] for r in rows]  # WHERE: local+s3+rep → L+S+R
        lines = lay(rows)
        over = max(map(len, lines)) - columns
    if over > 0:
        keep = max(len("METADATA"), max(len(r[-1]) for r in rows) - over)
        rows = [r[:-1] + (r[-1] if len(r[-1]) <= keep else r[-1][: keep - 1] + "…",) for r in rows]
        lines = lay(rows)
    return lines
