"""Artifact names, formats and metadata sidecars.

Names follow the reference scripts: `<db>_<YYYYMMDD_HHMMSS>.<ext>` with a sidecar
`<db>_<YYYYMMDD_HHMMSS>.meta.json`; the restore wizard's safety copies are
`pre_restore_<db>_<YYYYMMDD_HHMMSS>.<ext>`.

Time: new names are UTC with a trailing Z (`<db>_20261201_031500Z.dump.zst`), so a TZ
change or a DST fall-back between two backups cannot reorder them. Names without the Z
(the reference's, and ours before) are local time and still read; where their metadata
carries an ISO 8601 date with offset, that fixes the instant (`created_at`).

| ext            | format                                  | compression |
|----------------|-----------------------------------------|-------------|
| .dump.zst      | pg_dump custom (-Fc -Z0), zstd stream   | zstd        |
| .sql.gz        | plain SQL (the reference's legacy)      | gzip        |
| .dump / .sql   | uncompressed (read only)                | none        |
| + .age         | any of the above encrypted (age format) |             |
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import zstandard

EXTENSIONS = {
    "dump.zst": ("custom", "zstd"),
    "sql.gz": ("plain", "gzip"),
    "dump": ("custom", "none"),
    "sql": ("plain", "none"),
}
FORMAT_EXT = {"custom": "dump.zst", "plain": "sql.gz"}

_NAME_RE = re.compile(
    r"^(?P<pre>pre_restore_)?(?P<db>.+?)_(?P<ts>\d{8}_\d{6}Z?)\.(?P<ext>dump\.zst|sql\.gz|dump|sql)(?P<age>\.age)?$"
)

# Every field of the reference script's metadata, with the same names.
REFERENCE_FIELDS = (
    "timestamp", "date", "database", "host", "port", "backup_file", "backup_size", "database_size",
    "table_count", "compression", "postgresql_version", "backup_script_version", "retention_days",
)


@dataclass(frozen=True)
class ArtifactName:
    database: str
    timestamp: str  # YYYYMMDD_HHMMSSZ (UTC) or, legacy, YYYYMMDD_HHMMSS (local time)
    ext: str  # one of EXTENSIONS
    encrypted: bool = False
    pre_restore: bool = False
    given: str | None = None  # a file name that does not follow the convention (e.g. "backup.sql.gz")

    @property
    def conventional(self) -> bool:
        return self.given is None

    @property
    def format(self) -> str:
        return EXTENSIONS[self.ext][0]

    @property
    def compression(self) -> str:
        return EXTENSIONS[self.ext][1]

    @property
    def stem(self) -> str:
        if self.given is not None:
            return self.database  # the given name without its extensions
        if not self.database:  # the reference's own pre-restore copies carry no database name
            return f"pre_restore_{self.timestamp}"
        return f"{'pre_restore_' if self.pre_restore else ''}{self.database}_{self.timestamp}"

    @property
    def filename(self) -> str:
        if self.given is not None:
            return self.given
        return f"{self.stem}.{self.ext}{'.age' if self.encrypted else ''}"

    @property
    def meta_filename(self) -> str:
        return f"{self.stem}.meta.json"

    @property
    def globals_filename(self) -> str:
        return f"{self.stem}.globals.sql"

    @property
    def kind(self) -> str:
        return "pre_restore" if self.pre_restore else "backup"

    @property
    def utc(self) -> bool:
        """The name carries its own zone (a trailing Z); legacy names are local time."""
        return self.timestamp.endswith("Z")

    @functools.cached_property
    def created(self) -> datetime:
        """The instant in the name, timezone-aware; parsed once. Legacy names are read as local time.

        Sliced, not strptime'd (a catalog of 10,000 rows sorts on this). Digits that are no
        date (20261399_…) read as 1970: listed, sorted as oldest, never "latest".
        """
        t = self.timestamp
        try:
            naive = datetime(int(t[0:4]), int(t[4:6]), int(t[6:8]), int(t[9:11]), int(t[11:13]), int(t[13:15]))
        except ValueError:
            return datetime(1970, 1, 2, tzinfo=UTC)
        return naive.replace(tzinfo=UTC) if self.utc else naive.astimezone()

    @property
    def day(self) -> str:
        return self.timestamp[:8]

    def s3_key(self, prefix: str) -> str:
        """`<prefix>database/YYYYMMDD/<artifact>`, as in the reference."""
        return f"{prefix}database/{self.day}/{self.filename}"

    def s3_meta_key(self, prefix: str) -> str:
        return f"{prefix}database/{self.day}/{self.meta_filename}"

    @classmethod
    def new(cls, database: str, fmt: str, when: datetime | None = None, encrypted: bool = False,
            pre_restore: bool = False) -> ArtifactName:
        return cls(database, new_stamp(when), FORMAT_EXT[fmt], encrypted, pre_restore)


# A clock a few minutes apart (NTP catching up, another host) is not "the future".
FUTURE_TOLERANCE = timedelta(minutes=5)


def new_stamp(now: datetime | None = None) -> str:
    """`YYYYMMDD_HHMMSSZ` in UTC for a new name; a naive `now` is taken as local time."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y%m%d_%H%M%SZ")


