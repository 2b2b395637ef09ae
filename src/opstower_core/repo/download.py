"""The one way an S3 backup comes down to the backup directory: the artifact (sha256
checked, temporary name then rename), its metadata and its globals file beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from opstower_core.advice import say
from opstower_core.artifacts.names import parse_name, read_metadata, write_private
from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.events import Reporter
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import S3Store, store_for


def safe_destination(backup_dir: Path, key: str) -> Path:
    """Where an S3 object may be downloaded: a plain artifact file name directly in the backup dir."""
    base = key.rsplit("/", 1)[-1]
    bad = (not base or base.startswith(".") or "\\" in base or "\x00" in base
           or (parse_name(base) is None and not base.endswith((".meta.json", ".globals.sql"))))
    dest = (backup_dir / base).resolve() if not bad else None
    if bad or dest is None or dest.parent != backup_dir.resolve():
        raise OpsError(f"S3 key {key!r} does not name a backup file", "nothing was downloaded",
                       say("pick_backup"))
    return dest


@dataclass
class Downloaded:
    """A downloaded backup: its local catalog entry (metadata read from the copy beside it)."""

    entry: CatalogEntry
    path: Path
    sidecars: list[str] = field(default_factory=list)  # metadata / globals files written beside it
    missing: list[str] = field(default_factory=list)  # sidecars the bucket does not hold
    source: str = "S3"  # which copy it came from: "S3" (the primary) or "replica"
    fallback: str | None = None  # why the primary was not used, when the replica was


def _copies(settings: Settings, entry: CatalogEntry, source: str | None) -> list[tuple[S3Store, str]]:
    """The copies to try, in order: the primary's, then the replica's ([s3.replica]), or only the one asked for."""
    out: list[tuple[S3Store, str]] = []
    if source in (None, "primary") and entry.s3_key and settings.s3.enabled:
        out.append((store_for(settings.s3), entry.s3_key))
    rep = settings.s3.replica
    if source in (None, "replica") and rep is not None and rep.enabled and entry.name.conventional:
        out.append((store_for(rep), entry.replica_key or entry.name.s3_key(rep.prefix)))
    return out


def download(settings: Settings, entry: CatalogEntry, dest_dir: Path | None = None,
             reporter: Reporter | None = None, step: str = "download", source: str | None = None) -> Downloaded:
    """Download `entry` with its metadata and globals file into `dest_dir` (default: the
    backup directory), from the primary S3 copy or, when that is unreachable or fails its
    checks, from the replica (`source`: "primary" or "replica" picks one; `Downloaded.source`
    says which was used and `fallback` why).

    The artifact is checked against the sha256 recorded with the object and renamed into
    place only when whole; a cancel request through `reporter` stops it and removes the
    partial file. Missing sidecars are reported in `Downloaded.missing`, not raised.
    """
    copies = _copies(settings, entry, source)
    if not copies:
        where = "on the replica" if source == "replica" else "in S3"
        raise OpsError(f"{entry.filename} is not {where}", "nothing was downloaded", say("pick_backup"))
    r = reporter or Reporter()
    directory = dest_dir or settings.backup_dir
    LocalStore(directory).ensure()
    failed: list[str] = []
    for i, (store, key) in enumerate(copies):
        dest = safe_destination(directory, key)
        label = "the replica" if store.settings.role == "replica" else "S3"
        r.log(step, f"Downloading from {label}: s3://{store.bucket}/{key}")
        r.log(step, f"Downloading to: {dest}")
        try:
            store.download(key, dest, progress=lambda d, t: r.progress(step, d, t), cancel=lambda: r.cancel.cancelled)
            break
        except OpsError as exc:
            r.cancel.check("the partial download was removed; nothing was changed")
            if i + 1 == len(copies):
                if failed:
                    raise OpsError(f"{exc.what}; the other copy failed too ({failed[0]})", exc.state, exc.next) from None
                raise
            failed.append(f"{label}: {exc.what}")
            r.log(step, f"The {label} copy could not be used ({exc.what}); trying the replica", "WARN")
    folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    result = Downloaded(entry, dest, source="replica" if store.settings.role == "replica" else "S3",
                        fallback=failed[0] if failed else None)
    if failed:
        r.log(step, f"Downloaded from the replica (s3://{store.bucket}/{key}) because the primary copy failed", "WARN")
    data = _sidecar(store, folder, entry.name.meta_filename, directory, result)
    meta = (_json_object(data) if data is not None else None) or entry.meta
    if meta and meta.get("globals_file"):
        _sidecar(store, folder, str(meta["globals_file"]), directory, result)
    read, problem = read_metadata(dest.with_name(entry.name.meta_filename))
    result.entry = CatalogEntry(entry.name, dest.stat().st_size, local_path=dest, s3_key=entry.s3_key,
                                s3_size=entry.s3_size, meta=read or meta, meta_problem=problem,
                                replica_key=entry.replica_key, replica_size=entry.replica_size)
    return result


def _sidecar(store: S3Store, folder: str, name: str, directory: Path, result: Downloaded) -> bytes | None:
    try:
        data = store.get_bytes(folder + name)
    except Exception:  # noqa: BLE001 - sidecars are optional; verification says what is missing
        result.missing.append(name)
        return None
    write_private(safe_destination(directory, name), data)
    result.sidecars.append(name)
    return data


def _json_object(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
