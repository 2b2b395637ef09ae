"""`opstower prune [--dry-run] [-d NAME] [--local-only] [--json]`: retention on its own, without a backup."""

from __future__ import annotations

import argparse
import json
import sys

from opstower_core.cli.common import add_json, add_target, settings_from
from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.repo.retention import RetentionReport, apply_retention
from opstower_core.storage.replica import replica_settings, replica_store
from opstower_core.storage.s3 import store_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="apply retention now (local and S3); --dry-run lists each decision and its reason",
        description="Delete backups older than retention_days (BACKUP_RETENTION_DAYS), locally and in S3, but never "
        "the newest keep_last good ones (sha256 re-checked or verified PASS; a failed verification never counts): "
        "if too few can be proven good, nothing past retention is deleted. Held artifacts (a restore reading one) "
        "and pre-restore copies whose restore kept the old database are kept too. Pre-restore copies expire after "
        "pre_restore_retention_days. Leftovers of killed runs (temp files, multipart uploads older than a day) are "
        "removed. `backup` does this after every run; prune does it alone. With [pitr]: base backups in S3 by a "
        "recovery window of pitr.window_days, the newest pitr.keep_last always kept (barman-cloud-backup-delete). "
        "With [s3.replica]: the same rules on the replica's backups, base backups and WAL. With [pitr] read_only "
        "(another system's archive, e.g. CloudNativePG's): its base backups and WAL are left to their owner.",
    )
    add_target(p)
    p.add_argument("--dry-run", action="store_true", help="show each decision with its reason, delete nothing")
    p.add_argument("--local-only", action="store_true", help="leave S3 alone")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = settings.target(args.database)
    s3 = store_for(settings.s3) if settings.s3.enabled and not args.local_only else None
    replica = replica_store(settings) if s3 is not None and replica_settings(settings) is not None else None
    kept, kept_note = _kept_databases(settings, args.database)
    report = apply_retention(settings, target.dbname, dry_run=args.dry_run, s3=s3, kept_databases=kept,
                             replica=replica)
    pitr = pitr_replica = None
    pitr_replica_error: str | None = None
    # Another system's archive (e.g. CloudNativePG's): its owner prunes it, by its own window.
    pitr_skipped = (f"pitr: {'would skip' if args.dry_run else 'skipped'} the base backups and WAL in "
                    f"{_pitr_where(settings)}: another system's archive ([pitr] read_only), its owner's retention "
                    "applies; nothing was changed there") if settings.pitr.enabled and settings.pitr.read_only and s3 else None
    if settings.pitr.enabled and s3 is not None and not settings.pitr.read_only:
        from opstower_core.pitr import prune_base_backups

        pitr = prune_base_backups(settings, dry_run=args.dry_run)
        if replica is not None:
            # The same recovery window on the replica's base backups and WAL; its failure is said after
            # the rest (the primary's pruning stands).
            try:
                pitr_replica = prune_base_backups(settings, dry_run=args.dry_run, copy="replica")
            except OpsError as exc:
                pitr_replica_error = exc.sentence
    if args.json:
        print(json.dumps({"kind": "summary", "dry_run": args.dry_run, "deleted": report.deleted,
                          "kept_for_safety": report.kept_for_safety, "kept_unproven": report.kept_unproven,
                          "kept_held": report.kept_held, "s3_error": report.s3_error,
                          "decisions": [d.as_dict() for d in report.decisions],
                          "leftovers": [item.as_dict() for item in report.leftovers],
                          "kept_databases_note": kept_note, "pitr": pitr.as_dict() if pitr else None,
                          "pitr_replica": pitr_replica.as_dict() if pitr_replica else None,
                          "pitr_replica_error": pitr_replica_error, "pitr_skipped": pitr_skipped}))
    else:
        if args.dry_run:
            _print_decisions(report)
        for line in report.lines:
            print(line)
        for name in report.deleted:
            print(f"{'would delete' if args.dry_run else 'deleted'}: {name}")
        print(report.summary)
        for line in [*(pitr.lines() if pitr else []), *(pitr_replica.lines() if pitr_replica else []),
                     *([pitr_skipped] if pitr_skipped else [])]:
            print(line)
        if kept_note:
            print(f"note: {kept_note}", file=sys.stderr)
    if report.s3_error:
        untouched = "S3 was not touched" if report.s3_error.startswith("S3 ") else "the replica was not pruned"
        raise OpsError(report.s3_error, f"local retention was applied ({len(report.deleted)} listed above); "
                       f"{untouched}", "fix S3 access (opstower doctor), then run prune again")
    if pitr_replica_error:
        print(f"ERROR: {pitr_replica_error}", file=sys.stderr)
        return 1
    return 0


def _pitr_where(settings: Settings) -> str:
    from opstower_core.pitr.barman import key_root

    return f"s3://{settings.s3.bucket}/{key_root(settings)}" + (" (and on the replica)" if replica_settings(settings)
                                                                else "")


def _kept_databases(settings: Settings, target_name: str | None) -> tuple[list[str] | None, str | None]:
    """The `<db>_pre_restore_<ts>` databases on the server; (None, why) when it cannot be asked."""
    try:
        from opstower_core.restore import list_old_databases

        return [name for name, _size in list_old_databases(settings, target_name)], None
    except Exception as exc:  # noqa: BLE001 - the server may be down: the run history decides instead
        reason = getattr(exc, "what", None) or f"{type(exc).__name__}: {exc}"
        return None, (f"could not list the databases kept by restores ({reason}); pre-restore copies are kept "
                      "as the run history says")


def _print_decisions(report: RetentionReport) -> None:
    """One line per artifact and per leftover: where, keep/delete, name, why."""
    rows = [(d.where, d.action, d.artifact, d.reason) for d in report.decisions]
    rows += [(item.where, "remove" if item.remove else "keep", item.what.rsplit("/", 1)[-1] if item.where == "local"
              else item.what, f"leftover: {item.reason}") for item in report.leftovers]
    if not rows:
        print("Nothing to decide: no backups of this database and no leftovers")
        return
    wide = max(len(r[2]) for r in rows)
    for where, action, what, why in rows:
        print(f"{where:<5}  {action:<6}  {what:<{wide}}  {why}")
