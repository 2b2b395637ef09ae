"""The physical forecast's arithmetic: the WAL a recovery to latest replays, and the fits' extrapolation."""

from __future__ import annotations

from dataclasses import dataclass, field

from opstower_core.forecast import ArchiveNow, RecoveryRun, archive_now, compare, recovery_runs
from opstower_core.forecast.model import RestoreForecast

MiB = 2**20


@dataclass
class Backup:
    backup_id: str
    begin_lsn: str
    begin_wal: str = ""
    size: int = 0
    status: str = "DONE"


@dataclass
class Status:
    backups: list = field(default_factory=list)
    latest_segment: str = ""
    gaps: list = field(default_factory=list)


def test_the_wal_to_replay_runs_from_the_base_backups_start_to_the_end_of_the_last_segment_or_the_first_gap():
    old, new = Backup("a", "0/1000028"), Backup("b", "0/3000028", size=40 * MiB)
    st = Status([old, new, Backup("c", "0/9000028", status="FAILED")], "000000010000000000000007")
    now = archive_now(st)
    assert now == ArchiveNow("b", 40 * MiB, 8 * 16 * MiB - 0x3000028)
    st.gaps = [("000000010000000000000004", "000000010000000000000006")]
    assert archive_now(st).wal_bytes == 5 * 16 * MiB - 0x3000028
    assert archive_now(Status([Backup("x", "0/1", status="FAILED")])) is None
    assert archive_now(st, lambda _id: 1 / 0).base_bytes == 40 * MiB  # a recorded size is not counted again
    assert archive_now(Status([old], "000000010000000000000002"), lambda _id: 7 * MiB).base_bytes == 7 * MiB


def test_a_recorded_recovery_counts_what_it_replayed_and_one_whose_backup_is_gone_is_left_out():
    rec = {"backup_id": "b", "reached": "LSN 0/5000100 on timeline 2", "finished_at": 5.0, "drill_id": 3,
           "steps": [{"step": "fetch_base", "seconds": 4.0}, {"step": "replay", "seconds": 10.0}]}
    runs = recovery_runs([rec, {**rec, "backup_id": "pruned"}], [Backup("b", "0/3000028")], lambda _id: 100 * MiB)
    assert runs == [RecoveryRun(5.0, "b", 100 * MiB, 0x5000100 - 0x3000028, 4.0, 10.0, "drill 3")]


def _logical(seconds: float | None) -> RestoreForecast:
    return RestoreForecast("shop", "swap", 10, 5, seconds, 240, reason="from 2 restores")


def test_two_sizes_separate_the_start_up_from_the_rate_and_the_offer_needs_a_clear_margin():
    runs = [RecoveryRun(1, "a", 100 * MiB, 64 * MiB, 2.0, 6.0, "drill 1"),
            RecoveryRun(2, "b", 300 * MiB, 192 * MiB, 4.0, 8.0, "drill 2")]
    now = ArchiveNow("c", 1000 * MiB, 320 * MiB)
    # download 1 s + 100 MiB/s → 11 s; replay 5 s + 64 MiB/s → 10 s
    offer = compare("shop", _logical(26.0), runs, now)
    assert offer.physical_seconds == 21.0 and not offer.offered  # 21 > 0.8 × 26
    assert "download 1.0 s + 100.0 MiB/s (2 recoveries)" in offer.basis
    assert "start + replay 5.0 s + 64.0 MiB/s" in offer.basis
    offer = compare("shop", _logical(27.0), runs, now)
    assert offer.offered and offer.reason == "offered: a recovery to latest would take 78% of this restore's time"
    assert not compare("shop", _logical(None), runs, now).offered
