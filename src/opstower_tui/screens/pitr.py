"""Point-in-time recovery in the console: recover the server's archive to a moment, then decide.

Phases: choose (latest / a time / an LSN / a transaction, just before or including it; the
base backup it starts from and the WAL it replays, read from the archive) → recovering (the
base backup fetched, WAL replayed live as "LSN reached / target", the clock against the RTO)
→ recovered, where the operator picks what the recovered data is for: copy one database out
into the live server under a name (with its proof), or keep the cluster as the replacement
server (its data directory, port and the steps). The scratch cluster is discarded when the
operator is done, and never left running without the operator having said so.

The recovery runs in a scratch cluster on a free loopback port: the live server is not
touched until a database is copied into it (typed confirmation on a production target).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, RadioButton, RadioSet, RichLog, Select, Static

from opstower_tui.formatting import STATUS_STYLE, bar, clock, truncate_middle
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.bars import BudgetBar, TransferBar
from opstower_tui.widgets.event_view import show_event
from opstower_tui.widgets.step_list import StepList

KINDS = ("latest", "time", "lsn", "xid")
KIND_LABEL = {"latest": "latest", "time": "a time", "lsn": "an LSN", "xid": "a transaction"}
PLACEHOLDER = {
    "latest": "(nothing to type: the end of the archive)",
    "time": "YYYY-MM-DD HH:MM:SS+ZZ, e.g. 2026-11-30 03:12:00+00",
    "lsn": "a WAL position, e.g. 0/3000060",
    "xid": "a transaction id, e.g. 1234 (Find the accident lists them)",
}
LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
SEGMENT_BYTES = 16 * 1024 * 1024
STEPS = [("fetch_base", "Download the base backup"), ("replay", "Replay WAL to the target")]


class TargetProblem(ValueError):
    """What is wrong with the typed target, as the one line shown under the field."""


def lsn_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def parse_target(kind: str, text: str, exclusive: bool, zone: Any) -> Any:
    """The RecoveryTarget the fields describe; TargetProblem with one clear line otherwise.

    A time typed without a zone is read in the console's zone (`zone`), and the plan says so."""
    from opstower_core.pitr import RecoveryTarget

    text = text.strip()
    if kind == "latest":
        return RecoveryTarget()
    if not text:
        raise TargetProblem(f"Type {KIND_LABEL[kind]} to recover to ({PLACEHOLDER[kind]})")
    if kind == "time":
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise TargetProblem(f"{text!r} is not a time: write it as YYYY-MM-DD HH:MM:SS+ZZ "
                                "(e.g. 2026-11-30 03:12:00+00)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=zone)
        return RecoveryTarget(time=when, exclusive=exclusive)
    if kind == "lsn":
        if not LSN.match(text):
            raise TargetProblem(f"{text!r} is not an LSN: two hex numbers with a slash, e.g. 0/3000060")
        return RecoveryTarget(lsn=text.upper(), exclusive=exclusive)
    if not text.isdigit() or int(text) < 3:  # 0-2 are PostgreSQL's reserved transaction ids
        raise TargetProblem(f"{text!r} is not a transaction id: a whole number such as 1234")
    return RecoveryTarget(xid=int(text), exclusive=exclusive)


def window_problem(target: Any, status: Any) -> str | None:
    """A moment outside the recoverable window, said before anything is started."""
    if target.time is None or status is None:
        return None
    if status.earliest and target.time < status.earliest:
        return (f"{target.time.isoformat(sep=' ', timespec='seconds')} is before the recoverable window "
                f"(it starts {status.earliest.isoformat(sep=' ', timespec='seconds')})")
    if status.latest and target.time > status.latest:
        return (f"{target.time.isoformat(sep=' ', timespec='seconds')} is after the newest archived WAL "
                f"({status.latest.isoformat(sep=' ', timespec='seconds')}): choose latest, or an earlier moment")
    return None


def segment_number(name: str) -> int:
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


class CopyOutDialog(ModalScreen[tuple[str, str] | None]):
    """Which database of the recovered cluster, and its name on the live server."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel", id="pitr_copy.cancel")]

    def __init__(self, databases: list[str], chosen: str, name_for: Any, host: str) -> None:
        super().__init__()
        self.databases, self.chosen, self.name_for, self.host = databases, chosen, name_for, host

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static("Copy one database out of the recovered cluster", classes="dialog-title")
            yield Static(f"Into the live server {self.host}, as a new database (nothing existing is changed).")
            yield Select([(d, d) for d in self.databases], value=self.chosen, allow_blank=False, id="copy-db")
            yield Input(value=self.name_for(self.chosen), id="copy-name")
            yield Static("", id="copy-problem")
            yield Static("Enter copies · Esc cancels; nothing has been changed yet", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#copy-name", Input).focus()

    @on(Select.Changed, "#copy-db")
    def _database(self, event: Select.Changed) -> None:
        self.query_one("#copy-name", Input).value = self.name_for(str(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        name = event.value.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            self.query_one("#copy-problem", Static).update(
                f"FAIL: {name!r} is not a plain database name (letters, digits, _; at most 63)")
            return
        self.dismiss((str(self.query_one("#copy-db", Select).value), name))

    def action_cancel(self) -> None:
        self.dismiss(None)


class PitrScreen(OpsScreen):
    """Recover to a moment (issue 15): choose, recover in a worker, then copy out / keep / discard."""

    SCREEN_NAME = "Recover to a moment"
    DEFAULT_CSS = """
    PitrScreen #pitr-title { height: auto; padding: 0 1; text-style: bold; }
    PitrScreen #pitr-form { height: auto; padding: 0 1; }
    PitrScreen .pitr-row { height: 1; }
    PitrScreen .pitr-label { width: 11; text-style: bold; }
    PitrScreen RadioSet { layout: horizontal; border: none; height: 1; width: 1fr; padding: 0; background: $surface; }
    PitrScreen RadioSet:focus { background: $boost; }
    PitrScreen RadioSet > RadioButton { width: auto; height: 1; padding: 0 1 0 0; background: transparent; border: none; }
    PitrScreen #pitr-value { border: none; height: 1; padding: 0; width: 1fr; background: $boost; }
    PitrScreen #pitr-value:focus { background: $accent 30%; }
    PitrScreen #pitr-problem { height: auto; padding: 0 1; }
    PitrScreen #pitr-plan { height: 1fr; padding: 0 1; border-top: solid $primary-darken-1; }
    PitrScreen #pitr-run { height: auto; }
    PitrScreen #log { height: 1fr; border-top: solid $primary-darken-1; }
    PitrScreen #pitr-run #steps { margin: 0; }
    PitrScreen #replay { height: 1; padding: 0 1; }
    PitrScreen #pitr-done { height: 1fr; padding: 0 1; border-top: solid $primary-darken-1; }
    PitrScreen #pitr-summary { height: auto; max-height: 3; padding: 0 1; text-style: bold; }
    """
    BINDINGS: ClassVar = [
        # priority: Enter starts from any field (the value box would take it as "submit").
        Binding("enter", "start_recovery", "Recover", priority=True, id="pitr.start"),
        Binding("c", "copy_out", "Copy db out", id="pitr.copy_out"),
        # "recover_tables": a destructive action by name, so a read-only console offers it nowhere.
        Binding("t", "recover_tables", "Tables", id="pitr.tables"),
        Binding("k", "keep_cluster", "Keep as server", id="pitr.keep"),
        Binding("x", "discard_cluster", "Discard", id="pitr.discard"),
        Binding("escape", "close", "Back", id="pitr.close"),
    ]

    HELP_KEYS: ClassVar = [("space", "pick: latest / a time / an LSN / a transaction; just before / including"),
                           ("tab", "next field (shift+tab: back)")]

    def __init__(self, target_name: str | None = None, *, kind: str = "latest", value: str = "",
                 exclusive: bool = True, note: str = "", autostart: bool = True) -> None:
        super().__init__()
        self.target_name = target_name
        self.kind = kind if kind in KINDS else "latest"
        self.initial_value = value
        self.exclusive = exclusive
        self.note = note  # where the target came from ("the accident: DROP of public.orders")
        self.autostart = autostart
        self.phase = "choose"  # choose, recovering, recovered, copying, failed, discarding, closed
        self.status: Any = None  # PitrStatus, read once from the archive
        self.status_error: str | None = None
        self.target: Any = None  # the RecoveryTarget being recovered to
        self.cluster: Any = None  # the ScratchCluster while it exists
        self.databases: list[str] = []
        self.heartbeat: Any = None
        self.kept = False
        self.copies: list[Any] = []  # CopyOutResult, in order
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.reached = 0  # replay LSN, as an integer
        self.phase_seconds: dict[str, float] = {}  # fetch_base, replay: each phase's time against the RTO
        self.recovery_seconds = 0.0  # Enter to a queryable cluster (the RTO clock goes on through a copy-out)

    # -- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="pitr-title")
        with Vertical(id="pitr-form"):
            with Horizontal(classes="pitr-row"):
                yield Static("Recover to", classes="pitr-label")
                with RadioSet(id="pitr-kind"):
                    for kind in KINDS:
                        yield RadioButton(KIND_LABEL[kind], value=kind == self.kind, id=f"kind-{kind}")
            with Horizontal(classes="pitr-row"):
                yield Static("Target", classes="pitr-label")
                yield Input(value=self.initial_value, placeholder=PLACEHOLDER[self.kind], id="pitr-value")
            with Horizontal(classes="pitr-row"):
                yield Static("Stop", classes="pitr-label")
                with RadioSet(id="pitr-stop"):
                    yield RadioButton("just before it", value=self.exclusive, id="stop-before")
                    yield RadioButton("including it", value=not self.exclusive, id="stop-including")
        yield Static("", id="pitr-problem")
        with VerticalScroll(id="pitr-plan"):
            yield Static("Reading the archive… (base backups, archived WAL)", id="pitr-plan-text")
        with Vertical(id="pitr-run"):
            yield StepList(id="steps")
            yield Static("", id="replay")
            yield BudgetBar(id="budget")
            yield TransferBar(id="transfer")
        yield RichLog(id="log", max_lines=2000, wrap=True, markup=False, highlight=False)
        with VerticalScroll(id="pitr-done"):
            yield Static("", id="pitr-done-text")
        yield Static("", id="pitr-summary")
        yield Footer(compact=True)

    def _live(self) -> Any:
        return self.ops.settings.target(self.target_name)

    def subtitle(self) -> str:
        production = f" · PRODUCTION {self._live().name}" if self._production() else ""
        return super().subtitle() + production

    def _production(self) -> bool:
        try:
            return bool(self._live().production)
        except Exception:  # noqa: BLE001 - an unknown target name is reported when it is used
            return False

    def on_mount(self) -> None:
        # (Textual runs OpsScreen.on_mount too: handlers are called along the MRO.)
        if self._production():
            self.add_class("-production")
        live = self._live()
        self.query_one("#pitr-title", Static).update(truncate_middle(
            f"Recover {self.ops.settings.pitr.server_name}'s archive into a scratch cluster · live: "
            f"{live.dbname} on {live.display_host}:{live.display_port}", 78))
        self._show("choose")
        self._value_box_for(self.kind)
        self.set_interval(0.5, self._tick)
        self.query_one("#pitr-value" if self.kind != "latest" else "#pitr-kind").focus()
        self._summary("Space picks · Tab moves · Enter recovers (live server untouched) · Esc back")
        if self.autostart:
            self.read_archive()

    def _show(self, phase: str) -> None:
        # After the recovery the replay line and the RTO clock stay above the outcomes, which time
        # each phase; the step list belongs to the run in progress (a copy-out brings its own steps).
        views = {"choose": ("pitr-form", "pitr-problem", "pitr-plan"), "run": ("pitr-run", "steps", "transfer", "log"),
                 "done": ("pitr-run", "pitr-done")}
        shown = views["choose" if phase == "choose" else "run" if phase in ("recovering", "failed", "copying")
                      else "done"]
        for name in ("pitr-form", "pitr-problem", "pitr-plan", "pitr-run", "steps", "transfer", "log", "pitr-done"):
            self.query_one(f"#{name}").display = name in shown
        # A hidden field must not keep the focus: it would swallow the outcome keys (c, k, x) as text.
        self.query_one("#pitr-form").disabled = "pitr-form" not in shown

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self._show(phase)
        self.refresh_bindings()

    def _summary(self, text: str | Text) -> None:
        self.query_one("#pitr-summary", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if super().check_action(action, parameters) is False:
            return False
        alive = self.cluster is not None and self.phase == "recovered"
        allowed = {
            "start_recovery": self.phase == "choose",
            "copy_out": alive,
            "recover_tables": alive,
            "keep_cluster": alive and not self.kept,
            "discard_cluster": alive,
        }
        return allowed.get(action, True)

    # -- choosing --------------------------------------------------------------------------
    def _value_box_for(self, kind: str) -> None:
        box = self.query_one("#pitr-value", Input)
        box.placeholder = PLACEHOLDER[kind]
        box.disabled = kind == "latest"
        self.query_one("#pitr-stop", RadioSet).disabled = kind == "latest"

    @on(RadioSet.Changed, "#pitr-kind")
    def _kind_changed(self, event: RadioSet.Changed) -> None:
        self.kind = KINDS[event.index]
        self._value_box_for(self.kind)
        if self.kind != "latest":
            self.query_one("#pitr-value", Input).focus()
        self._show_plan()

    @on(RadioSet.Changed, "#pitr-stop")
    def _stop_changed(self, event: RadioSet.Changed) -> None:
        self.exclusive = event.index == 0
        self._show_plan()

    @on(Input.Changed, "#pitr-value")
    def _value_changed(self, _event: Input.Changed) -> None:
        self.query_one("#pitr-problem", Static).update("")
        self._show_plan()

    def _parsed(self) -> Any:
        return parse_target(self.kind, self.query_one("#pitr-value", Input).value, self.exclusive,
                            self.ops.now().tzinfo)

    @work(thread=True, exclusive=True, group="pitr-status", exit_on_error=False)
    def read_archive(self) -> Any:
        from opstower_core.pitr import pitr_status

        return pitr_status(self.ops.settings, self._live())

    def show_status(self, status: Any) -> None:
        self.status, self.status_error = status, None
        self._show_plan()

    def _show_plan(self) -> None:
        """The base backup the recovery starts from and the WAL it replays (pure: from the status read once)."""
        if self.phase != "choose" or not self.is_mounted:
            return
        text = self.query_one("#pitr-plan-text", Static)
        if self.status is None:
            text.update(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), self.status_error) if self.status_error
                        else Text("Reading the archive… (base backups, archived WAL)"))
            return
        st = self.status
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        if self.note:
            grid.add_row("From", self.note)
        window = (f"{st.earliest:%Y-%m-%d %H:%M:%S} → {st.latest:%Y-%m-%d %H:%M:%S %z}"
                  if st.earliest and st.latest else "none yet (no base backup, or no archived WAL)")
        grid.add_row("Window", window + (f"  {len(st.gaps)} gap(s): recovery stops at the first" if st.gaps else ""))
        try:
            target = self._parsed()
        except TargetProblem as problem:
            grid.add_row("Target", Text(str(problem), style="italic"))
            text.update(grid)
            return
        grid.add_row("Target", self._describe(target))
        from opstower_core.errors import OpsError
        from opstower_core.pitr.recover import choose_backup  # pure: picks from the list read above

        try:
            backup = choose_backup(st.backups, target)
        except OpsError as exc:
            grid.add_row("Base", Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), exc.what))
            text.update(grid)
            return
        ended = f"{backup.end_time:%Y-%m-%d %H:%M:%S}" if backup.end_time else "?"
        grid.add_row("Base", f"{backup.backup_id}, ended {ended}" + (f", {_size(backup.size)} to download"
                                                                         if backup.size else ""))
        grid.add_row("WAL", self._wal_line(backup, target))
        live = self._live()
        grid.add_row("RTO", f"{clock(live.rto_minutes * 60)} for {live.name}; the clock starts at Enter")
        grid.add_row("Then", "copy one database out under a new name, or keep the cluster as the "
                             "replacement server; the live server is untouched until you choose")
        if problem := window_problem(target, st):
            grid.add_row("", Text(problem, style=STATUS_STYLE["WARN"]))
        text.update(grid)

    def _describe(self, target: Any) -> str:
        words = target.describe()
        if target.time is not None and not self._typed_zone():
            words += f" (no zone typed: read as the console's UTC{target.time:%z})"
        return words

    def _typed_zone(self) -> bool:
        value = self.query_one("#pitr-value", Input).value.strip()
        return bool(re.search(r"([+-]\d\d(:?\d\d)?|Z)$", value))

    def _wal_line(self, backup: Any, target: Any) -> str:
        st = self.status
        if not backup.begin_wal or not st.latest_segment:
            return "no archived WAL listed"
        first = segment_number(backup.begin_wal)
        if target.lsn is not None:
            last = lsn_int(target.lsn) // SEGMENT_BYTES
            upto = f"up to LSN {target.lsn}"
        else:
            last = segment_number(st.latest_segment)
            upto = "to the end of the archive" if target.time is None and target.xid is None else \
                "at most to the end of the archive"
        count = max(last - first + 1, 1)
        return f"from {backup.begin_wal}, {upto}: {count} segment(s), ≤ {_size(count * SEGMENT_BYTES)}"

    # -- recovering ------------------------------------------------------------------------
    def action_start_recovery(self) -> None:
        if self.phase != "choose":
            return
        if self.ops.read_only:
            self.notify("Recover to a moment is not offered: this console was opened read-only",
                        title="Read-only", severity="warning")
            return
        if self.refused_for_target(self._live().name, "Recover to a moment"):
            return
        problem_line = self.query_one("#pitr-problem", Static)
        try:
            target = self._parsed()
        except TargetProblem as problem:
            problem_line.update(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), str(problem)))
            return
        if problem := window_problem(target, self.status):
            problem_line.update(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), problem))
            return
        if self._production():
            from opstower_tui.dialogs.confirm import TypedConfirmDialog

            live = self._live()
            self.app.push_screen(TypedConfirmDialog(
                live.dbname, f"Recover the archive of PRODUCTION {live.name} ({live.display_host}) to "
                f"{target.describe()} in a scratch cluster on this host. The live server is not changed by the "
                "recovery.", "Confirm point-in-time recovery (PRODUCTION)"),
                lambda typed: self._begin(target) if typed else self.notify(
                    "Recovery not started; nothing was changed", title="Recover to a moment"))
            return
        self._begin(target)

    def _begin(self, target: Any) -> None:
        self.enter_run_view(target)
        self.recover()

    def enter_run_view(self, target: Any) -> None:
        """The steps as WAIT, the replay line and the RTO clock running: what the operator watches."""
        self.target = target
        steps = self.query_one("#steps", StepList)
        steps.set_steps(STEPS)
        self.query_one("#budget", BudgetBar).set_budget(self._live().rto_minutes * 60)
        self.started_at, self.ended_at = self.ops.monotonic(), None
        self._set_phase("recovering")
        self.set_focus(None)
        self._replay_line()
        self._summary(f"Recovering to {target.describe()}… it cannot be interrupted safely; the live server is "
                      "not touched")

    @work(thread=True, exclusive=True, group="pitr-run", exit_on_error=False)
    def recover(self) -> Any:
        from opstower_core.pitr import read_heartbeat, recover_to

        live = self._live()
        cluster = recover_to(self.ops.settings, live, self.target, lambda e: self.post_message(EngineEvent(e, "pitr")))
        # From here the cluster is the screen's to discard, even if reading it below fails.
        self.cluster = cluster
        self.databases = _databases(cluster)
        try:
            self.heartbeat = read_heartbeat(cluster.target(live.dbname)) if live.dbname in self.databases else None
        except Exception:  # noqa: BLE001 - a heartbeat is a bonus (only servers with `pitr heartbeat` have one)
            self.heartbeat = None
        return cluster

    @on(EngineEvent)
    def apply_event(self, message: EngineEvent) -> None:
        from opstower_core.events import StepFinished, StepProgress

        event = message.event
        if isinstance(event, StepProgress) and event.unit == "lsn":
            self.reached = event.done
            self._replay_line()
            return
        if isinstance(event, StepFinished) and event.step in ("fetch_base", "replay"):
            self.phase_seconds[event.step] = event.seconds
        show_event(event, self.query_one("#steps", StepList), self.query_one("#log", RichLog),
                   self.query_one("#transfer", TransferBar), self.ops.monotonic())

    def _replay_line(self) -> None:
        """`Replay  LSN 0/B000190 reached / 0/C000000 archive end  ███░ 92%`: LSN reached / target."""
        line = self.query_one("#replay", Static)
        if self.target is None:
            return
        reached = lsn_text(self.reached) if self.reached else "-"
        goal = lsn_int(self.target.lsn) if self.target.lsn else self._archive_end()
        # A time or a transaction has no LSN before replay finds it: the end of the archive bounds it.
        what = "target" if self.target.lsn else "archive end"
        head = f"Replay  LSN {reached} reached" + (f" / {lsn_text(goal)} {what}" if goal else "")
        if goal and self.reached:
            share = min(self.reached / goal, 1.0)
            line.update(Text.assemble(head, "  ", (bar(share, 10), "cyan"), f" {share * 100:3.0f}%"))
        else:
            line.update(head)

    def _archive_end(self) -> int:
        st = self.status
        if st is None or not st.latest_segment:
            return 0
        return (segment_number(st.latest_segment) + 1) * SEGMENT_BYTES

    def show_recovered(self, cluster: Any) -> None:
        self._set_phase("recovered")
        self._render_outcomes()

    def _render_outcomes(self) -> None:
        cluster, live = self.cluster, self._live()
        lines: list[Text] = []
        took = self.phase_seconds
        phases = (f" (download {took['fetch_base']:.1f}s, replay {took['replay']:.1f}s)"
                  if {"fetch_base", "replay"} <= took.keys() else "")
        lines.append(Text.assemble(("PASS ", STATUS_STYLE["PASS"]), f"Recovered {self.target.describe()}: "
                                   f"{cluster.reached or 'promoted'} (base {cluster.backup_id}){phases}; "
                                   f"{clock(self.recovery_seconds)} since Enter"))
        for copy in self.copies:
            lines.append(Text.assemble(("PASS ", STATUS_STYLE["PASS"]), f"Copied into {copy.database} on "
                                       f"{live.display_host}:{live.display_port} in {copy.seconds:.1f}s: {copy.proof}"))
        if self.kept:
            lines.append(Text("Kept as the replacement server:", style="bold"))
            lines += [Text(step) for step in cluster.replacement_steps()]
        else:
            lines.append(Text("c  copy a database out into the live server, new name, with its proof"))
            lines.append(Text("t  take tables back from it into the live database (table recovery)"))
            lines.append(Text("k  keep this cluster as the replacement server (complete server failure)"))
            lines.append(Text("x  discard it (stop it, delete its directory) when you are done"))
            lines.append(Text(f"The cluster: 127.0.0.1:{cluster.port}, data {cluster.pgdata}; databases: "
                              f"{', '.join(self.databases) or '-'}", style="dim"))
        if self.heartbeat is not None:
            lines.append(Text(f"Heartbeat in the recovered data: {self.heartbeat:%Y-%m-%d %H:%M:%S %z}", style="dim"))
        self.query_one("#pitr-done-text", Static).update(Text("\n").join(lines))
        if self.kept:
            self._summary(f"Kept: running on port {cluster.port} · x discard it · Esc back (it stays)")
        else:
            self._summary("What next? c copy a db out · t tables · k keep as server · x discard it")

    # -- outcomes --------------------------------------------------------------------------
    def _copy_name(self, dbname: str) -> str:
        stamp = f"{self.target.xid}" if self.target is not None and self.target.xid else self.ops.now().strftime(
            "%Y%m%d%H%M%S")
        return f"{dbname[:40]}_pitr_{stamp}"

    def action_copy_out(self) -> None:
        if self.cluster is None or self.phase != "recovered":
            return
        if self.ops.read_only:
            self.notify("Copy out is not offered: this console was opened read-only",
                        title="Read-only", severity="warning")
            return
        live = self._live()
        if self.refused_for_target(live.name, "Copying a database into the live server"):
            return
        if not self.databases:
            self.notify("The recovered cluster holds no database to copy", severity="warning")
            return
        chosen = live.dbname if live.dbname in self.databases else self.databases[0]
        self.app.push_screen(CopyOutDialog(self.databases, chosen, self._copy_name,
                                           f"{live.display_host}:{live.display_port}"), self._copy_chosen)

    def _copy_chosen(self, choice: tuple[str, str] | None) -> None:
        if choice is None:
            return
        dbname, name = choice
        if self._production():
            from opstower_tui.dialogs.confirm import TypedConfirmDialog

            self.app.push_screen(TypedConfirmDialog(
                name, f"Create database {name} on PRODUCTION {self._live().display_host} with {dbname} as it was "
                f"{self.target.describe()}. Nothing existing is changed.", "Confirm copy out (PRODUCTION)"),
                lambda typed: self._copy(dbname, name) if typed else None)
            return
        self._copy(dbname, name)

    def _copy(self, dbname: str, name: str) -> None:
        self._set_phase("copying")
        self.query_one("#steps", StepList).set_steps([])  # the copy-out's own steps (dump, load, proof)
        self.query_one("#log", RichLog).clear()
        self.ended_at = None
        self._summary(f"Copying {dbname} out into {name}… then its proof")
        self.copy_out(dbname, name)

    @work(thread=True, exclusive=True, group="pitr-run", exit_on_error=False)
    def copy_out(self, dbname: str, name: str) -> Any:
        from opstower_core.restore import copy_from_cluster

        return copy_from_cluster(self.ops.settings, self.cluster, dbname, self._live(), name,
                                 lambda e: self.post_message(EngineEvent(e, "pitr")))

    def action_recover_tables(self) -> None:
        """Table recovery (merge / replace / copy) from the recovered cluster into the live database."""
        if self.cluster is None or self.phase != "recovered":
            return
        live = self._live()
        if self.refused_for_target(live.name, "Table recovery"):
            return
        if live.dbname not in self.databases:
            self.notify(f"The recovered cluster has no database {live.dbname}: copy one out instead (c)",
                        severity="warning")
            return
        self.list_tables(live.dbname)

    @work(thread=True, exclusive=True, group="pitr-tables", exit_on_error=False)
    def list_tables(self, dbname: str) -> tuple[str, dict[str, int]]:
        """The recovered database's tables with their row estimates (exact counts could take minutes)."""
        from opstower_core.pg.tools import connect

        with connect(self.cluster.target(dbname)) as conn:
            rows = conn.execute(
                "SELECT n.nspname || '.' || c.relname, c.oid::regclass::text, c.reltuples FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                "ORDER BY 1").fetchall()
            # Counted where cheap or never analyzed (-1); the planner's estimate for the big ones.
            return dbname, {name: int(conn.execute(f"SELECT count(*) FROM {reg}").fetchone()[0])
                            if n < 1_000_000 else int(n) for name, reg, n in rows}

    def _open_table_recovery(self, dbname: str, tables: dict[str, int]) -> None:
        from opstower_core.pitr import PitrSource
        from opstower_tui.screens.recover import RecoverScreen

        source = PitrSource(self.cluster, dbname, self.target.describe())
        self.app.push_screen(RecoverScreen(None, self.target_name, source=source, tables=tables),
                             lambda _outcomes: self._render_outcomes() if self.cluster is not None else None)

    def action_keep_cluster(self) -> None:
        if self.cluster is None or self.phase != "recovered" or self.kept:
            return
        self.kept = True
        self.cluster.keep()  # never taken for a dead run's leftover by a later recovery
        self.refresh_bindings()
        self._render_outcomes()
        self.notify(f"The recovered cluster keeps running on 127.0.0.1:{self.cluster.port}", title="Kept")

    def action_discard_cluster(self) -> None:
        if self.cluster is None or self.phase != "recovered":
            return
        from opstower_tui.dialogs.confirm import YesNoDialog

        self.app.push_screen(YesNoDialog(f"Stop the recovered cluster on port {self.cluster.port} and delete "
                                         f"{self.cluster.directory}?", "Discard the recovered cluster"),
                             lambda yes: self._discard(close=False) if yes else None)

    def _discard(self, close: bool) -> None:
        self._set_phase("discarding")
        self._summary("Discarding the recovered cluster… (stop, then delete its directory)")
        self.discard(close)

    @work(thread=True, exclusive=True, group="pitr-run", exit_on_error=False)
    def discard(self, close: bool) -> bool:
        self.cluster.discard()
        return close

    def action_close(self) -> None:
        if self.phase in ("recovering", "copying", "discarding"):
            self.notify("Wait for it to finish: stopping halfway would leave a half-made cluster or copy",
                        severity="warning")
            return
        if self.cluster is not None and not self.kept:
            from opstower_tui.dialogs.confirm import ChoiceDialog

            self.app.push_screen(ChoiceDialog(
                "The recovered cluster is still running",
                f"On 127.0.0.1:{self.cluster.port}, data {self.cluster.pgdata}.",
                [("x", "discard", "discard it: stop it and delete its directory"),
                 ("k", "keep", "keep it running as the replacement server (its steps are shown)")]),
                self._leave_as)
            return
        if self.cluster is not None and self.kept:
            self.notify(f"The recovered cluster keeps running on 127.0.0.1:{self.cluster.port}, data "
                        f"{self.cluster.pgdata}", title="Still running", timeout=30)
        self.phase = "closed"
        self.dismiss(self.copies)

    def _leave_as(self, choice: str | None) -> None:
        if choice == "discard":
            self._discard(close=True)
        elif choice == "keep":
            self.action_keep_cluster()

    def on_unmount(self) -> None:
        # The console quits with the cluster neither kept nor discarded: discard it, off the
        # event loop and beyond the screen's life (a non-daemon thread ends before the process).
        if self.cluster is not None and not self.kept and self.phase != "discarding":
            threading.Thread(target=self.cluster.discard, name="pitr-discard", daemon=False).start()

    # -- results of the workers ------------------------------------------------------------
    def work_done(self, name: str, result: Any) -> None:
        if name == "read_archive":
            self.show_status(result)
        elif name == "list_tables":
            self._open_table_recovery(*result)
        elif name == "recover":
            self.ended_at = self.ops.monotonic()
            self.recovery_seconds = self.ended_at - (self.started_at or self.ended_at)
            self._tick()
            self.show_recovered(result)
        elif name == "copy_out":
            self.ended_at = self.ops.monotonic()
            self._tick()
            self.copies.append(result)
            self._set_phase("recovered")
            self._render_outcomes()
            self.notify(f"{result.database}: {result.proof}", title="Copied out", timeout=15)
        elif name == "discard":
            port = self.cluster.port
            self.cluster = None
            self.notify(f"The recovered cluster (port {port}) was stopped and deleted", title="Discarded")
            if result:
                self.phase = "closed"
                self.dismiss(self.copies)
                return
            self._set_phase("recovered")
            self.query_one("#pitr-done-text", Static).update(Text.assemble(
                ("DONE ", STATUS_STYLE["PASS"]), "The recovered cluster was discarded. ",
                *(f"Copied: {c.database}. " for c in self.copies)))
            self._summary("Esc back")

    def work_failed(self, name: str, error: BaseException | None) -> bool | None:
        from opstower_tui.dialogs.error import sentence_of

        sentence = sentence_of(error) if error is not None else "Cancelled."
        if name == "read_archive":
            self.status_error = f"The archive could not be read: {sentence}"
            self._show_plan()
            return True
        if name == "recover":
            self.ended_at = self.ops.monotonic()
            self._tick()
            self.query_one("#steps", StepList).stop_running("FAIL", "stopped")
            if self.cluster is not None:  # recovered, then reading it failed: still the operator's to decide
                self._set_phase("recovered")
                self._render_outcomes()
                return None
            self._set_phase("failed")
            self._summary(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), sentence, "  Esc back"))
            return True
        if name == "copy_out":
            self.ended_at = self.ops.monotonic()
            self.query_one("#steps", StepList).stop_running("FAIL", "stopped")
            self._set_phase("recovered")
            self._render_outcomes()
            self._summary(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), sentence))
            return True
        if name == "discard":
            self._set_phase("recovered")
            self._summary(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), sentence))
            return True
        return None

    def _tick(self) -> None:
        if self.started_at is None:
            return
        end = self.ended_at if self.ended_at is not None else self.ops.monotonic()
        self.query_one("#budget", BudgetBar).set_elapsed(end - self.started_at)


def _databases(cluster: Any) -> list[str]:
    from opstower_core.pg.tools import connect

    with connect(cluster.target()) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' "
                            "ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def _size(n: int) -> str:
    from opstower_core.fmt import size

    return size(n)
