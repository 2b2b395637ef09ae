"""`pitr status`: base backups, the recoverable window, WAL gaps, timelines, the archiver's health."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.pitr.barman import key_root
from opstower_core.pitr.base import BaseBackup, list_base_backups
from opstower_core.storage.s3 import store_for

SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.(gz|bz2|xz|zst|lz4|snappy))?$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history")


@dataclass(frozen=True)
class Segment:
    name: str
    timeline: int
    number: int  # log * 256 + seg (16 MB segments)
    archived_at: datetime
    key: str = ""  # its object key, compression suffix included


def plain_bytes(key: str, data: bytes) -> bytes:
    """An archived file's bytes, decompressed by the suffix barman-cloud gave it (.gz, .bz2, .xz, .zst, .snappy, .lz4).

    Whoever wrote the archive chose the compression (CloudNativePG: `wal.compression`), so
    every one barman-cloud-wal-archive writes is read, with barman's own decompressors.
    """
    import io

    from barman.cloud import ALLOWED_COMPRESSIONS

    compression = next((c for suffix, c in ALLOWED_COMPRESSIONS.items() if key.endswith(suffix)), None)
    if compression is None:
        return data
    from barman.clients.cloud_compression import decompress_to_file

    out = io.BytesIO()
    try:
        decompress_to_file(io.BytesIO(data), out, compression)
    except ImportError as exc:  # snappy and lz4 need an optional package
        raise OpsError(f"Reading {key} needs {compression} support ({exc})", "nothing was changed",
                       f"install barman[{compression}] into opstower's environment") from None
    return out.getvalue()


def read_segment(settings: Settings, segment: Segment) -> bytes:
    """The plain bytes of an archived segment (listed by archived_segments)."""
    return plain_bytes(segment.key, store_for(settings.s3).get_bytes(segment.key))


@dataclass
class PitrStatus:
    backups: list[BaseBackup] = field(default_factory=list)
    segments: int = 0
    timelines: list[int] = field(default_factory=list)
    gaps: list[tuple[str, str]] = field(default_factory=list)  # (last present, next present) per hole
    earliest: datetime | None = None
    latest: datetime | None = None
    latest_segment: str = ""
    # Timeline history (from the archived NNNNNNNN.history files): timeline, parent, switch LSN, reason.
    history: list[dict[str, Any]] = field(default_factory=list)
    archiver: dict[str, Any] | None = None  # pg_stat_archiver, None when the server was not reached
    archiver_error: str = ""
    lag_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backups": [b.as_dict() for b in self.backups], "segments": self.segments, "timelines": self.timelines,
            "gaps": [{"after": a, "before": b} for a, b in self.gaps],
            "earliest": self.earliest.isoformat() if self.earliest else None,
            "latest": self.latest.isoformat() if self.latest else None, "latest_segment": self.latest_segment,
            "history": self.history, "archiver": self.archiver, "archiver_error": self.archiver_error, "lag_seconds": self.lag_seconds,
        }


def segment_name(timeline: int, number: int) -> str:
    return f"{timeline:08X}{number // 256:08X}{number % 256:08X}"


def archived_segments(settings: Settings) -> tuple[list[Segment], list[int]]:
    """Every archived WAL segment (ours or another writer's, barman-cloud layout) and the timelines seen."""
    segments, timelines, _ = _scan(settings)
    return segments, timelines


def _scan(settings: Settings) -> tuple[list[Segment], list[int], dict[int, str]]:
    """Segments, timelines and the keys of the timeline history files."""
    store = store_for(settings.s3)
    history_keys: dict[int, str] = {}
    prefix = key_root(settings) + "wals/"
    segments: list[Segment] = []
    timelines: set[int] = set()
    for obj in store.iter_objects(prefix):
        base = obj.key.rsplit("/", 1)[-1]
        if m := SEGMENT.match(base):
            tli, log, seg = (int(g, 16) for g in m.groups()[:3])
            timelines.add(tli)
            segments.append(Segment(base[:24], tli, log * 256 + seg, datetime.fromtimestamp(obj.last_modified, UTC),
                                    obj.key))
        elif m := HISTORY.match(base):
            timelines.add(int(m.group(1), 16))
            history_keys[int(m.group(1), 16)] = obj.key
    return sorted(segments, key=lambda s: (s.number, s.timeline)), sorted(timelines), history_keys


def read_history(settings: Settings, keys: dict[int, str]) -> list[dict[str, Any]]:
    """The newest timeline's history file, parsed: one entry per switch (parent timeline, switch LSN, reason)."""
    if not keys:
        return []
    newest = max(keys)
    data = plain_bytes(keys[newest], store_for(settings.s3).get_bytes(keys[newest]))
    out = []
    for line in data.decode(errors="replace").splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) >= 2 and parts[0].isdigit() and "/" in parts[1]:
            out.append({"parent": int(parts[0]), "switch_lsn": parts[1], "reason": parts[2] if len(parts) > 2 else "",
                        "timeline": newest})
    # Each line's child is the next line's parent; the last one's child is the newest timeline.
    for i, entry in enumerate(out[:-1]):
        entry["timeline"] = out[i + 1]["parent"]
    return out


