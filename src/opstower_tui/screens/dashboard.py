"""Dashboard (home): every configured database at a glance, and whether S3 answers."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from opstower_tui.formatting import STATUS_STYLE
from opstower_tui.messages import DashboardData
from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.db_card import DbCard
from opstower_tui.widgets.footer import KeysFooter
from opstower_tui.widgets.recent_runs import RecentRuns

REFRESH_SECONDS = 30.0  # everything, S3 included
LOCAL_REFRESH_SECONDS = 5.0  # the state file and the backup directory: a cron run shows within seconds


class DashboardScreen(OpsScreen):
    SCREEN_NAME = "Dashboard"
    BINDINGS: ClassVar = [
        Binding("b", "backup_now", "Back up", id="dashboard.backup_now"),
        Binding("v", "verify_latest", "Verify", id="dashboard.verify"),
        Binding("t", "full_test_latest", "Full test", id="dashboard.full_test"),
        Binding("r", "restore_latest", "Restore", id="dashboard.restore"),
        Binding("D", "drill", "Drill", id="dashboard.drill"),
        Binding("T", "recover_tables", "Table recovery", show=False, id="dashboard.recover_tables"),
        Binding("R", "recover_interrupted", "Recover interrupted restore", show=False,
                id="dashboard.recover_interrupted"),
        # The PITR line's keys: the app's M and A, for the focused card's server.
        Binding("M", "pitr_recover", "Recover to a moment (PITR)", show=False, id="dashboard.pitr_recover"),
        Binding("A", "pitr_accidents", "Find the accident (PITR)", show=False, id="dashboard.pitr_accidents"),
        # The second off-site copy, the PITR set-up, and the databases earlier restores kept.
        Binding("Y", "replicate", "Replicate (second off-site copy)", show=False, id="dashboard.replicate"),
        Binding("B", "base_backup", "Base backup (PITR)", show=False, id="dashboard.base_backup"),
        Binding("E", "pitr_enable", "Enable PITR (dry run first)", show=False, id="dashboard.pitr_enable"),
        Binding("K", "old_databases", "Kept old databases", show=False, id="dashboard.old_databases"),
        Binding("2", "app.switch_mode('backups')", "Backups", id="dashboard.backups"),
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False, id="dashboard.refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Any | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="interrupted-line")
        yield Static("S3 …", id="s3-line")
        yield Static("", id="pitr-line")
        with VerticalScroll(id="cards"):
            for name, target in self.ops.settings.targets.items():
                yield DbCard(name, production=target.production, read_only=target.read_only)
            yield Static("Recent runs", id="recent-title")
            yield RecentRuns(id="recent")
        yield KeysFooter()

    def on_mount(self) -> None:
        cards = list(self.query(DbCard))
        if cards:
            cards[0].focus()
        # After the first frame: the gathering threads (catalog, S3, PITR status: boto3 and barman
        # imports) would otherwise take the GIL from the first paint; the cards show "…" until then.
        self.call_after_refresh(self.refresh_data)
        self.set_interval(REFRESH_SECONDS, self._tick_data)
        self.set_interval(LOCAL_REFRESH_SECONDS, self._tick_local)

    # Behind another screen the refresh is wasted work that competes with the screen in use
    # (10,000 metadata files are ~1 s of CPU); returning to the dashboard refreshes at once.
    def _tick_data(self) -> None:
        if self.is_current:
            self.refresh_data()

    def _tick_local(self) -> None:
        if self.is_current:
            self.refresh_local()

    def on_screen_resume(self) -> None:
        if self.snapshot is not None:
            self.refresh_data()

    def refresh_data(self) -> None:
        self.gather_status()

    @work(thread=True, exclusive=True, group="dashboard-local", exit_on_error=False)
    def refresh_local(self) -> None:
        from opstower_tui.status import gather

        self.post_message(DashboardData(gather(self.ops.settings, check_s3=False)))

    @work(thread=True, exclusive=True, group="dashboard", exit_on_error=False)
    def gather_status(self) -> None:
        from opstower_tui.status import gather

        settings = self.ops.settings
        if settings.s3.enabled and self.snapshot is None:
            # Local first (milliseconds), then again with S3, which may take seconds to answer.
            self.post_message(DashboardData(gather(settings, check_s3=False)))
        self.post_message(DashboardData(gather(settings, check_s3=True)))

    @on(DashboardData)
    def show(self, message: DashboardData) -> None:
        snap = message.snapshot
        previous, self.snapshot = self.snapshot, snap
        if snap.s3_status == "…" and previous is not None and previous.s3_status != "…":
            # A local-only refresh: keep what S3 last said instead of flickering back to "checking".
            snap.s3_status, snap.s3_where, snap.s3_detail = previous.s3_status, previous.s3_where, previous.s3_detail
        now = self.ops.now()
        settings = self.ops.settings
        for status in snap.databases:
            for card in self.query(DbCard):
                if card.target_name == status.name:
                    card.update_status(status, now, settings.backup_age_warn_hours, settings.backup_age_crit_hours,
                                       self.ops.read_only)
        word = {"-": "-", "…": "…"}.get(snap.s3_status, snap.s3_status)
        line = Text.assemble(("S3   ", "bold"), (word.ljust(4), STATUS_STYLE.get(word, "")), " ",
                             f"{snap.s3_where} {snap.s3_detail}".strip())
        self.query_one("#s3-line", Static).update(line)
        self._show_pitr(snap, previous)
        alert = self.query_one("#interrupted-line", Static)
        alert.display = bool(snap.interrupted)
        if snap.interrupted:
            # The journal's sentence names its remedy (advice "recover_interrupted"): in this face, R here.
            alert.update(Text.assemble(("CRIT ", STATUS_STYLE["CRIT"]), snap.interrupted.removeprefix("WARNING: "),
                                       style="bold"))
        self.query_one(RecentRuns).show_runs(snap.recent, now)

    def _show_pitr(self, snap: Any, previous: Any | None) -> None:
        """Point-in-time recovery: the window and where each logical dump sits on it (S3 refreshes only)."""
        from opstower_tui.formatting import pitr_bar

        line = self.query_one("#pitr-line", Static)
        if snap.pitr is None and snap.pitr_error is None and previous is not None:
            snap.pitr, snap.pitr_error = previous.pitr, previous.pitr_error  # a local-only refresh
        line.display = snap.pitr is not None or snap.pitr_error is not None
        if snap.pitr_error:
            line.update(Text.assemble(("PITR ", "bold"), ("FAIL", STATUS_STYLE["FAIL"]), f" {snap.pitr_error}"))
            return
        st = snap.pitr
        if st is None:
            return
        word = "CRIT" if st.gaps or (st.archiver or {}).get("failing") else (
            "WARN" if st.lag_seconds is not None and st.lag_seconds > 300 else "OK")
        dumps = [e.created for e in snap.catalog if not e.name.pre_restore]
        now = self.ops.now()
        bar = pitr_bar(st.earliest, st.latest, dumps, now, width=22)
        window = (f"{st.earliest:%m-%d %H:%M} → {st.latest:%H:%M}" if st.earliest and st.latest else "no window yet")
        line.update(Text.assemble(("PITR ", "bold"), (word.ljust(4), STATUS_STYLE.get(word, "")),
                                  f" {bar} {window}", (f" {len(st.gaps)} gap(s)" if st.gaps else "", "bold red"),
                                  ("  M", "bold"), " moment ", ("A", "bold"), " accident"))

    # -- actions ---------------------------------------------------------------------------
    def _card_status(self) -> Any | None:
        focused = self.focused if isinstance(self.focused, DbCard) else None
        card = focused or next(iter(self.query(DbCard)), None)
        if card is None or card.status is None:
            self.notify("Still loading", severity="warning")
            return None
        return card.status

    def _latest(self) -> Any | None:
        status = self._card_status()
        if status is None:
            return None
        if status.latest is None:
            self.notify(f"No backup of {status.dbname} yet: press b to take one", severity="warning")
        return status.latest

    def action_refresh(self) -> None:
        self.refresh_data()

    def action_verify_latest(self, full_test: bool = False) -> None:
        from opstower_tui.screens.verify import VerifyScreen

        entry = self._latest()
        if entry is not None:
            self.app.push_screen(VerifyScreen(entry, full_test=full_test))

    def action_full_test_latest(self) -> None:
        self.action_verify_latest(full_test=True)

    def action_restore_latest(self) -> None:
        if self.ops.read_only:
            return
        from opstower_tui.screens.restore import RestoreScreen

        status = self._card_status()
        if status is not None and self.refused_for_target(status.name, "Restore"):
            return
        entry = self._latest()
        if status is not None and entry is not None:
            self.app.push_screen(RestoreScreen(entry, status.name))  # the focused card's target, never the default

    def action_recover_tables(self) -> None:
        """Lost rows or a dropped table of the focused database, from its latest backup."""
        from opstower_tui.screens.recover import RecoverScreen

        status = self._card_status()
        if status is None or self.refused_for_target(status.name, "Table recovery"):
            return
        entry = self._latest()
        if entry is not None:
            self.app.push_screen(RecoverScreen(entry, status.name))

    def _focused_target(self) -> str | None:
        focused = self.focused if isinstance(self.focused, DbCard) else None
        return focused.target_name if focused is not None else None

    def action_pitr_recover(self) -> None:
        self.app.open_pitr_recovery(self._focused_target())  # type: ignore[attr-defined]

    def action_pitr_accidents(self) -> None:
        self.app.open_accidents(self._focused_target())  # type: ignore[attr-defined]

    def action_recover_interrupted(self) -> None:
        """Finish or undo a killed restore from its journal (what `opstower restore --recover` does)."""
        if self.snapshot is None or not self.snapshot.interrupted:
            self.notify("No interrupted restore: nothing to recover", severity="information")
            return
        from opstower_tui.jobs import recover_job
        from opstower_tui.screens.run import RunScreen

        self.app.push_screen(RunScreen("Recover the interrupted restore", recover_job(self.ops.settings),
                                       summary=lambda sentence: f"PASS: {sentence}"),
                             lambda _result: self.refresh_data())

    def action_backup_now(self) -> None:
        if self.ops.read_only:
            return
        from opstower_tui.jobs import backup_job, backup_summary
        from opstower_tui.screens.run import RunScreen

        status = self._card_status()
        if status is not None:
            self.app.push_screen(RunScreen(f"Back up {status.dbname} now", backup_job(self.ops.settings, status.name),
                                           summary=backup_summary))

    def action_replicate(self) -> None:
        """Catch the replica ([s3.replica]) up: every backup, base backup and WAL segment it lacks."""
        settings = self.ops.settings
        if settings.s3.replica is None or not settings.s3.replica.enabled:
            self.notify("No replica is configured: add an [s3.replica] table (bucket, endpoint_url, …) to the "
                        "config", title="Replicate", severity="warning")
            return
        from opstower_tui.screens.offsite import replicate_job, replicate_summary
        from opstower_tui.screens.run import RunScreen

        self.app.push_screen(RunScreen("Replicate: copy what the replica lacks, check each copy",
                                       replicate_job(settings), summary=replicate_summary),
                             lambda _result: self.refresh_data())

    def _pitr_target(self, what: str) -> str | None:
        """The focused card's target for a PITR action, or None (said why) when it cannot run."""
        if not self.ops.pitr_configured():
            return None
        name = self._focused_target() or self.ops.settings.default_target
        if self.refused_for_target(name, what):
            return None
        return name

    def action_base_backup(self) -> None:
        """A physical base backup to S3 (barman-cloud): the start of a recovery window."""
        name = self._pitr_target("A base backup")
        if name is None:
            return
        from opstower_tui.screens.offsite import base_backup_job, base_backup_summary
        from opstower_tui.screens.run import RunScreen

        target = self.ops.settings.targets[name]
        self.app.push_screen(RunScreen(f"Base backup of {target.display_host}:{target.display_port} to S3",
                                       base_backup_job(self.ops.settings, name), summary=base_backup_summary),
                             lambda _result: self.refresh_data())

    def action_pitr_enable(self) -> None:
        """WAL archiving for the focused card's server: the dry run, then `a` applies it."""
        name = self._pitr_target("Enabling PITR")
        if name is None:
            return
        from opstower_tui.screens.offsite import PitrEnableScreen

        self.app.push_screen(PitrEnableScreen(self.ops.settings, name), lambda _result: self.refresh_data())

    def action_old_databases(self) -> None:
        """The databases earlier restores of the focused card's database kept, to discard when checked."""
        from opstower_tui.screens.old_dbs import OldDatabasesScreen

        self.app.push_screen(OldDatabasesScreen(self._focused_target() or self.ops.settings.default_target))
