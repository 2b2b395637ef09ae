"""One list of backups merged from the local directory and S3.

A missing or broken metadata file shows as such and never breaks the list; an unreachable
bucket leaves the local rows and says why. Rows are ordered by the real instant each backup
was taken (UTC names, or a legacy name's metadata date with its offset), never by the name's
string. A backup dated in the future (a wrong clock, a hand-made name) is listed and
flagged, but is never "latest": it must not pass for a fresh backup.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opstower_core.advice import say
from opstower_core.artifacts.names import (
    FUTURE_TOLERANCE,
    ArtifactName,
    created_at,
    metadata_date,
    name_for_path,
    parse_name,
    read_metadata,
)
from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.runs.history import StateStore
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import store_for

# A copy on the replica shows its places joined by "+"; narrow tables (80 columns, the console)
# show them as letters: L local, S primary S3, R replica.
_WHERE_LETTERS = {"local": "L", "s3": "S", "rep": "R"}
WHERE_LEGEND = "WHERE: L local, S S3 (primary), R replica"


def where_short(where: str) -> str:
    """"local+s3+rep" → "L+S+R" (5 columns, like "local"); the values without a replica unchanged."""
    parts = where.split("+")
    return "+".join(_WHERE_LETTERS[p] for p in parts) if "rep" in parts else where


def where_words(where: str) -> str:
    """Every word a filter should match for a WHERE value: a copy in both places is in S3 and local too,
    one on the replica matches "rep" and "replica"."""
    parts = ["local", "s3"] if where == "both" else where.split("+")
    words = parts + (["replica"] if "rep" in parts else []) + (["both"] if {"local", "s3"} <= set(parts) else [])
    return " ".join(dict.fromkeys(words))


@dataclass
class CatalogEntry:
    name: ArtifactName
    size: int
    local_path: Path | None = None
    s3_key: str | None = None
    s3_size: int | None = None
    meta: dict[str, Any] | None = None
    meta_problem: str | None = None
    verified: str | None = None  # last verification status word, if any
    replica_key: str | None = None  # the copy on [s3.replica], when one is configured and holds it
    replica_size: int | None = None

    @property
    def filename(self) -> str:
        return self.name.filename

    @property
    def database(self) -> str:
        return self.name.database

    @functools.cached_property
    def created(self) -> datetime:
        """When the backup was taken: the name's instant, or a legacy name's metadata date with offset."""
        return created_at(self.name, self.meta)

    def future_seconds(self, now: datetime | None = None) -> float:
        """How far ahead of `now` its name or metadata dates it (0 if not beyond the tolerance)."""
        now = now or datetime.now(UTC)
        dates = [self.created]
        if self.meta and (date := metadata_date(self.meta)) is not None:
            dates.append(date)
        ahead = max((d - now).total_seconds() for d in dates)
        return ahead if ahead > FUTURE_TOLERANCE.total_seconds() else 0.0

    def is_future(self, now: datetime | None = None) -> bool:
        return self.future_seconds(now) > 0

    @property
    def where(self) -> str:
        """local / s3 / both, as without a replica; with a replica copy: its places joined by '+'
        (local+s3+rep, s3+rep, local+rep, rep)."""
        if self.replica_key:
            return "+".join(w for w, here in (("local", self.local_path), ("s3", self.s3_key), ("rep", True)) if here)
        if self.local_path and self.s3_key:
            return "both"
        return "local" if self.local_path else "s3"

    def age_seconds(self, now: datetime | None = None) -> float:
        now = now or datetime.now().astimezone()
        return (now - self.created).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.filename, "database": self.database, "timestamp": self.name.timestamp,
            "created": self.created.isoformat(), "age_seconds": round(self.age_seconds()), "size_bytes": self.size,
            "format": self.name.format, "compression": self.name.compression, "encrypted": self.name.encrypted,
            "kind": self.name.kind, "where": self.where, "local_path": str(self.local_path) if self.local_path else None,
            "s3_key": self.s3_key, "replica_key": self.replica_key, "metadata": self.meta_problem or ("ok" if self.meta else "-"), "verified": self.verified,
            "future_dated": self.is_future(),
        }


@dataclass
class Catalog:
    entries: list[CatalogEntry] = field(default_factory=list)
    s3_error: str | None = None
    s3_enabled: bool = False
    replica_error: str | None = None  # the replica could not be listed
    replica_enabled: bool = False

    def latest(self, database: str, now: datetime | None = None) -> CatalogEntry | None:
        """The newest backup (not a pre-restore copy) of `database` that is not dated in the future."""
        return next((e for e in self.entries if e.database == database and not e.name.pre_restore
                     and not e.is_future(now)), None)


def list_catalog(settings: Settings, database: str | None = None, include_s3: bool = True,
                 state: StateStore | None = None) -> Catalog:
    """Merged catalog, newest first."""
    by_name: dict[str, CatalogEntry] = {}
    local = LocalStore(settings.backup_dir)
    for art in local.artifacts(database):
        meta, problem = read_metadata(local.directory / art.name.meta_filename)
        if meta is not None and str(meta.get("size_bytes", meta.get("backup_size", art.size))) != str(art.size):
            problem = "size differs from its metadata"
        by_name[art.name.filename] = CatalogEntry(art.name, art.size, local_path=art.path, meta=meta,
                                                  meta_problem=problem)
    catalog = Catalog(s3_enabled=settings.s3.enabled)
    if include_s3 and settings.s3.enabled:
        try:
            store = store_for(settings.s3)
            for obj in store.iter_objects():
                name = parse_name(obj.key.rsplit("/", 1)[-1])
                if name is None or (database and name.database != database):
                    continue
                entry = by_name.get(name.filename)
                if entry is None:
                    entry = by_name[name.filename] = CatalogEntry(name, obj.size, meta_problem="metadata in S3 (not fetched)")
                entry.s3_key = obj.key
                entry.s3_size = obj.size
        except OpsError as exc:
            catalog.s3_error = exc.what
        except Exception as exc:  # noqa: BLE001 - the list must not break on S3
            from opstower_core.storage.s3 import s3_error_text

            catalog.s3_error = f"S3 listing failed ({s3_error_text(exc)})"
    if include_s3 and settings.s3.replica is not None and settings.s3.replica.enabled:
        catalog.replica_enabled = True
        catalog.replica_error = _list_replica(settings, database, by_name)
    if state is not None:
        verdicts = state.verdicts()
        for entry in by_name.values():
            run = verdicts.get(entry.filename)
            entry.verified = run.status if run else None
    catalog.entries = sorted(by_name.values(), key=lambda e: (e.created, e.filename), reverse=True)
    return catalog


def _list_replica(settings: Settings, database: str | None, by_name: dict[str, CatalogEntry]) -> str | None:
    """Mark the entries the replica holds (adding those only it holds); the error text, if any."""
    assert settings.s3.replica is not None
    try:
        for obj in store_for(settings.s3.replica).iter_objects():
            name = parse_name(obj.key.rsplit("/", 1)[-1])
            if name is None or (database and name.database != database):
                continue
            entry = by_name.get(name.filename)
            if entry is None:
                entry = by_name[name.filename] = CatalogEntry(name, obj.size,
                                                              meta_problem="metadata on the replica (not fetched)")
            entry.replica_key = obj.key
            entry.replica_size = obj.size
    except OpsError as exc:
        return exc.what
    except Exception as exc:  # noqa: BLE001 - the list must not break on the replica
        from opstower_core.storage.s3 import s3_error_text

        return f"Replica listing failed ({s3_error_text(exc)})"
    return None


def fetch_s3_metadata(settings: Settings, entry: CatalogEntry) -> None:
    """Load the metadata object of an S3-only (or replica-only) entry (one GET, done on demand)."""
    if entry.meta is not None or not (entry.s3_key or entry.replica_key):
        return
    on_replica = not entry.s3_key and settings.s3.replica is not None
    ref = entry.s3_key or entry.replica_key or ""
    key = ref.rsplit("/", 1)[0] + "/" + entry.name.meta_filename
    try:
        store = store_for(settings.s3.replica if on_replica and settings.s3.replica else settings.s3)
        data = json.loads(store.get_bytes(key))
        entry.meta, entry.meta_problem = (data, None) if isinstance(data, dict) else (None, "metadata is not a JSON object")
    except json.JSONDecodeError:
        entry.meta_problem = "metadata in S3 is not valid JSON"
    except Exception:  # noqa: BLE001
        entry.meta_problem = "metadata object missing in S3"


def _is_s3_ref(settings: Settings, ref: str) -> bool:
    return ref.startswith(("s3://", "database/")) or bool(settings.s3.prefix) and ref.startswith(settings.s3.prefix)


def _path_entry(path: Path) -> CatalogEntry:
    """An entry for a file given by path; the checks say what is wrong with it, if anything."""
    real = path.resolve() if path.is_symlink() else path
    name = name_for_path(real)
    entry = CatalogEntry(name, 0, local_path=real)
    try:
        entry.size = real.stat().st_size
    except OSError:
        pass
    entry.meta, entry.meta_problem = read_metadata(real.with_name(name.meta_filename))
    return entry


def resolve(settings: Settings, ref: str, state: StateStore | None = None) -> CatalogEntry:
    """An artifact from a local path, a catalog name, an S3 key, or "latest"."""
    path = Path(ref).expanduser()
    if ref != "latest" and not _is_s3_ref(settings, ref) and (path.exists() or path.is_symlink() or "/" in ref):
        return _path_entry(path)
    catalog = list_catalog(settings, state=state)
    key = ref.removeprefix(f"s3://{settings.s3.bucket}/")
    if ref == "latest":
        db = settings.target().dbname
        latest = catalog.latest(db)
        if latest is not None:
            return latest
    for e in catalog.entries:
        if ref != "latest" and (ref in (e.filename, e.name.stem) or key == e.s3_key):
            return e
    hint = f" ({catalog.s3_error})" if catalog.s3_error else ""
    if ref == "latest":
        future = [e.filename for e in catalog.entries if e.database == db and not e.name.pre_restore]
        if future:  # all of them dated in the future
            hint += f" ({len(future)} dated in the future not counted, e.g. {future[0]}: name it to use it)"
        raise OpsError(f"No backup of {db} in {settings.backup_dir}"
                       + (" or S3" if settings.s3.enabled else "") + hint,
                       "nothing was changed", say("take_backup"))
    raise OpsError(f"No backup named {ref!r} in the catalog{hint}", "nothing was changed",
                   say("see_backups"))
