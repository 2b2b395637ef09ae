"""`python tools/screenshots.py DIR [NAME...]` (`make screenshots`): SVGs of every screen at 80x24
(or only the NAMEs given, e.g. `pitr-accidents dashboard`).

Taken from the real app on the real demo (embedded PostgreSQL and S3, the demo's own
directory): the dashboard, the backups list, a failed and a fully passed verification, the
restore wizard from plan to the end (and under another name), help, the command palette, a DR drill,
the kept old databases, WAL archiving's set-up, a base backup, a replication to a second copy, and point-in-time
recovery (the demo runs with WAL archiving: find the accident, the recovery's plan, a real recovery
to just before it). The restore really runs against the demo database; the old copy it keeps and
the recovered scratch cluster are discarded afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SIZE = (80, 24)


async def _wait(pilot: Any, predicate: Callable[[], Any], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screen did not get ready: {predicate}")
        await pilot.pause(0.05)
    await pilot.pause(0.2)


async def _dashboard(pilot: Any) -> None:
    screen = pilot.app.screen
    await _wait(pilot, lambda: screen.snapshot is not None and screen.snapshot.s3_status not in ("…",))


async def _backups(pilot: Any) -> Any:
    await pilot.press("2")
    screen = pilot.app.screen
    await _wait(pilot, lambda: screen.s3_state and "listing" not in screen.s3_state)
    return screen


async def _pick(pilot: Any, text: str) -> None:
    await pilot.press("slash", *text, "enter")


def _scenarios(backups: list[str], database: str) -> list[tuple[str, Callable[[Any], Awaitable[None]], bool]]:
    local_only, both, corrupted = backups

    async def dashboard(pilot: Any) -> None:
        await _dashboard(pilot)

    async def backups_list(pilot: Any) -> None:
        await _backups(pilot)

    async def verify_failed(pilot: Any) -> None:
        await _backups(pilot)
        await _pick(pilot, corrupted.split("_")[-1][:6])
        await pilot.press("v")
        verify = pilot.app.screen
        await _wait(pilot, lambda: verify.finished)

    async def verify_full(pilot: Any) -> None:
        await _backups(pilot)
        await _pick(pilot, both.split("_")[-1][:6])
        await pilot.press("t")
        verify = pilot.app.screen
        await _wait(pilot, lambda: verify.finished)

    async def restore_plan(pilot: Any) -> None:
        await _backups(pilot)
        await _pick(pilot, "both")
        await pilot.press("r")
        wizard = pilot.app.screen
        await _wait(pilot, lambda: wizard.phase in ("plan", "failed"))

    async def restore_confirm(pilot: Any) -> None:
        await restore_plan(pilot)
        await pilot.press("enter")
        await pilot.pause(0.2)
        pilot.app.screen.query_one("#typed-name").cursor_blink = False
        await pilot.press(*database)
        await pilot.pause(0.2)

    async def restore_done(pilot: Any) -> None:
        await restore_confirm(pilot)
        wizard = pilot.app.screen_stack[-2]
        await pilot.press("enter")
        await _wait(pilot, lambda: wizard.phase in ("done", "failed"))

    async def help_screen(pilot: Any) -> None:
        await _backups(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    async def palette(pilot: Any) -> None:
        await _backups(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"ver")
        await pilot.pause(0.5)

    async def drill(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("D")
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")  # start the proposed drill (scenario, database, newest good backup)
        await _wait(pilot, lambda: getattr(pilot.app.screen, "drill_id", None) is not None)

    async def command_log(pilot: Any) -> None:
        await restore_done(pilot)
        await pilot.press("L")
        await pilot.pause(0.3)

    async def table_recovery(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("T")
        screen = pilot.app.screen
        await pilot.pause(0.3)
        await pilot.press("space", "enter")  # the first table of the backup
        await _wait(pilot, lambda: screen.phase in ("preview", "failed"))

    async def health(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("H")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished)

    async def prune(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("P")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished)

    async def pitr_accidents(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("A")
        screen = pilot.app.screen
        await _wait(pilot, lambda: screen.loaded or "FAIL" in str(screen.query_one("#acc-summary").content),
                    timeout=300)

    async def pitr_plan(pilot: Any) -> None:
        await pitr_accidents(pilot)
        accidents = pilot.app.screen
        # The screenshot's own accident (see _make_accident): recover to just before it.
        index = next((i for i, a in enumerate(accidents.accidents) if a.kind == "DELETE"), 0)
        for _ in range(index):
            await pilot.press("down")
        await pilot.press("enter")
        recovery = pilot.app.screen
        await _wait(pilot, lambda: recovery.status is not None or recovery.status_error)
        recovery.query_one("#pitr-value").cursor_blink = False

    async def pitr_recovered(pilot: Any) -> None:
        await pitr_plan(pilot)
        recovery = pilot.app.screen
        await pilot.press("enter")
        await _wait(pilot, lambda: recovery.phase in ("recovered", "failed"), timeout=900)

    async def restore_other_db(pilot: Any) -> None:
        await restore_plan(pilot)
        wizard = pilot.app.screen
        await pilot.press("n")
        await pilot.pause(0.2)
        await pilot.press(*f"{database}_copy", "enter")
        await _wait(pilot, lambda: wizard.phase in ("plan", "failed") and wizard.plan is not None
                    and wizard.plan.live_db == f"{database}_copy")

    async def old_databases(pilot: Any) -> None:
        _sql(pilot.app.settings, f'CREATE DATABASE "{database}_pre_restore_20260101_000000"')  # dropped below (x)
        await _dashboard(pilot)
        await pilot.press("K")
        screen = pilot.app.screen
        await _wait(pilot, lambda: screen.rows)

    async def pitr_enable(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("E")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished)

    async def base_backup(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("B")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished, timeout=900)

    async def replicate(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("Y")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished, timeout=900)

    async def pitr_copied(pilot: Any) -> None:
        await pitr_recovered(pilot)
        recovery = pilot.app.screen
        await pilot.press("c")
        await pilot.pause(0.3)
        await pilot.press("enter")  # the proposed name: <db>_pitr_<xid>
        await _wait(pilot, lambda: recovery.phase == "recovered" and (recovery.copies or "FAIL" in str(
            recovery.query_one("#pitr-summary").content)), timeout=600)

    return [
        ("dashboard", dashboard, False),
        ("dashboard-read-only", dashboard, True),
        ("backups", backups_list, False),
        ("verify-failed", verify_failed, False),
        ("verify-full-test", verify_full, False),
        ("restore-plan", restore_plan, False),
        ("restore-confirm", restore_confirm, False),
        ("restore-done", restore_done, False),
        ("help", help_screen, False),
        ("command-palette", palette, False),
        ("drill", drill, False),
        ("command-log", command_log, False),
        ("table-recovery-preview", table_recovery, False),
        ("health", health, False),
        ("prune-dry-run", prune, False),
        ("restore-other-db", restore_other_db, False),
        ("old-databases", old_databases, False),
        ("enable-pitr", pitr_enable, False),
        ("base-backup", base_backup, False),
        ("replicate", replicate, False),
        ("pitr-accidents", pitr_accidents, False),
        ("pitr-recover-plan", pitr_plan, False),
        ("pitr-recovered", pitr_recovered, False),
        ("pitr-copied-out", pitr_copied, False),
    ]


async def take_all(settings: Any, backups: list[str], out: Path, only: list[str] | None = None) -> list[Path]:
    from opstower_tui.app import OpsTowerApp

    written = []
    for name, scenario, read_only in _scenarios(backups, settings.target().dbname):
        if only and name not in only:
            continue
        # The demo has no second copy: its replica is the demo's own S3 under another prefix.
        app = OpsTowerApp(_with_replica(settings) if name == "replicate" else settings, read_only=read_only,
                          warm_up=False)
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)
            written.append(Path(app.save_screenshot(f"{name}.svg", str(out))))
            if name in ("restore-done", "command-log"):
                if name == "command-log":
                    await pilot.press("escape")
                await _discard_old(pilot)
            if name == "table-recovery-preview":
                await pilot.press("escape")  # walked away: the scratch database is dropped
                await pilot.pause(2)
            if name in ("pitr-recovered", "pitr-copied-out"):
                await _discard_cluster(pilot)
                _drop_copies(settings, pilot.app.screen)
            if name == "old-databases":
                await pilot.press("x", "y")  # keep the demo tidy: the made-up kept copy is dropped
                await _wait(pilot, lambda: not pilot.app.screen.rows, timeout=60)
            if name == "drill":
                _abort_drill(settings, pilot.app.screen.drill_id)
        print(f"  {out / (name + '.svg')}", file=sys.stderr)
    return written


def _with_replica(settings: Any) -> Any:
    """The demo's S3 with a second bucket as the replica (a prefix of the primary's would be listed as its own)."""
    from dataclasses import replace

    from opstower_core.storage.s3 import store_for

    s3 = settings.s3
    replica = replace(s3, bucket=f"{s3.bucket}-replica", role="replica")
    client = store_for(replica).client
    try:
        client.create_bucket(Bucket=replica.bucket)
    except client.exceptions.ClientError as exc:  # already there from an earlier run
        if "BucketAlready" not in str(exc):
            raise
    return replace(settings, s3=replace(s3, replica=replica))


def _sql(settings: Any, statement: str) -> None:
    import psycopg

    info = {k: v for k, v in settings.target().conninfo("postgres").items() if v is not None}
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute(statement)


def _abort_drill(settings: Any, drill_id: int) -> None:
    """Keep the demo tidy: the screenshot's drill must not wait there to be resumed."""
    from opstower_core.drill import DrillRunner

    DrillRunner.open(settings, drill_id).abort("screenshot only")


