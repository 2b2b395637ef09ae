"""Base-backup retention: a recovery window of `pitr.window_days`, the newest `pitr.keep_last` always kept.

barman-cloud-backup-delete applies it ("RECOVERY WINDOW OF N DAYS" with --minimum-redundancy):
its policy keeps the newest backup older than the window too (the one recovery to the window's
first moment starts from), and it removes the WAL no remaining backup needs. We only list
before and after, so the report names what went (or, with --dry-run, what would go).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.pitr.barman import cloud_options, destination_url, last_error, run_client
from opstower_core.pitr.base import list_base_backups

# A dry run prints the objects it would delete: "…/<server>/base/<backup_id>/…".
_BACKUP_IN_KEY = re.compile(r"/base/([0-9]{8}T[0-9]{6})/")


@dataclass
class PitrPruneReport:
    policy: str
    dry_run: bool
    deleted: list[str] = field(default_factory=list)  # backup ids deleted (or that would be)
    kept: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        out = [f"pitr: base backups by {self.policy}: {len(self.kept)} kept, {len(self.deleted)} {verb}"]
        out += [f"pitr {verb}: base backup {b} (and the WAL only it needed)" for b in self.deleted]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "dry_run": self.dry_run, "deleted": self.deleted, "kept": self.kept}


def policy(settings: Settings) -> str:
    return f"RECOVERY WINDOW OF {settings.pitr.window_days} DAYS"


def prune_base_backups(settings: Settings, dry_run: bool = False) -> PitrPruneReport:
    """Apply the recovery window to the base backups (and their WAL) in the bucket."""
    before = [b.backup_id for b in list_base_backups(settings)]
    report = PitrPruneReport(f"{policy(settings)}, keep_last {settings.pitr.keep_last}", dry_run)
    args = [*cloud_options(settings), "--retention-policy", policy(settings),
            "--minimum-redundancy", str(settings.pitr.keep_last), *(["--dry-run"] if dry_run else []),
            destination_url(settings), settings.pitr.server_name]
    proc = run_client(settings, "cloud_backup_delete", args, timeout=3600)
    if proc.returncode != 0:
        raise OpsError(f"Pruning base backups failed ({last_error(proc)})",
                       "backups deleted before the failure are gone; the rest are listed by `opstower pitr status`",
                       "fix the cause (opstower doctor) and run prune again")
    if dry_run:
        named = set(_BACKUP_IN_KEY.findall(proc.stdout + proc.stderr))
        report.deleted = [b for b in before if b in named]
        report.kept = [b for b in before if b not in named]
    else:
        after = {b.backup_id for b in list_base_backups(settings)}
        report.deleted = [b for b in before if b not in after]
        report.kept = [b for b in before if b in after]
    return report
