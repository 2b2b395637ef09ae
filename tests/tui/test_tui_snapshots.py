"""SVG snapshots of every screen at 80x24 (pytest-textual-snapshot).

Deterministic: a fixed backup directory (fixed names, sizes and metadata), run history at
fixed offsets from a frozen clock, a fixed S3 prefix in the session's fresh store, and the
run screens fed recorded engine events instead of timing a live run (the pilot tests in
test_tui.py run the real thing). Update with `pytest tests/tui/test_tui_snapshots.py
--snapshot-update`, then look at the SVGs before committing them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from opstower_core.artifacts.names import ArtifactName
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.events import Status, StepFinished, StepLog, StepProgress, StepResult, StepStarted
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.restore import PlannedStep, RestorePlan, RestoreResult
from opstower_core.runs.history import StateStore
from opstower_core.verify import VerifyResult
from opstower_tui.app import OpsTowerApp
from opstower_tui.dialogs.confirm import TypedConfirmDialog
from opstower_tui.dialogs.error import ErrorDialog
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.restore import RestoreScreen
from opstower_tui.screens.verify import VerifyScreen

# A fixed place, because the metadata panel shows the full path of the artifact.
ROOT = Path("/tmp/opstower-tui-snapshots")
NOW = datetime.strptime("20261126_120000", "%Y%m%d_%H%M%S").astimezone()
MONO = 1000.0
DB = "opstower"
# (timestamp, size, where, verified)
BACKUPS = [
    ("20261126_113500", 231_400, "both", "PASS"),
    ("20261126_103500", 229_100, "both", None),
    ("20261126_093500", 162_000, "local", "FAIL"),
    ("20261126_083500", 228_000, "s3", None),
    ("20261125_233500", 224_300, "local", "PASS"),
    ("20261125_123500", 221_900, "both", "WARN"),
]


def wait_until(predicate: Callable[[], Any]) -> Callable[[Any], Any]:
    async def run_before(pilot: Any) -> None:
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await pilot.pause(0.05)
        await pilot.pause()

    return run_before


def _meta(name: ArtifactName, size: int) -> dict[str, Any]:
    return {
        "timestamp": name.timestamp, "date": name.created.isoformat(), "database": DB, "host": "db1", "port": 5432,
        "backup_file": name.filename, "backup_size": str(size), "database_size": "13 MB", "table_count": 47,
        "compression": "zstd", "postgresql_version": "PostgreSQL 18.4", "backup_script_version": "0.1.0",
        "retention_days": 30, "format": "custom", "sha256": hashlib.sha256(name.filename.encode()).hexdigest(),
        "size_bytes": size, "duration_seconds": 1.3, "tool": "opstower",
    }


@pytest.fixture(scope="module")
def snap_settings(s3) -> Settings:
    shutil.rmtree(ROOT, ignore_errors=True)
    backups, state_dir = ROOT / "backups", ROOT / "state"
    backups.mkdir(parents=True)
    settings = Settings(
        backup_dir=backups, state_dir=state_dir,
        s3=S3Settings(bucket=s3.bucket, prefix="snapshots/", endpoint_url=s3.endpoint_url, region="us-east-1"),
        targets={DB: Target(name=DB, dbname=DB, host="db1", rto_minutes=240, rpo_minutes=60),
                 "billing": Target(name="billing", dbname="billing", host="db1", rto_minutes=120, rpo_minutes=60)},
        default_target=DB,
    )
    client = s3.client()
    state = StateStore(state_dir)
    for ts, size, where, verified in BACKUPS:
        name = ArtifactName(DB, ts, "dump.zst")
        if where in ("local", "both"):
            (backups / name.filename).write_bytes(b"\0" * size)
            (backups / name.meta_filename).write_text(json.dumps(_meta(name, size)))
        if where in ("s3", "both"):
            client.put_object(Bucket=s3.bucket, Key=name.s3_key("snapshots/"), Body=b"\0" * size)
        started = name.created.timestamp() + 60
        state.record("backup", DB, "success", artifact=name.filename, started_at=started, finished_at=started + 1.3,
                     size_bytes=size, duration_seconds=1.3)
        if verified:
            state.record("verify", DB, verified, artifact=name.filename, started_at=started + 120,
                         finished_at=started + 121, duration_seconds=0.8)
    state.record("drill", DB, "success", artifact=ArtifactName(DB, BACKUPS[1][0], "dump.zst").filename,
                 started_at=NOW.timestamp() - 3 * 86400, finished_at=NOW.timestamp() - 3 * 86400 + 2700,
                 duration_seconds=2700, details={"scenario_name": "Data deletion", "rto_met": True})
    return settings


def make_app(settings: Settings, **kw: Any) -> OpsTowerApp:
    return OpsTowerApp(settings, now=lambda: NOW, monotonic=lambda: MONO, warm_up=False, **kw)


def entry_of(settings: Settings, index: int = 0) -> CatalogEntry:
    ts, size, where, verified = BACKUPS[index]
    name = ArtifactName(DB, ts, "dump.zst")
    return CatalogEntry(name, size, local_path=settings.backup_dir / name.filename,
                        s3_key=name.s3_key("snapshots/") if where != "local" else None,
                        meta=_meta(name, size), verified=verified)


def test_dashboard(snap_compare, snap_settings):
    app = make_app(snap_settings)
    ready = wait_until(lambda: getattr(app.screen, "snapshot", None) is not None
                       and app.screen.snapshot.s3_status == "OK")
    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def test_dashboard_read_only(snap_compare, snap_settings):
    app = make_app(snap_settings, read_only=True)
    ready = wait_until(lambda: getattr(app.screen, "snapshot", None) is not None
                       and app.screen.snapshot.s3_status == "OK")
    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def _backups_loaded(app: OpsTowerApp) -> bool:
    screen = app.screen
    return getattr(screen, "s3_state", "").startswith("S3: ") and "listing" not in screen.s3_state


def test_backups(snap_compare, snap_settings):
    app = make_app(snap_settings)

    async def run_before(pilot: Any) -> None:
        await pilot.press("2")
        await wait_until(lambda: _backups_loaded(app))(pilot)
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_backups_filtered_and_sorted(snap_compare, snap_settings):
    app = make_app(snap_settings)

    async def run_before(pilot: Any) -> None:
        await pilot.press("2")
        await wait_until(lambda: _backups_loaded(app))(pilot)
        await pilot.press("slash", *"both", "enter", "s", "s")  # sort by size
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def _verify_events() -> list[Any]:
    size = BACKUPS[2][1]
    steps = [("exists", "Checking file existence", Status.PASS, "Backup file exists"),
             ("readable", "Checking file readability", Status.PASS, "Backup file is readable"),
             ("not_empty", "Checking file is not empty", Status.PASS, "Backup file size: 158.2 KiB"),
             ("compression", "Testing compression integrity", Status.FAIL,
              "Compression integrity test failed at byte 81,920 of 162,000: zstd frame corrupted"),
             ("content", "Verifying PostgreSQL dump content", Status.FAIL, "Invalid PostgreSQL dump: unreadable"),
             ("metadata", "Checking metadata file", Status.FAIL, "Metadata sha256 3f2a… does not match the file"),
             ("s3", "Verifying S3 backup", Status.FAIL, "S3 backup missing: s3://opstower-backups/snapshots/…"),
             ("full_restore", "Full restoration test", Status.SKIP, "Full restoration test not requested")]
    events: list[Any] = []
    for i, (step, title, status, detail) in enumerate(steps, 1):
        events.append(StepStarted(step, title, i, 8))
        if step == "compression":
            events.append(StepProgress(step, 81_920, size))
            events.append(StepLog(step, "zstd: frame checksum mismatch", "ERROR"))
        events.append(StepFinished(step, status, detail, 0.1 * i))
    return events


def test_verify_failed(snap_compare, snap_settings):
    app = make_app(snap_settings)
    entry = entry_of(snap_settings, 2)

    async def run_before(pilot: Any) -> None:
        screen = VerifyScreen(entry, autostart=False)
        await app.push_screen(screen)
        screen.started_at = MONO - 3.6
        for event in _verify_events():
            screen.apply_event(EngineEvent(event))
        results = [StepResult(e.step, e.step, e.status, e.detail, e.seconds)
                   for e in _verify_events() if isinstance(e, StepFinished)]
        screen.work_done("run_job", VerifyResult(entry, results, 3.6))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_verify_running(snap_compare, snap_settings):
    app = make_app(snap_settings)
    entry = entry_of(snap_settings, 0)

    async def run_before(pilot: Any) -> None:
        screen = VerifyScreen(entry, full_test=True, autostart=False)
        await app.push_screen(screen)
        screen.started_at = MONO - 2.0
        screen.running = True
        for event in _verify_events()[:6]:  # checks 1-3
            screen.apply_event(EngineEvent(event))
        screen.apply_event(EngineEvent(StepStarted("compression", "Testing compression integrity", 4, 8)))
        screen.apply_event(EngineEvent(StepProgress("compression", 104_000, 231_400)))
        screen._tick()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def _plan(settings: Settings) -> RestorePlan:
    entry = entry_of(settings, 0)
    titles = [("verify", "Verifying backup file (checks 1-7)", ["opstower verify … (checks 1-7)"], "", None),
              ("download", "Downloading backup from S3", [], "", "not needed: the backup is local"),
              ("confirm", "Confirming with the operator", ["type the database name: opstower"], "", None),
              ("pre_backup", "Creating pre-restore backup of current database", ["pg_dump -Fc -Z0 | zstd"], "", None),
              ("drop_create", "Creating the database to restore into", ["CREATE DATABASE opstower_restore_x"], "", None),
              ("restore", "Restoring database from backup", ["zstd -d | pg_restore --dbname=…"], "", None),
              ("verify_restored", "Verifying restored database", [], "tables and row counts", None),
              ("analyze", "Analyzing database", ["ANALYZE"], "", None),
              ("terminate", "Terminating existing database connections", [], "", None),
              ("swap", "Switching the restored database into place", ["ALTER DATABASE … RENAME"], "", None)]
    steps = [PlannedStep(i, t, c, d, s) for i, t, c, d, s in titles]
    return RestorePlan(entry=entry, target=settings.target(), live_db=DB, work_db="opstower_restore_20261126_120000",
                       mode="swap", steps=steps, artifact_size=entry.size, rto_minutes=240,
                       sessions=[{"pid": 4242, "user": "app", "application": "api", "client": "10.0.0.7",
                                  "state": "idle", "since": "11:58"}],
                       old_db="opstower_pre_restore_20261126_120000")


def test_restore_plan(snap_compare, snap_settings):
    app = make_app(snap_settings)

    async def run_before(pilot: Any) -> None:
        screen = RestoreScreen(entry_of(snap_settings, 0), autostart=False)
        await app.push_screen(screen)
        screen.show_plan(_plan(snap_settings))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_restore_typed_confirmation(snap_compare, snap_settings):
    app = make_app(snap_settings)

    async def run_before(pilot: Any) -> None:
        screen = RestoreScreen(entry_of(snap_settings, 0), autostart=False)
        await app.push_screen(screen)
        screen.show_plan(_plan(snap_settings))
        await pilot.press("enter")
        await pilot.pause()
        box = app.screen.query_one("#typed-name")
        box.cursor_blink = False
        await pilot.press(*"opstower")
        await pilot.pause()
        assert isinstance(app.screen, TypedConfirmDialog)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def _finished(step: str, title: str, seconds: float, status: Status = Status.PASS) -> StepResult:
    return StepResult(step, title, status, "ok", seconds)


def test_restore_running(snap_compare, snap_settings):
    app = make_app(snap_settings)
    plan = _plan(snap_settings)

    async def run_before(pilot: Any) -> None:
        screen = RestoreScreen(plan.entry, autostart=False)
        await app.push_screen(screen)
        screen.show_plan(plan)
        screen.enter_run_view()
        screen.started_at = MONO - 754
        for s in plan.steps[:5]:
            screen.apply_event(EngineEvent(StepStarted(s.id, s.title)))
            status = Status.SKIP if s.skip else Status.PASS
            screen.apply_event(EngineEvent(StepFinished(s.id, status, s.skip or "done", 12.5)))
        screen.apply_event(EngineEvent(StepStarted("restore", "Restoring database from backup")))
        screen.apply_event(EngineEvent(StepLog("restore", "pg_restore: creating TABLE \"public.bookings\"")))
        screen.apply_event(EngineEvent(StepProgress("restore", 150_000, 231_400)))
        screen._tick()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_restore_done(snap_compare, snap_settings):
    app = make_app(snap_settings)
    plan = _plan(snap_settings)
    done = [_finished(s.id, s.title, 1.5 + i) for i, s in enumerate(plan.steps)]
    result = RestoreResult(ok=True, plan=plan, steps=done, total_seconds=sum(r.seconds for r in done),
                           rto_seconds=14400, margin_seconds=14400 - sum(r.seconds for r in done),
                           old_database="opstower_pre_restore_20261126_120000",
                           pre_restore_artifact="pre_restore_opstower_20261126_120000.dump.zst",
                           sentence="Restored opstower from opstower_20261126_113500.dump.zst; the previous "
                                    "database is kept as opstower_pre_restore_20261126_120000.")

    async def run_before(pilot: Any) -> None:
        screen = RestoreScreen(plan.entry, autostart=False)
        await app.push_screen(screen)
        screen.show_plan(plan)
        screen.started_at = MONO - result.total_seconds
        screen.show_result(result)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_help(snap_compare, snap_settings):
    app = make_app(snap_settings)

    async def run_before(pilot: Any) -> None:
        await pilot.press("2")
        await wait_until(lambda: _backups_loaded(app))(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_error_dialog(snap_compare, snap_settings):
    app = make_app(snap_settings)

    async def run_before(pilot: Any) -> None:
        await app.push_screen(ErrorDialog(
            "Cannot connect to database opstower on db1:5432 (connection refused). Nothing was changed. "
            "Check that PostgreSQL is running and PGHOST/PGPORT point at it."))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