async def _discard_old(pilot: Any) -> None:
    """Keep the demo tidy: drop the copy the swap kept."""
    wizard = pilot.app.screen
    if getattr(wizard, "phase", "") == "done" and wizard.result.old_database:
        await pilot.press("x", "y")
        await _wait(pilot, lambda: wizard.old_decided, timeout=60)


async def _discard_cluster(pilot: Any) -> None:
    """Keep the demo tidy: the recovered scratch cluster is stopped and deleted."""
    recovery = pilot.app.screen
    if getattr(recovery, "cluster", None) is not None:
        await pilot.press("x", "y")
        await _wait(pilot, lambda: recovery.cluster is None, timeout=120)


def _drop_copies(settings: Any, recovery: Any) -> None:
    """Keep the demo tidy: the databases copied out of the recovered cluster are dropped."""
    import psycopg

    info = {k: v for k, v in settings.target().conninfo("postgres").items() if v is not None}
    with psycopg.connect(**info, autocommit=True) as conn:
        for copy in getattr(recovery, "copies", []):
            conn.execute(f'DROP DATABASE IF EXISTS "{copy.database}"')


def _make_accident(env: Any, settings: Any) -> None:
    """Point-in-time recovery needs something to find: a base backup (the demo's own, started in the
    background at its first seed; one is taken when there is none), then 2,000 rows of a table of the
    demo's own deleted in one transaction, archived."""
    import psycopg

    from opstower_core.pitr import list_base_backups, take_base_backup

    if env.base_backup is not None:
        env.base_backup.wait(900)
    target = settings.target()
    if not [b for b in list_base_backups(settings) if b.status == "DONE"]:
        print("  taking a base backup (first time only)", file=sys.stderr)
        take_base_backup(settings, target)
    info = {k: v for k, v in target.conninfo().items() if v is not None}
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pitr_demo_orders")
        conn.execute("CREATE TABLE pitr_demo_orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO pitr_demo_orders SELECT g, 'order ' || g FROM generate_series(1, 3000) g")
        conn.execute("DELETE FROM pitr_demo_orders WHERE id <= 2000")  # the "accident"
        conn.execute("SELECT pg_switch_wal()")
        name = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        before = int(name[8:16], 16) * 256 + int(name[16:24], 16) - 1  # the segment holding the accident
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if last and int(last[8:16], 16) * 256 + int(last[16:24], 16) >= before:
                return
            time.sleep(0.5)
    raise TimeoutError("the demo's WAL was not archived within 120 s")


