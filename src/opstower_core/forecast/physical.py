"""Physical recovery as the alternative to a logical restore: predicted from past recoveries, compared.

A recovery to latest (pitr.recover_to) downloads the newest base backup and replays every WAL
byte archived since it began, into a scratch cluster. Its two steps are fitted like the logical
forecast's (model._fit): the download against the base backup's bytes, the replay (server start,
replay, promotion) against the WAL bytes it replayed. The measurements are the drills'
`pitr_latest` phases (the only recoveries recorded today: their steps and times are in the
drill's phase data; the bytes come from the archive's listing of the same base backup).

Honest about what it offers: the recovery gives the whole cluster as a new server. It is faster
than the restore only when the operator can use that server (keep it and point the application
at it) or recover tables from it; copying a database back out of it (restore/from_cluster.py)
is a dump and a restore on top, slower than the restore itself.

The forecast layer does not import pitr (sibling layers): the archive's status is passed in as
anything with PitrStatus's attributes, read lazily, only when a comparison can be made.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from opstower_core.advice import say
from opstower_core.fmt import duration
from opstower_core.forecast.model import MAX_RUNS, RestoreForecast, _fit
from opstower_core.runs.history import StateStore

SEGMENT_BYTES = 16 * 2**20  # PostgreSQL's default WAL segment
# Offered only when clearly faster: each forecast is within ~25% of the actual, and switching the
# application to another server has its own cost the forecast does not see.
MARGIN = 0.8
REACHED = re.compile(r"LSN ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")


class BaseBackupLike(Protocol):
    """What is read of a pitr.BaseBackup."""

    backup_id: str
    begin_lsn: str
    begin_wal: str
    size: int
    status: str


class StatusLike(Protocol):
    """What is read of a pitr.PitrStatus."""

    @property
    def backups(self) -> Sequence[BaseBackupLike]: ...
    @property
    def latest_segment(self) -> str: ...
    @property
    def gaps(self) -> Sequence[tuple[str, str]]: ...


@dataclass(frozen=True)
class RecoveryRun:
    """One measured recovery to latest."""

    finished_at: float
    backup_id: str
    base_bytes: int  # 0: the archive did not record the base backup's size
    wal_bytes: int  # replayed: from the base backup's start to the LSN reached
    fetch_seconds: float
    replay_seconds: float  # server start, WAL replay and promotion
    source: str  # "drill 12"


@dataclass(frozen=True)
class ArchiveNow:
    """What a recovery to latest would have to do now."""

    backup_id: str
    base_bytes: int  # 0 when not recorded
    wal_bytes: int  # from the base backup's start to the end of the last archived segment (or the first gap)


@dataclass
class PhysicalOffer:
    """The physical path beside a logical restore; `sentence` None when it is not offered (`reason` says why)."""

    database: str
    physical_seconds: float | None
    logical_seconds: float | None
    reason: str
    basis: str = ""  # how the physical time was reached
    sentence: str | None = None  # the plan's note when offered (names the command / console key)
    runs: int = 0  # past recoveries it rests on
    archive: ArchiveNow | None = None

    @property
    def offered(self) -> bool:
        return self.sentence is not None

    @property
    def ratio(self) -> float | None:
        """Physical over logical predicted time (0.4: physical would take 40% of the restore's time)."""
        if not self.physical_seconds or not self.logical_seconds:
            return None
        return self.physical_seconds / self.logical_seconds

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["offered"], d["ratio"] = self.offered, self.ratio
        return d


# -- what was measured -----------------------------------------------------------------------

def recorded_recoveries(state: StateStore, server_name: str | None = None, limit: int = MAX_RUNS) -> list[dict[str, Any]]:
    """The successful `pitr_latest` drill phases' measurements (phase data "pitr"), newest first.

    Read from the drill's table in the state file (the forecast layer sits under drill); none
    when no drill ever ran. `server_name`: only recoveries of that archive."""
    try:
        with state.connect() as db:
            rows = db.execute(
                "SELECT drill_id, finished_at, data FROM drill_phases WHERE kind = 'pitr_latest' "
                "AND status IN ('PASS', 'WARN') ORDER BY finished_at DESC LIMIT ?", (limit * 4,)).fetchall()
    except sqlite3.OperationalError:  # no drill table: no drill has run with this state file
        return []
    out = []
    for drill_id, finished_at, data in rows:
        try:
            pitr = json.loads(data).get("pitr") or {}
        except (ValueError, AttributeError):
            continue
        if not pitr.get("backup_id") or (server_name and pitr.get("server_name") not in (None, server_name)):
            continue
        out.append({**pitr, "drill_id": drill_id, "finished_at": finished_at or 0.0})
    return out[:limit]


Sizer = Callable[[str], int]  # a base backup's bytes in the archive, by backup id


def _size(backup: BaseBackupLike, sizer: Sizer | None) -> int:
    # barman-cloud leaves backup.info's size empty for cloud backups: the caller can count the objects.
    if backup.size or sizer is None:
        return int(backup.size or 0)
    try:
        return int(sizer(backup.backup_id))
    except Exception:  # noqa: BLE001 - advice: an unknown size falls back to the downloads' mean
        return 0


def recovery_runs(recorded: Sequence[dict[str, Any]], backups: Sequence[BaseBackupLike],
                  sizer: Sizer | None = None) -> list[RecoveryRun]:
    """The recorded recoveries with their bytes (from the archive's listing of their base backups).

    A recovery whose base backup was pruned since cannot say what it replayed: left out."""
    by_id = {b.backup_id: b for b in backups}
    runs = []
    for rec in recorded:
        backup = by_id.get(str(rec.get("backup_id")))
        steps = {s.get("step"): s for s in rec.get("steps") or [] if isinstance(s, dict)}
        fetch, replay = steps.get("fetch_base"), steps.get("replay")
        m = REACHED.search(str(rec.get("reached") or ""))
        if backup is None or not backup.begin_lsn or m is None or fetch is None or replay is None:
            continue
        wal = max(0, _lsn(m.group(1)) - _lsn(backup.begin_lsn))
        runs.append(RecoveryRun(float(rec.get("finished_at") or 0.0), backup.backup_id, _size(backup, sizer), wal,
                                float(fetch.get("seconds") or 0.0), float(replay.get("seconds") or 0.0),
                                f"drill {rec.get('drill_id')}"))
    return runs


def archive_now(status: StatusLike, sizer: Sizer | None = None) -> ArchiveNow | None:
    """The newest DONE base backup and the WAL a recovery to latest replays after it; None without one."""
    done = [b for b in status.backups if b.status == "DONE" and b.begin_lsn]
    if not done:
        return None
    backup = done[-1]  # the archive lists them oldest first
    last = status.gaps[0][0] if status.gaps else status.latest_segment  # recovery stops at the first hole
    end = (_segment_number(last) + 1) * SEGMENT_BYTES if last else _lsn(backup.begin_lsn)
    return ArchiveNow(backup.backup_id, _size(backup, sizer), max(0, end - _lsn(backup.begin_lsn)))


# -- the prediction and the comparison -------------------------------------------------------

def predict_physical(runs: Sequence[RecoveryRun], archive: ArchiveNow) -> tuple[float, str]:
    """(seconds, basis) of a recovery to latest now, from `runs` (at least one)."""
    runs = list(runs)[:MAX_RUNS]
    sized = [r for r in runs if r.base_bytes > 0]
    if sized and archive.base_bytes > 0:
        a, b = _fit([(float(r.base_bytes), r.fetch_seconds) for r in sized], fixed=False)
        fetch = a + b * archive.base_bytes
        fetch_basis = _rate("download", len(sized), a, b)
    else:  # the archive records no sizes: the downloads' mean (the base backup's size barely changes)
        fetch = sum(r.fetch_seconds for r in runs) / len(runs)
        fetch_basis = f"download: mean of {len(runs)} (sizes not recorded)"
    a, b = _fit([(float(r.wal_bytes), r.replay_seconds) for r in runs], fixed=False)
    replay = a + b * archive.wal_bytes
    basis = (f"{fetch_basis}; {_rate('start + replay', len(runs), a, b)}; "
             f"for base backup {archive.backup_id} + {archive.wal_bytes / 2**20:,.0f} MiB of WAL")
    return round(fetch + replay, 3), basis


def _rate(what: str, n: int, a: float, b: float) -> str:
    # One size cannot separate a start-up from a rate: then the whole time counts as rate (pessimistic
    # for a larger archive, so never an offer made by extrapolating a fixed cost away).
    runs = f"{n} recover{'ies' if n != 1 else 'y'}"
    if b <= 0:
        return f"{what} {a:.1f} s fixed ({runs})"
    rate = f"{1 / b / 2**20:,.1f} MiB/s"
    return f"{what} {a:.1f} s + {rate} ({runs})" if a > 0 else f"{what} at {rate} ({runs})"


def compare(database: str, logical: RestoreForecast | None, runs: Sequence[RecoveryRun],
            archive: ArchiveNow | None) -> PhysicalOffer:
    """Offer the physical path when its predicted time is under MARGIN × the logical forecast."""
    logical_s = logical.seconds if logical is not None else None
    if archive is None:
        return PhysicalOffer(database, None, logical_s, "not offered: no base backup in a WAL archive of this "
                             "database's cluster")
    if not runs:
        return PhysicalOffer(database, None, logical_s, "not offered: no recovery to latest measured yet (a drill "
                             "with a pitr_latest phase measures one)", archive=archive)
    physical, basis = predict_physical(runs, archive)
    offer = PhysicalOffer(database, physical, logical_s, "", basis, runs=len(runs[:MAX_RUNS]), archive=archive)
    if logical_s is None:
        offer.reason = f"not offered: the restore's time is not forecast ({logical.reason if logical else 'no forecast'})"
        return offer
    both = f"~{duration(physical)} against ~{duration(logical_s)} for this restore"
    if physical > MARGIN * logical_s:
        offer.reason = (f"not offered: a recovery to latest would not be clearly faster ({both}; offered under "
                        f"{MARGIN:.0%} of it)")
        return offer
    offer.reason = f"offered: a recovery to latest would take {physical / logical_s:.0%} of this restore's time"
    offer.sentence = (f"physical recovery to latest: {both} - it recovers the whole cluster as a new server, so it "
                      f"is faster only if the application can use that server: recover to latest and "
                      f"{say('keep_cluster')}, then point the application at it (or recover tables from it); "
                      f"copying {database} back out of it would take longer than this restore")
    return offer


def physical_offer(state: StateStore, database: str, logical: RestoreForecast | None,
                   read_status: Callable[[], StatusLike | None], server_name: str | None = None,
                   sizer: Sizer | None = None) -> PhysicalOffer:
    """The offer beside a restore of `database` whose logical forecast is `logical`.

    `read_status` (e.g. `lambda: pitr_status(settings)`, None when [pitr] is not configured for
    this database's server) lists the archive; `sizer` counts a base backup's bytes where the
    listing has no size (barman-cloud's). Both are called only when a recovery was measured and
    the restore is forecast, so a plan without them pays no S3 listing. An unreadable archive is
    a reason, never an error: the offer is advice."""
    logical_s = logical.seconds if logical is not None else None
    recorded = recorded_recoveries(state, server_name)
    if not recorded:
        return PhysicalOffer(database, None, logical_s, "not offered: no recovery to latest measured yet (a drill "
                             "with a pitr_latest phase measures one)")
    if logical_s is None:
        return PhysicalOffer(database, None, None, "not offered: the restore's time is not forecast "
                             f"({logical.reason if logical else 'no forecast'})")
    sizer = functools.cache(sizer) if sizer is not None else None  # the runs' and today's backup are often one
    try:
        status = read_status()
    except Exception as exc:  # noqa: BLE001 - advice: a plan never fails on it
        why = getattr(exc, "sentence", None) or str(exc).strip().splitlines()[0]
        return PhysicalOffer(database, None, logical_s, f"not offered: the WAL archive could not be read ({why})")
    if status is None:
        return compare(database, logical, [], None)
    runs, now = recovery_runs(recorded, status.backups, sizer), archive_now(status, sizer)
    if not runs and now is not None:
        return PhysicalOffer(database, None, logical_s, "not offered: the base backups of the measured recoveries "
                             "are no longer in the archive (the next drill's recovery measures one again)")
    return compare(database, logical, runs, now)


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _segment_number(name: str) -> int:
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)
