"""Retention, local and S3: older than retention_days go, but never the newest N good ones.

A week of failing backups must not let retention delete every good backup, so the newest
`keep_last` good artifacts are kept whatever their age. Pre-restore safety copies have
their own, shorter retention (the reference's recommendation: 7 days).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opstower_core.artifacts.names import ArtifactName, parse_name, read_metadata
from opstower_core.config import Settings
from opstower_core.storage.local import LocalArtifact, LocalStore
from opstower_core.storage.s3 import S3Store


@dataclass
class RetentionReport:
    deleted: list[str] = field(default_factory=list)
    kept_for_safety: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    dry_run: bool = False
    s3_error: str | None = None  # S3 retention could not run; local retention still did

    @property
    def summary(self) -> str:
        verb = "Would delete" if self.dry_run else "Deleted"
        text = f"{verb} {len(self.deleted)} old backup(s)"
        if self.s3_error:
            text += f"; S3 left untouched ({self.s3_error})"
        if self.kept_for_safety:
            text += f"; kept {len(self.kept_for_safety)} past retention as the newest good backups"
        return text


def _is_good_local(store: LocalStore, art: LocalArtifact) -> bool:
    meta, problem = read_metadata(store.directory / art.name.meta_filename)
    if problem or meta is None:
        return False
    size = meta.get("size_bytes", meta.get("backup_size"))
    try:
        return int(size) == art.size
    except (TypeError, ValueError):
        return False


def _select(names: list[ArtifactName], good: set[str], now: datetime, days: int, keep_last: int
            ) -> tuple[list[ArtifactName], list[ArtifactName]]:
    """(to delete, kept only because they are among the newest good)."""
    cutoff = now - timedelta(days=days)
    newest_first = sorted(names, key=lambda n: n.timestamp, reverse=True)
    protected = [n for n in newest_first if n.filename in good][:keep_last]
    old = [n for n in newest_first if n.created < cutoff]
    return [n for n in old if n not in protected], [n for n in old if n in protected]


def apply_retention(settings: Settings, database: str, dry_run: bool = False, s3: S3Store | None = None,
                    now: datetime | None = None) -> RetentionReport:
    """Delete expired artifacts of `database` locally (and in S3 when `s3` is given)."""
    now = now or datetime.now().astimezone()
    report = RetentionReport(dry_run=dry_run)
    store = LocalStore(settings.backup_dir)
    arts = store.artifacts(database)
    if database:  # the reference's pre-restore copies name no database: every target's retention covers them
        arts += [a for a in store.artifacts() if a.name.pre_restore and not a.name.database]
    for pre in (False, True):
        group = [a for a in arts if a.name.pre_restore == pre]
        good = {a.name.filename for a in group if _is_good_local(store, a)}
        days = settings.pre_restore_retention_days if pre else settings.retention_days
        delete, kept = _select([a.name for a in group], good, now, days, 1 if pre else settings.keep_last)
        report.kept_for_safety += [n.filename for n in kept]
        for name in delete:
            if not dry_run:
                store.delete(name)
            report.deleted.append(name.filename)
    local_count = len(report.deleted)
    if local_count:
        report.lines.append(f"{'Would delete' if dry_run else 'Deleted'} {local_count} old local backup(s)")
    if s3 is not None:
        try:
            _s3_retention(settings, database, s3, now, dry_run, report)
        except Exception as exc:  # noqa: BLE001 - an S3 outage must not hide what was done locally
            from opstower_core.storage.s3 import s3_error_text

            report.s3_error = f"S3 retention failed: {s3_error_text(exc)}"
            report.lines.append(f"{report.s3_error}; local retention was applied, S3 was not")
    for fn in report.kept_for_safety:
        report.lines.append(f"Kept {fn} past retention: it is one of the newest good backups")
    return report


def _s3_retention(settings: Settings, database: str, s3: S3Store, now: datetime, dry_run: bool,
                  report: RetentionReport) -> None:
    keys: dict[str, str] = {}
    names: list[ArtifactName] = []
    metas: set[str] = set()
    for obj in s3.iter_objects():
        base = obj.key.rsplit("/", 1)[-1]
        if base.endswith(".meta.json"):
            metas.add(obj.key.rsplit("/", 1)[0] + "/" + base)
            continue
        name = parse_name(base)
        if name and name.database == database and not name.pre_restore:
            names.append(name)
            keys[name.filename] = obj.key
    # Good in S3 = its metadata object sits beside it (the upload writes it last).
    good = {n.filename for n in names if keys[n.filename].rsplit("/", 1)[0] + "/" + n.meta_filename in metas}
    delete, kept = _select(names, good, now, settings.retention_days, settings.keep_last)
    report.kept_for_safety += [f"s3:{n.filename}" for n in kept]
    for name in delete:
        folder = keys[name.filename].rsplit("/", 1)[0]
        if not dry_run:
            for fn in (name.filename, name.meta_filename, name.globals_filename):
                s3.delete(f"{folder}/{fn}")
        report.deleted.append(f"s3:{keys[name.filename]}")
        report.lines.append(f"{'Would delete' if dry_run else 'Deleted'} old S3 backup: {keys[name.filename]}")
