"""`opstower list [--json]`: local and S3 backups in one table."""

from __future__ import annotations

import argparse
import json
import sys

import humanize

from ..catalog import list_catalog
from ..state import StateStore
from .common import add_json, settings_from


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
        return 0
    rows = [("NAME", "DATABASE", "AGE", "SIZE", "FORMAT", "WHERE", "VERIFIED", "METADATA")]
    for e in catalog.entries:
        rows.append((
            e.filename, e.database or "(unknown)", humanize.naturaldelta(e.age_seconds()), humanize.naturalsize(e.size, binary=True),
            e.name.format + (" +age" if e.name.encrypted else ""), e.where, e.verified or "-",
            e.meta_problem or ("ok" if e.meta else "-"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not catalog.entries:
        print(f"No backups in {settings.backup_dir}" + (" or S3" if catalog.s3_enabled else ""))
    if catalog.s3_error:
        print(f"WARN: {catalog.s3_error}; only local backups are shown", file=sys.stderr)
    return 0