def created_at(name: ArtifactName, meta: dict[str, Any] | None = None) -> datetime:
    """The real instant an artifact was taken.

    A UTC name says it. A legacy (local-time) name is ambiguous across a TZ change or a
    DST fall-back; its metadata's `date` (ISO 8601 with offset, as the reference wrote it)
    settles it when that date names the same wall-clock time as the name.
    """
    if name.utc or not meta:
        return name.created
    date = metadata_date(meta)
    if date is not None and date.strftime("%Y%m%d_%H%M%S") == name.timestamp:
        return date
    return name.created


def metadata_date(meta: dict[str, Any]) -> datetime | None:
    """The metadata's `date` as an aware datetime; None when missing or without an offset."""
    raw = meta.get("date")
    if not isinstance(raw, str):
        return None
    try:
        date = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return date if date.tzinfo is not None else None


_LEGACY_PRE_RE = re.compile(r"^pre_restore_(?P<ts>\d{8}_\d{6}Z?)\.(?P<ext>sql\.gz|sql)$")


def parse_name(filename: str) -> ArtifactName | None:
    """ArtifactName for a file or S3 key's basename; None for anything else.

    The reference's restore script named its safety copies `pre_restore_<ts>.sql.gz`, with no
    database name: those parse as pre-restore artifacts of an unknown database ("").
    """
    base = os.path.basename(filename)
    legacy = _LEGACY_PRE_RE.match(base)
    if legacy:
        return ArtifactName("", legacy["ts"], legacy["ext"], False, True)
    m = _NAME_RE.match(base)
    if not m:
        return None
    return ArtifactName(m["db"], m["ts"], m["ext"], bool(m["age"]), bool(m["pre"]))


_MAGIC = ((b"age-encryption.org/v1", "dump.zst", True), (b"\x1f\x8b", "sql.gz", False),
          (b"\x28\xb5\x2f\xfd", "dump.zst", False), (b"PGDMP", "dump", False))


def name_for_path(path: Path) -> ArtifactName:
    """ArtifactName for any file given by path, e.g. the reference's own `backup.sql.gz`.

    A conventional name parses as usual. Otherwise the format comes from the extensions
    (else the first bytes), the timestamp from the file's mtime, and the name is kept as given.
    """
    parsed = parse_name(path.name)
    if parsed is not None:
        return parsed
    base, encrypted = (path.name[:-4], True) if path.name.endswith(".age") else (path.name, False)
    ext = next((e for e in ("dump.zst", "sql.gz", "dump", "sql") if base.endswith("." + e)), None)
    if ext is None:
        ext = "dump.zst"
        try:
            with open(path, "rb") as fh:
                head = fh.read(32)
            ext, encrypted = next(((e, enc) for magic, e, enc in _MAGIC if head.startswith(magic)), (ext, encrypted))
        except OSError:
            pass  # missing or unreadable: the checks say so
        stem = base
    else:
        stem = base[: -len(ext) - 1]
    try:
        stamp = new_stamp(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    except OSError:
        stamp = new_stamp()
    return ArtifactName(stem or path.name, stamp, ext, encrypted, False, given=path.name)


def read_metadata(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(metadata, problem): problem says why it is missing or unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "metadata file missing"
    except OSError as exc:
        return None, f"metadata unreadable ({exc.strerror})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"metadata is not valid JSON (line {exc.lineno}: {exc.msg})"
    if not isinstance(data, dict):
        return None, "metadata is not a JSON object"
    return data, None


def missing_fields(meta: dict[str, Any]) -> list[str]:
    return [f for f in REFERENCE_FIELDS if f not in meta]


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (temp name, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_metadata(path: Path, meta: dict[str, Any]) -> None:
    write_private(path, (json.dumps(meta, indent=2, default=str) + "\n").encode())


def decompressing_reader(raw: IO[bytes], compression: str) -> IO[bytes]:
    """A stream of the dump's bytes from the compressed stream `raw`."""
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
