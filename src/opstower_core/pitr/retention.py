"""Base-backup retention: a recovery window of `pitr.window_days`, the newest `pitr.keep_last` always kept.

barman-cloud-backup-delete applies it ("RECOVERY WINDOW OF N DAYS" with --minimum-redundancy):
its policy keeps the newest backup older than the window too (the one recovery to the window's
first moment starts from), and it removes the WAL no remaining backup needs. We only list
before and after, so the report names what went (or, with --dry-run, what would go).

The replica ([s3.replica]) is pruned by the same rules, by the same command pointed at it
(its endpoint, bucket, prefix and credentials): each store keeps its own newest keep_last
base backups, so neither ever loses its last one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.pitr.barman import (
    client_argv,
    cloud_env,
    cloud_options,
    destination_url,
    key_root,
    last_error,
    run_client,
)
from opstower_core.pitr.base import BaseBackup
from opstower_core.storage.replica import as_primary

# A dry run prints the objects it would delete: "…/<server>/base/<backup_id>/…".
_BACKUP_IN_KEY = re.compile(r"/base/([0-9]{8}T[0-9]{6})/")
_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@dataclass
class PitrPruneReport:
    policy: str
    dry_run: bool
    deleted: list[str] = field(default_factory=list)  # backup ids deleted (or that would be)
    kept: list[str] = field(default_factory=list)
    copy: str = "primary"  # or "replica"

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        on = " on the replica" if self.copy == "replica" else ""
        out = [f"pitr: base backups{on} by {self.policy}: {len(self.kept)} kept, {len(self.deleted)} {verb}"]
        out += [f"pitr {verb}{on}: base backup {b} (and the WAL only it needed)" for b in self.deleted]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"copy": self.copy, "policy": self.policy, "dry_run": self.dry_run, "deleted": self.deleted,
                "kept": self.kept}


def policy(settings: Settings) -> str:
    return f"RECOVERY WINDOW OF {settings.pitr.window_days} DAYS"


def prune_base_backups(settings: Settings, dry_run: bool = False, copy: str = "primary") -> PitrPruneReport:
    """Apply the recovery window to the base backups (and their WAL) in the bucket, or with
    copy="replica" in the replica's ([s3.replica]). Raises OpsError when the store refuses, and
    before anything when the archive is another system's ([pitr] read_only): its owner's retention applies."""
    if settings.pitr.read_only:
        raise OpsError(f"Base backups in s3://{settings.s3.bucket}/{key_root(settings)} are another system's "
                       "archive ([pitr] read_only): not pruned", "nothing was changed",
                       "prune them with the system that owns them (e.g. CloudNativePG's retentionPolicy)")
    runner = _Runner(settings, copy)
    where = "" if copy == "primary" else " on the replica"
    before = [b.backup_id for b in runner.list()]
    report = PitrPruneReport(f"{policy(settings)}, keep_last {settings.pitr.keep_last}", dry_run, copy=copy)
    target = runner.settings
    args = [*cloud_options(target), "--retention-policy", policy(settings),
            "--minimum-redundancy", str(settings.pitr.keep_last), *(["--dry-run"] if dry_run else []),
            destination_url(target), settings.pitr.server_name]
    proc = runner.run("cloud_backup_delete", args, timeout=3600)
    if proc.returncode != 0:
        raise OpsError(f"Pruning base backups{where} failed ({last_error(proc)})",
                       "backups deleted before the failure are gone; the rest are listed by `opstower pitr status`",
                       "fix the cause (opstower doctor) and run prune again")
    if dry_run:
        named = set(_BACKUP_IN_KEY.findall(proc.stdout + proc.stderr))
        report.deleted = [b for b in before if b in named]
        report.kept = [b for b in before if b not in named]
    else:
        after = {b.backup_id for b in runner.list()}
        report.deleted = [b for b in before if b not in after]
        report.kept = [b for b in before if b in after]
    return report


class _Runner:
    """barman-cloud pointed at the primary (its usual environment) or at the replica (its endpoint,
    bucket, prefix and credentials: a profile, the named variables, or the default chain)."""

    def __init__(self, settings: Settings, copy: str) -> None:
        if copy not in ("primary", "replica"):
            raise ValueError(copy)
        self.copy = copy
        self.settings = settings if copy == "primary" else as_primary(settings)
        self.env = None if copy == "primary" else replica_env(settings)

    def run(self, module: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        if self.env is None:
            return run_client(self.settings, module, args, timeout=timeout)
        return subprocess.run(client_argv(module, args), capture_output=True, text=True, env=self.env,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def list(self) -> list[BaseBackup]:
        where = "" if self.copy == "primary" else " on the replica"
        proc = self.run("cloud_backup_list", [*cloud_options(self.settings), "--format", "json",
                                              destination_url(self.settings), self.settings.pitr.server_name], 300)
        if proc.returncode != 0:
            raise OpsError(f"Listing base backups{where} failed ({last_error(proc)})", "nothing was deleted",
                           "check the bucket, endpoint and credentials (opstower doctor)")
        backups = [BaseBackup.from_json(b) for b in json.loads(proc.stdout or "{}").get("backups_list", [])]
        return sorted(backups, key=lambda b: (b.end_time.timestamp() if b.end_time else 0.0, b.backup_id))


def replica_env(settings: Settings) -> dict[str, str]:
    """The environment of a barman-cloud run against the replica: its region, its credentials.

    Never the primary's endpoint variables (barman-cloud gets --endpoint-url). Secrets travel in
    the child's environment only, never in argv."""
    rep = as_primary(settings).s3
    env = cloud_env(as_primary(settings))
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(var, None)
    if rep.region:
        env["AWS_DEFAULT_REGION"] = rep.region
    if rep.profile:
        for var in _CREDENTIAL_VARS:
            env.pop(var, None)
        if settings.pitr.credentials_file and env.get("AWS_SHARED_CREDENTIALS_FILE") == str(settings.pitr.credentials_file):
            env.pop("AWS_SHARED_CREDENTIALS_FILE")  # the primary's file; the profile lives in the user's own
        env["AWS_PROFILE"] = rep.profile
    elif rep.access_key_id_env and rep.secret_access_key_env:
        key_id, secret = os.environ.get(rep.access_key_id_env), os.environ.get(rep.secret_access_key_env)
        if not key_id or not secret:
            raise OpsError(f"The replica credentials are not set: {rep.access_key_id_env} or "
                           f"{rep.secret_access_key_env} empty or missing", "nothing was deleted on the replica",
                           "export them in the environment that runs opstower")
        for var in _CREDENTIAL_VARS:
            env.pop(var, None)
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = key_id, secret
    return env
