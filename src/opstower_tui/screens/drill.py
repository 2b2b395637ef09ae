"""The DR drill screen: phases against their targets and the RTO, a timer readable at a glance.

`DrillScreen(settings, drill_id)` shows one drill; with `drill_id=None` it first offers the
open drills to resume and a form to start a new one (drill_setup.py). Every engine call
and every state-file write runs in a thread worker; the automated phases (restore,
selective restore, verify) stream the engine's events here and Esc cancels them. The
state file is polled, so a drill advanced from the CLI in another SSH session shows here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Digits, Footer, Input, Static

from opstower_tui.messages import EngineEvent
from opstower_tui.screens.base import OpsScreen
from opstower_tui.screens.drill_setup import DrillSetup

if TYPE_CHECKING:
    from opstower_core.config import Settings
    from opstower_core.drill import Drill

STYLE = {"PASS": "bold green", "WARN": "bold yellow", "FAIL": "bold red", "SKIP": "dim", "RUNNING": "bold cyan",
         "PENDING": "dim", "OVER": "bold red"}


def mmss(seconds: float | None) -> str:
    """Timer text: 03:10, 1:02:03."""
    if seconds is None:
        return "--:--"
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def timeline(drill: Drill, now: float, width: int) -> Text:
    """The drill against the RTO: used (█, red when over a phase's target), planned (▒), spare (░)."""
    rto = max(drill.rto_seconds_target, 1e-6)
    used = drill.rto_seconds(now)
    planned = sum(p.target_seconds for p in drill.phases if not p.done and p.status != "running")
    cur = drill.current
    if cur is not None and cur.status == "running":
        planned += max(0.0, cur.target_seconds - (drill.phase_seconds(cur, now) or 0.0))
    cells_used = min(width, round(used / rto * width))
    cells_plan = min(width - cells_used, round(planned / rto * width))
    over = any(drill.over_budget(p, now) for p in drill.phases)
    bar = Text("RTO ")
    bar.append("█" * cells_used, style="red" if used > rto or over else "green")
    bar.append("▒" * cells_plan, style="yellow")
    bar.append("░" * (width - cells_used - cells_plan), style="dim")
    # The same in words, so the bar never relies on colour or shape alone.
    def pct(x: float) -> str:  # fixed width, so a long overrun never wraps the line at 80 columns
        return f"{x:4.0%}" if x < 9.995 else ">999%"

    bar.append(f" {pct(used / rto)} used {pct(planned / rto)} plan")
    if used > rto:
        bar.append(" OVER", style="bold red")
    return bar


class TextPrompt(ModalScreen[str | None]):
    """One line of text (a skip reason, a report path); Esc returns None."""

    DEFAULT_CSS = """
    TextPrompt { align: center middle; }
    TextPrompt > Vertical { width: 70; height: auto; border: round $accent; padding: 0 1; background: $surface; }
    TextPrompt Input { margin: 1 0 0 0; }
    """
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel", id="drill.prompt.cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static("Enter to confirm, Esc to cancel", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class DrillScreen(OpsScreen):
    """One drill, live. Keys: s start, c complete, k skip, p pause/resume, n note, l lesson, e export."""

    DEFAULT_CSS = """
    DrillScreen #drill-head { height: 1; padding: 0 1; }
    DrillScreen #drill-title { width: 1fr; text-style: bold; }
    DrillScreen #drill-state { width: auto; }
    DrillScreen #drill-objectives { height: 1; padding: 0 1; }
    DrillScreen #drill-rpo-basis { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    DrillScreen #drill-timeline { height: 1; padding: 0 1; }
    DrillScreen #drill-phases { height: 1fr; min-height: 5; }
    DrillScreen #drill-current { height: 3; padding: 0 1; }
    DrillScreen #drill-timer { width: auto; min-width: 14; }
    DrillScreen #drill-timer-note { width: 1fr; padding: 0 0 0 2; }
    DrillScreen #drill-activity { height: 1; padding: 0 1; color: $text-muted; }
    DrillScreen #drill-note { border: none; height: 1; padding: 0 1; background: $boost; }
    DrillScreen #drill-note:focus { background: $accent 30%; }
    DrillScreen #drill-log { height: 1; padding: 0 1; }
    """
    BINDINGS: ClassVar = [
        Binding("s", "start_phase", "Start", id="drill.start"),
        Binding("c", "complete_phase", "Complete", id="drill.complete"),
        Binding("k", "skip_phase", "Skip", id="drill.skip"),
        Binding("p", "pause_resume", "Pause/resume", id="drill.pause"),
        Binding("n", "note", "Note", id="drill.note"),
        Binding("l", "lesson", "Lesson", show=False, id="drill.lesson"),
        Binding("e", "export", "Export", id="drill.export"),
        Binding("escape", "cancel_or_back", "Cancel/back", id="drill.back"),
    ]
    # Greyed out until a drill is loaded.
    NEEDS_DRILL = frozenset({"start_phase", "complete_phase", "skip_phase", "pause_resume", "note", "lesson", "export"})

    def __init__(self, settings: Settings, drill_id: int | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.drill_id = drill_id
        self.drill: Drill | None = None
        self.cancel_token: Any = None
        self.engine_running = False
        self.note_mode = "note"
        self.last_event = ""

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="drill-head"):
            yield Static("DR drill", id="drill-title")
            yield Static("", id="drill-state")
        yield Static("", id="drill-objectives")
        # What the RPO figure rests on: measured by a recovery to latest, or assumed from the dump's age.
        yield Static("", id="drill-rpo-basis")
        yield Static("", id="drill-timeline")
        table: DataTable = DataTable(id="drill-phases", cursor_type="row", zebra_stripes=False)
        table.add_columns("#", "Phase", "Target", "Actual", "Cumul.", "Status")
        yield table
        with Horizontal(id="drill-current"):
            yield Digits("--:--", id="drill-timer")
            yield Static("", id="drill-timer-note")
        yield Static("", id="drill-activity")
        yield Input(placeholder="n: note for the current phase, Enter to save", id="drill-note")
        yield Static("", id="drill-log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh_view)
        self.set_interval(1.0, self.poll)
        if self.drill_id is None:
            self.app.push_screen(DrillSetup(self.settings), self._setup_done)
        else:
            self.load(self.drill_id)

    def _setup_done(self, drill_id: int | None) -> None:
        if drill_id is None:
            self.dismiss_or_pop()
        else:
            self.drill_id = drill_id
            self.load(drill_id)

    def dismiss_or_pop(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    # -- read-only and availability ----------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not super().check_action(action, parameters):
            return False
        if action in self.NEEDS_DRILL and self.drill is None:
            return None  # shown greyed out until a drill is loaded
        return True

    # -- workers ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="drill-load", exit_on_error=False)
    def load(self, drill_id: int) -> Drill:
        from opstower_core.drill import DrillRunner

        return DrillRunner.open(self.settings, drill_id).drill

    @work(thread=True, exclusive=True, group="drill-poll", exit_on_error=False)
    def poll(self) -> Drill | None:
        """Reload when the state file changed: another process (the CLI, another console) or our own
    engine worker saved the drill (the running phase then shows with its timer)."""
        if self.drill is None:
            return None
        from opstower_core.drill import DrillStore

        store = DrillStore(self.settings.state_dir)
        if store.version(self.drill.id) == self.drill.version:
            return None
        return store.load(self.drill.id)

    @work(thread=True, exclusive=True, group="drill-op", exit_on_error=False)
    def operate(self, op: str, *args: Any) -> Drill:
        """One runner operation; automated phases run the engine here, streaming its events."""
        from opstower_core.drill import DrillRunner
        from opstower_core.events import CancelToken

        assert self.drill is not None
        runner = DrillRunner.open(self.settings, self.drill.id)
        if op == "start":
            self.cancel_token = CancelToken()
            runner.start_phase(on_event=lambda e: self.post_message(EngineEvent(e, "drill")),
                               cancel=self.cancel_token)
        else:
            getattr(runner, op)(*args)
        return runner.drill

    @work(thread=True, exclusive=True, group="drill-export", exit_on_error=False)
    def export(self, path: str) -> str:
        from opstower_core.drill import export_report

        assert self.drill is not None
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return str(export_report(self.settings, self.drill.id, path))

    def work_done(self, name: str, result: Any) -> None:
        if name == "operate":
            self.engine_running = False
        fresh = result if name in ("load", "operate", "poll") else None
        # A poll that started before an operation finished may carry an older version.
        if fresh is not None and (self.drill is None or name != "poll" or fresh.version >= self.drill.version):
            self.drill = fresh
            self.refresh_view()
            self.refresh_bindings()
        elif name == "export":
            self.notify(f"Report written to {result}", title="Drill report")

    def work_failed(self, name: str, error: BaseException | None) -> None:
        # The error itself reaches the operator through the app's error dialog (OpsScreen).
        if name == "operate":
            self.engine_running = False
            if error is not None and self.drill is not None:
                self.load(self.drill.id)

    # -- engine events --------------------------------------------------------------------------
    @on(EngineEvent)
    def engine_event(self, message: EngineEvent) -> None:
        from opstower_core.events import StepFinished, StepLog, StepProgress, StepStarted

        e = message.event
        if isinstance(e, StepStarted):
            self.last_event = f"{e.title}…" + (f" ({e.index}/{e.total})" if e.total else "")
        elif isinstance(e, StepFinished):
            self.last_event = f"{e.status}: {e.detail}"[:200]
        elif isinstance(e, StepLog):
            self.last_event = e.line[:200]
        elif isinstance(e, StepProgress) and e.total:
            self.last_event = f"{self.last_event.split(' [')[0]} [{e.done * 100 // max(e.total, 1)}%]"
        self.query_one("#drill-log", Static).update(Text(self.last_event, style="italic"))

    # -- actions ----------------------------------------------------------------------------------
    def _busy(self) -> bool:
        if self.engine_running:
            self.notify("An automated phase is running: wait for it or press Esc to cancel it", severity="warning")
            return True
        return self.drill is None

    def action_start_phase(self) -> None:
        if self._busy():
            return
        assert self.drill is not None
        cur = self.drill.current
        if cur is not None and cur.automated and self.drill.open and not self.drill.paused:
            self.engine_running = True
            self.last_event = f"Starting {cur.name}…"
            self.set_timer(0.3, self.poll)  # show it RUNNING with its timer as soon as it is saved
        self.operate("start")

    def action_complete_phase(self) -> None:
        if not self._busy():
            self.operate("complete_phase", None)

    def action_skip_phase(self) -> None:
        if self._busy():
            return

        def skip(reason: str | None) -> None:
            if reason:
                self.operate("skip_phase", reason)

        cur = self.drill.current if self.drill else None
        self.app.push_screen(TextPrompt(f"Skip {cur.name if cur else 'phase'}: why?", placeholder="reason"), skip)

    def action_pause_resume(self) -> None:
        if not self._busy():
            assert self.drill is not None
            self.operate("resume" if self.drill.paused else "pause")

    def action_note(self, mode: str = "note") -> None:
        self.note_mode = mode
        field = self.query_one("#drill-note", Input)
        field.placeholder = self._note_placeholder(mode)
        field.focus()

    def _note_placeholder(self, mode: str = "note") -> str:
        if mode == "lesson":
            return "Lesson learned, Enter to save"
        if self.drill is not None and not self.drill.open:
            return "The drill has ended: n adds a note to the report, l a lesson learned"
        return "n: note for the current phase, Enter to save"

    def action_lesson(self) -> None:
        self.action_note("lesson")

    @on(Input.Submitted, "#drill-note")
    def save_note(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        self.query_one("#drill-phases", DataTable).focus()
        if text and self.drill is not None:
            self.operate("add_note", text, self.note_mode == "lesson")
            self.note_mode = "note"

    def action_export(self) -> None:
        if self.drill is None:
            return
        # A reports directory named on screen, never the directory the console was started in.
        default = str(self.settings.state_dir / "reports" / f"drill-{self.drill.id}-{self.drill.scenario.id}.md")

        def chosen(path: str | None) -> None:
            if path:
                self.export(path)

        self.app.push_screen(TextPrompt("Export the drill report (markdown) to:", default), chosen)

    def action_cancel_or_back(self) -> None:
        if self.focused is self.query_one("#drill-note", Input):
            self.query_one("#drill-phases", DataTable).focus()
            return
        if self.engine_running and self.cancel_token is not None:
            self.cancel_token.cancel()
            self.notify("Cancelling the automated phase; what it started is rolled back", severity="warning")
            return
        self.dismiss_or_pop()

    # -- rendering --------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        import time

        from opstower_core.drill import phase_status
        from opstower_core.fmt import duration, minutes

        d = self.drill
        if d is None:
            return
        note = self.query_one("#drill-note", Input)
        if not note.has_focus:
            note.placeholder = self._note_placeholder()
        now = time.time()
        word = {"running": "RUNNING", "paused": "PAUSED", "passed": "PASSED", "failed": "FAILED",
                "aborted": "ABORTED"}[d.status] if d.status in ("running", "paused", "passed", "failed",
                                                                    "aborted") else d.status.upper()
        self.query_one("#drill-title", Static).update(f"Drill {d.id}: {d.scenario.name} on {d.database}")
        self.query_one("#drill-state", Static).update(
            Text(word, style={"PASSED": "bold green", "FAILED": "bold red", "PAUSED": "bold yellow"}.get(word, "bold")))
        s = d.summary(now)
        rto = Text(f"RTO {duration(s['rto_seconds'])} of {minutes(d.rto_minutes)} ")
        rto.append("MET" if s["rto_met"] else "MISSED", style="green" if s["rto_met"] else "bold red")
        rto.append(f"   RPO {duration(d.rpo_seconds)} of {minutes(d.rpo_minutes)} ")
        rto.append("MET" if d.rpo_met else "MISSED", style="green" if d.rpo_met else "bold red")
        rto.append(" measured" if d.rpo_measured else " assumed", style="bold" if d.rpo_measured else "yellow")
        self.query_one("#drill-objectives", Static).update(rto)
        self.query_one("#drill-rpo-basis", Static).update(Text(f"{d.rpo_basis}."))
        self.query_one("#drill-timeline", Static).update(timeline(d, now, max(10, self.size.width - 26)))

        table = self.query_one("#drill-phases", DataTable)
        row = table.cursor_row
        table.clear()
        for p in d.phases:
            status, note = phase_status(d, p, now)
            over = "OVER BUDGET" in note
            cell = Text(status, style=STYLE.get(status, ""))
            if note:
                cell.append(" " + ("OVER +" + note.split("by ")[-1] if over else note),
                            style="bold red" if over else "dim")
            spent = None if p.status == "SKIP" else d.phase_seconds(p, now)
            cum = p.clock_at_end if p.clock_at_end is not None else (d.clock(now) if p.status == "running" else None)
            name = p.name + ("" if p.kind == "manual" else " ⚙")
            table.add_row(str(p.idx + 1), name, minutes(p.target_minutes), duration(spent), duration(cum), cell)
        if row is not None and 0 <= row < table.row_count:
            table.move_cursor(row=row)

        cur = d.current
        timer = self.query_one("#drill-timer", Digits)
        note = self.query_one("#drill-timer-note", Static)
        activity = self.query_one("#drill-activity", Static)
        if cur is None:
            timer.update(mmss(d.clock(now)))
            note.update(Text(f"Drill ended: {word}. e exports the report.", style="bold"))
            activity.update("")
            return
        spent = d.phase_seconds(cur, now)
        timer.update(mmss(spent if spent is not None else 0))
        over = spent is not None and spent > cur.target_seconds
        info = Text(f"Phase {cur.idx + 1}/{len(d.phases)}: {cur.name}\n", style="bold")
        if cur.status == "running":
            info.append(f"of {minutes(cur.target_minutes)} target  ")
            info.append("OVER BUDGET" if over else f"{mmss(cur.target_seconds - (spent or 0))} left",
                        style="bold red" if over else "green")
        else:
            info.append(f"target {minutes(cur.target_minutes)}; ", style="")
            info.append("s starts it" + (" (runs the engine)" if cur.automated else ""), style="bold")
        if d.paused:
            info.append("  PAUSED (p resumes)", style="bold yellow")
        note.update(info)
        activity.update(cur.activities or cur.kind.replace("_", " "))