def main(argv: list[str] | None = None) -> int:
    import warnings

    from opstower_core.devenv.demo import DemoEnvironment, default_demo_dir
    from opstower_core.runs.history import StateStore

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    only = args[1:]  # names of screenshots to take again (default: all)
    out.mkdir(parents=True, exist_ok=True)
    env = DemoEnvironment(default_demo_dir(), pitr=True)  # with WAL archiving: the PITR screens have a window
    try:
        print(f"Starting the demo in {env.directory}", file=sys.stderr)
        env.start()
        env.use_environment()
        env.seed()
        settings = env.settings()
        seeded = StateStore(settings.state_dir).get("demo.seeded") or {}
        backups = list(seeded.get("backups", []))
        if len(backups) != 3:
            print("The demo directory has no seeded backups; remove it and run again", file=sys.stderr)
            return 1
        if not only or any(n.startswith("pitr-") for n in only):
            _make_accident(env, settings)
        elif env.base_backup is not None and {"base-backup", "replicate", "enable-pitr"} & set(only):
            # The demo's own first base backup runs in the background: listing base backups while one is
            # half-written is not what these screens are to show.
            env.base_backup.wait(900)
        written = asyncio.run(take_all(settings, backups, out, only))
        print(f"{len(written)} screenshots in {out}", file=sys.stderr)
        return 0
    finally:
        env.stop()


if __name__ == "__main__":
    sys.exit(main())
