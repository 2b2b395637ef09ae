"""Time in artifact names: UTC with a Z, legacy local names still read, order by the real instant."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opstower_core.artifacts.names import ArtifactName, created_at, new_stamp, parse_name
from opstower_core.config import Settings, Target
from opstower_core.repo.catalog import list_catalog, resolve


@pytest.fixture
def tz(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Switch the process's time zone (TZ + tzset), put back afterwards."""

    def switch(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield switch
    monkeypatch.undo()
    time.tzset()


def settings_for(tmp_path: Path, db: str = "app") -> Settings:
    return Settings(backup_dir=tmp_path / "b", state_dir=tmp_path / "s", min_free_gb=0.0,
                    targets={db: Target(db, db)}, default_target=db)


def write(directory: Path, name: str, meta: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(b"x")
    if meta is not None:
        n = parse_name(name)
        assert n is not None
        (directory / n.meta_filename).write_text(json.dumps({"size_bytes": 1, **meta}))


def test_new_stamp_is_utc_with_z_whatever_the_zone(tz) -> None:
    instant = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    stamps = set()
    for zone in ("Asia/Tokyo", "America/New_York", "UTC"):
        tz(zone)
        stamps.add(new_stamp(instant))
        stamps.add(new_stamp(instant.astimezone()))  # the same instant as a local aware time
        name = parse_name(f"app_{new_stamp(instant)}.dump.zst")
        assert name is not None and name.utc and name.created == instant  # read back the same in every zone
    assert stamps == {"20261101_053000Z"}
    assert ArtifactName.new("app", "custom", when=instant).filename == "app_20261101_053000Z.dump.zst"
    assert new_stamp().endswith("Z") and abs(parse_name(f"a_{new_stamp()}.sql.gz").created - datetime.now(UTC)) < timedelta(seconds=2)


def test_legacy_local_names_still_parse_and_sit_in_the_day_they_name() -> None:
    legacy = parse_name("opstower_20260207_120000.sql.gz")
    assert legacy is not None and not legacy.utc and legacy.day == "20260207"
    assert legacy.created == datetime(2026, 2, 7, 12, 0).astimezone()
    pre = parse_name("pre_restore_20260207_143000Z.sql.gz")
    assert pre is not None and pre.pre_restore and pre.database == "" and pre.utc
    # The S3 date folder follows the UTC date: 23:30 UTC on 1 Dec is 2 Dec in Tokyo, still 20261201/.
    late = ArtifactName.new("app", "custom", when=datetime(2026, 12, 1, 23, 30, tzinfo=UTC))
    assert late.s3_key("p/") == "p/database/20261201/app_20261201_233000Z.dump.zst"


def test_a_time_zone_change_between_two_backups_cannot_make_latest_the_older(tmp_path: Path, tz) -> None:
    settings = settings_for(tmp_path)
    tz("Asia/Tokyo")  # the first backup is taken on a host set to Tokyo (UTC+9)
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    write(settings.backup_dir, f"app_{new_stamp(first.astimezone())}.dump.zst")
    legacy_first = first.astimezone().strftime("%Y%m%d_%H%M%S")
    tz("America/New_York")  # the host moves to New York (UTC-5); an hour later, the second
    second = first + timedelta(hours=1)
    write(settings.backup_dir, f"app_{new_stamp(second.astimezone())}.dump.zst")
    legacy_second = second.astimezone().strftime("%Y%m%d_%H%M%S")
    assert legacy_first > legacy_second  # local-time names would have made the older one "latest"
    for zone in ("America/New_York", "Asia/Tokyo", "UTC"):
        tz(zone)
        assert resolve(settings, "latest").created == second
        assert [e.created for e in list_catalog(settings, include_s3=False).entries] == [second, first]


def test_dst_fall_back_ordered_by_the_metadata_offset(tmp_path: Path, tz) -> None:
    """01:30 EDT and then 01:10 EST (40 minutes later): the legacy names alone sort them backwards."""
    tz("America/New_York")
    settings = settings_for(tmp_path)
    write(settings.backup_dir, "app_20261101_013000.sql.gz", {"date": "2026-11-01T01:30:00-04:00"})
    write(settings.backup_dir, "app_20261101_011000.sql.gz", {"date": "2026-11-01T01:10:00-05:00"})
    entries = list_catalog(settings, include_s3=False).entries
    assert [e.filename for e in entries] == ["app_20261101_011000.sql.gz", "app_20261101_013000.sql.gz"]
    assert entries[0].created == datetime(2026, 11, 1, 6, 10, tzinfo=UTC)
    # A metadata date that names another wall-clock time than the name is not trusted over the name.
    odd = parse_name("app_20261101_090000.sql.gz")
    assert created_at(odd, {"date": "2026-11-01T01:10:00-05:00"}) == odd.created


def test_future_dated_backup_is_listed_flagged_and_never_latest(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    now = datetime.now(UTC)
    real = f"app_{new_stamp(now - timedelta(hours=6))}.dump.zst"
    ahead = f"app_{new_stamp(now + timedelta(hours=3))}.dump.zst"
    by_meta = f"app_{new_stamp(now - timedelta(hours=7))}.dump.zst"  # the name is fine, its metadata is not
    write(settings.backup_dir, real, {})
    write(settings.backup_dir, ahead, {})
    write(settings.backup_dir, by_meta, {"date": (now + timedelta(days=2)).isoformat()})
    catalog = list_catalog(settings, include_s3=False)
    flags = {e.filename: e.as_dict()["future_dated"] for e in catalog.entries}
    assert flags == {real: False, ahead: True, by_meta: True}
    assert resolve(settings, "latest").filename == real
    assert catalog.latest("app").filename == real
    # A clock a minute or two apart is not "the future".
    write(settings.backup_dir, f"app_{new_stamp(now + timedelta(minutes=2))}.dump.zst", {})
    assert resolve(settings, "latest").filename != real
