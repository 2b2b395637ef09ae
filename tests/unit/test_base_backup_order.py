"""A base backup without an end time (failed or still running) must not break the listing (it raised
"year 0 is out of range" on a UTC host, so the console's B failed on the demo)."""

from __future__ import annotations

from opstower_core.pitr.base import BaseBackup, oldest_first


def _b(backup_id: str, end: str | None) -> BaseBackup:
    return BaseBackup.from_json({"backup_id": backup_id, "end_time_iso": end, "begin_time_iso": end, "status":
                                 "DONE" if end else "FAILED"})


def test_a_backup_without_an_end_time_sorts_first():
    got = oldest_first([_b("20261130T020000", "2026-11-30T02:00:05+00:00"), _b("20261130T030000", None),
                        _b("20261130T010000", "2026-11-30T01:00:04+00:00")])
    assert [b.backup_id for b in got] == ["20261130T030000", "20261130T010000", "20261130T020000"]