def timeline_path(segments: list[Segment], history: list[dict[str, Any]]) -> list[Segment]:
    """The segments recovery along the newest timeline replays: each parent's up to its switch, then the child's."""
    if not history:
        return segments
    bounds = []  # (timeline, first segment number on it)
    start = 0
    for entry in history:
        bounds.append((entry["parent"], start))
        start = _lsn_segment(entry["switch_lsn"])
    bounds.append((history[-1]["timeline"], start))
    path = []
    for i, (tli, first) in enumerate(bounds):
        end = bounds[i + 1][1] if i + 1 < len(bounds) else None
        # The switch segment exists on both timelines; the child's copy is the one replayed.
        path += [s for s in segments if s.timeline == tli and s.number >= first and (end is None or s.number < end)]
    # Without the child's copy of a switch segment, recovery reads the parent's (same WAL up to the switch).
    have = {s.number for s in path}
    for (parent, _), (_, switch) in zip(bounds, bounds[1:], strict=False):
        path += [s for s in segments if s.timeline == parent and s.number == switch and switch not in have]
    return sorted(path, key=lambda s: (s.number, s.timeline))


def _lsn_segment(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return ((int(hi, 16) << 32) | int(lo, 16)) >> 24


def find_gaps(segments: list[Segment], since: int = 0) -> list[tuple[str, str]]:
    """Holes in the segment sequence from `since` on, whatever the timeline (a switch keeps numbering)."""
    numbers = sorted({s.number for s in segments if s.number >= since})
    by_number = {s.number: s for s in segments}
    gaps = []
    for a, b in zip(numbers, numbers[1:], strict=False):
        if b != a + 1:
            gaps.append((by_number[a].name, by_number[b].name))
    return gaps


def archiver_stats(target: Target) -> dict[str, Any]:
    from opstower_core.pg.tools import connect

    with connect(target, "postgres") as conn:
        row = conn.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
            "last_failed_time, stats_reset, pg_walfile_name(pg_current_wal_lsn()), now() FROM pg_stat_archiver"
        ).fetchone()
    keys = ["archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal",
            "last_failed_time", "stats_reset", "current_wal", "now"]
    return dict(zip(keys, row, strict=True))


def pitr_status(settings: Settings, target: Target | None = None) -> PitrStatus:
    """The archive as it is in the bucket, plus the live server's archiver when `target` is reachable."""
    st = PitrStatus(backups=list_base_backups(settings))
    segments, st.timelines, history_keys = _scan(settings)
    st.segments = len(segments)
    st.history = read_history(settings, history_keys)
    # The window follows the newest timeline: an abandoned timeline's later segments are not recoverable.
    segments = timeline_path(segments, st.history)
    done = [b for b in st.backups if b.status == "DONE"]
    if done:
        first = done[0]
        st.earliest = first.end_time  # consistent from the end of the oldest base backup
        since = int(first.begin_wal[8:16], 16) * 256 + int(first.begin_wal[16:24], 16) if first.begin_wal else 0
        st.gaps = find_gaps(segments, since)
    if segments:
        newest = max(segments, key=lambda s: (s.number, s.timeline))
        st.latest_segment = newest.name
        # Everything in the newest archived segment was written before it was archived.
        st.latest = newest.archived_at
        if st.gaps:  # recovery stops at the first hole
            st.latest = next(s.archived_at for s in segments if s.name == st.gaps[0][0])
    if target is not None:
        _add_archiver(st, target)
    return st


def _add_archiver(st: PitrStatus, target: Target) -> None:
    try:
        a = archiver_stats(target)
    except Exception as exc:  # noqa: BLE001 - the server may be the thing that is down
        st.archiver_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return
    failing = bool(a["last_failed_time"] and (not a["last_archived_time"] or a["last_failed_time"] > a["last_archived_time"]))
    a["failing"] = failing
    # Lag: how long the oldest segment not yet archived has waited (0 when all closed segments are archived).
    if a["last_archived_wal"] and a["current_wal"] and a["last_archived_wal"][8:] < _prev_number(a["current_wal"]):
        st.lag_seconds = (a["now"] - a["last_archived_time"]).total_seconds()
    else:
        st.lag_seconds = 0.0
    st.archiver = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in a.items()}


def _prev_number(name: str) -> str:
    n = int(name[8:16], 16) * 256 + int(name[16:24], 16) - 1
    return segment_name(0, n)[8:]
