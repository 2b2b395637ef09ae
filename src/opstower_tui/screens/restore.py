"""Restore wizard: the plan first, a typed confirmation, the steps live against the RTO budget.

Phases: plan (what will happen, commands, sessions that would be terminated) → typed
database name (modal) → run (steps, tools' output, RTO bar) → done (timing table, keep or
discard the old database) or failed (the engine's state sentence and the next step).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from opstower_core.fmt import duration, size
from opstower_tui.formatting import STATUS_STYLE, clock
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.bars import BudgetBar, TransferBar
from opstower_tui.widgets.event_view import show_event
from opstower_tui.widgets.step_list import StepList

MODES = ("swap", "in_place")


class RestoreScreen(OpsScreen):
    SCREEN_NAME = "Restore"
    BINDINGS: ClassVar = [
        Binding("enter", "start_restore", "Confirm & restore", id="restore.start"),
        Binding("m", "change_mode", "Swap / in place", id="restore.mode"),
        # Not in the footer (it would cut at 80 columns): the plan's last line names them, so do help and palette.
        Binding("i", "toggle_reindex", "Reindex on / off", show=False, id="restore.reindex"),
        Binding("n", "restore_elsewhere", "Into another database", show=False, id="restore.target_db"),
        Binding("k", "keep_old", "Keep old db", id="restore.keep"),
        Binding("x", "discard", "Discard old db", id="restore.discard"),
        Binding("escape", "cancel_or_close", "Cancel / back", id="restore.cancel"),
    ]

    def __init__(self, entry: Any, target_name: str | None = None, *, autostart: bool = True) -> None:
        super().__init__()
        self.entry = entry
        self.target_name = target_name
        self.autostart = autostart
        self.phase = "planning"  # planning, plan, running, done, failed
        self.mode = "swap"
        self.plan: Any | None = None
        self.result: Any | None = None
        self.typed_name: str | None = None
        self.cancel_token: Any = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.old_decided = False
        self.roles_choice: str | None = None  # "create_roles" or "no_acl", chosen when the plan asks
        self.reindex = False  # REINDEX after the load (pg_restore has just built every index: off by default)
        self.target_db: str | None = None  # restore under this name instead of the card's live database

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Restore {self.entry.filename}", id="restore-title")
        with VerticalScroll(id="plan-view"):
            yield Static("Planning… (reading the server: sessions, sizes, tools)", id="plan-text")
        with Vertical(id="run-view"):
            yield StepList(id="steps")
            yield BudgetBar(id="budget")
            yield TransferBar(id="transfer")
            yield RichLog(id="log", max_lines=5000, wrap=True, markup=False, highlight=False)
        with VerticalScroll(id="done-view"):
            yield DataTable(id="timing", show_cursor=False, zebra_stripes=False)
            yield Static("", id="done-text")
        yield Static("", id="restore-summary")
        yield Footer(compact=True)

    def _target(self) -> Any | None:
        return self.ops.settings.targets.get(self.target_name or self.ops.settings.default_target)

    def subtitle(self) -> str:
        target = self._target()
        production = f" · PRODUCTION {target.name}" if target is not None and target.production else ""
        return super().subtitle() + production

    def on_mount(self) -> None:
        # (Textual runs OpsScreen.on_mount too: handlers are called along the MRO.)
        target = self._target()
        if target is not None and target.production:
            self.add_class("-production")
        self.query_one("#timing", DataTable).can_focus = False  # the view around it scrolls
        self._show("plan-view")
        self.set_interval(0.5, self._tick)
        if self.autostart:
            self.make_plan()

    def _show(self, view: str) -> None:
        for name in ("plan-view", "run-view", "done-view"):
            self.query_one(f"#{name}").display = name == view

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if super().check_action(action, parameters) is False:
            return False
        has_old = self.result is not None and getattr(self.result, "old_database", None) and not self.old_decided
        allowed = {
            "start_restore": self.phase == "plan",
            "change_mode": self.phase == "plan",
            "toggle_reindex": self.phase == "plan",
            "restore_elsewhere": self.phase == "plan",
            "keep_old": self.phase == "done" and bool(has_old),
            "discard": self.phase == "done" and bool(has_old),
        }
        return allowed.get(action, True)

    # -- plan ------------------------------------------------------------------------------
    def options(self) -> Any:
        from opstower_core.restore import RestoreOptions

        return RestoreOptions(from_s3=self.entry.local_path is None, in_place=self.mode == "in_place",
                              create_roles=self.roles_choice == "create_roles", no_acl=self.roles_choice == "no_acl",
                              reindex=self.reindex, target_db=self.target_db)

    @work(thread=True, exclusive=True, group="restore-plan", exit_on_error=False)
    def make_plan(self) -> Any:
        from opstower_core.restore import plan_restore

        return plan_restore(self.ops.settings, self.entry, self.target_name, self.options())

    def show_plan(self, plan: Any) -> None:
        from opstower_core.restore import MODE_TEXT  # the engine is loaded by now: the plan came from it

        self.plan = plan
        self.query_one("#restore-title", Static).update(
            f"Restore {plan.entry.filename} → {plan.live_db} on {plan.target.display_host}:{plan.target.display_port}")
        if self.target_db:
            # Another database's name: say loudly which one is replaced or created, and that live is not.
            body_note = Text(f"Into {plan.live_db}, not {plan.target.dbname}: {plan.target.dbname} is not touched.",
                             style="bold")
        else:
            body_note = None
        body = Table.grid(padding=(0, 1))
        body.add_column(width=2, justify="right")
        body.add_column(no_wrap=False)
        body.add_row("", Text.assemble((f"Mode {plan.mode}", "bold"), f" · {size(plan.artifact_size)} · RTO "
                                       f"{duration(plan.rto_minutes * 60)}: {MODE_TEXT.get(plan.mode, '')}."))
        if body_note is not None:
            body.add_row("", body_note)
        body.add_row("", f"Reindex after the load: {'on' if plan.options.reindex else 'off'} (i)")
        if plan.work_db != plan.live_db:
            body.add_row("", f"Staging database: {plan.work_db}")
        # Who gets cut off comes first: it is what the operator must warn people about.
        sessions = list(plan.sessions or [])
        if sessions:
            body.add_row("", Text(f"WARN {len(sessions)} session(s) on {plan.live_db} would be terminated:",
                                  style=STATUS_STYLE["WARN"]))
            for s in sessions:
                body.add_row("", f"  pid {s.get('pid')}  {s.get('user', '')}  {s.get('application') or '-'}  "
                                 f"{s.get('client') or 'local'}  {s.get('state') or ''}  since {s.get('since') or '?'}")
        else:
            body.add_row("", f"No other sessions on {plan.live_db}: nobody is cut off.")
        for i, step in enumerate(plan.steps, 1):
            skip = getattr(step, "skip", None)
            if skip:
                body.add_row(str(i), Text.assemble((step.title, "dim"), "  ", ("SKIP", STATUS_STYLE["SKIP"]),
                                                   f" {skip}"))
                continue
            body.add_row(str(i), Text.assemble((step.title, "bold"), f"  {step.detail}" if step.detail else ""))
            for command in step.commands:
                body.add_row("", Text(f"$ {command}", style="dim"))
        for note in getattr(plan, "notes", None) or []:
            body.add_row("", Text(f"Note: {note}", style="italic"))
        self.query_one("#plan-text", Static).update(body)
        self.query_one("#plan-view").focus()  # arrows and PgDn scroll the plan
        self.query_one("#restore-summary", Static).update(
            "Enter: confirm by typing the name, then restore · m: swap / in place · i: reindex · n: into another "
            "database · Esc: back")
        self._set_phase("plan")

    def action_toggle_reindex(self) -> None:
        self.reindex = not self.reindex
        self._replan(f"Planning (reindex {'on' if self.reindex else 'off'})…")

    def action_restore_elsewhere(self) -> None:
        """Restore under another database's name (an existing one is what gets replaced; live is untouched)."""
        if self.ops.read_only or self.plan is None:
            return
        from opstower_tui.dialogs.name import DatabaseNameDialog

        target = self.plan.target
        where = f"{target.display_host}:{target.display_port}"

        def chosen(name: str | None) -> None:
            if name is None:
                return
            self.target_db = None if name in ("", target.dbname) else name
            self._replan(f"Planning (into {self.target_db or target.dbname} on {where})…")

        self.app.push_screen(DatabaseNameDialog(
            "Restore into another database",
            f"Restore {self.entry.filename} under this name on {where}. A new name is created; an existing database "
            f"of that name is what gets replaced. {target.dbname} is not touched.", self.target_db or ""), chosen)

    def _replan(self, text: str) -> None:
        self._set_phase("planning")
        self.query_one("#plan-text", Static).update(text)
        self.make_plan()

    def action_change_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)] if self.mode in MODES else "swap"
        self._replan(f"Planning ({self.mode})…")

    # -- confirm and run -------------------------------------------------------------------
    def action_start_restore(self) -> None:
        if self.ops.read_only or self.phase != "plan" or self.plan is None:
            return
        from opstower_tui.dialogs.confirm import TypedConfirmDialog

        plan = self.plan
        where = f"{plan.target.display_host}:{plan.target.display_port}"
        message = (f"Restore {plan.entry.filename} into {plan.live_db} on {where} ({plan.mode}). "
                   f"{len(plan.sessions or [])} session(s) will be terminated.")
        if plan.live_db != plan.target.dbname:
            message += f" {plan.target.dbname} on {where} is not touched."
        self.app.push_screen(TypedConfirmDialog(plan.live_db, message), self._confirmed)

    def _confirmed(self, typed: str | None) -> None:
        if typed is None:
            self.notify("Restore not started; nothing was changed", title="Restore")
            return
        self.start_run(typed)

    def start_run(self, typed: str) -> None:
        from opstower_core.events import CancelToken

        self.typed_name = typed
        self.cancel_token = CancelToken()
        self.enter_run_view()
        self.run_restore()

    def enter_run_view(self) -> None:
        """Steps of the plan as WAIT, the RTO budget running: what the operator watches."""
        assert self.plan is not None
        steps = self.query_one("#steps", StepList)
        steps.set_steps((s.id, s.title) for s in self.plan.steps)
        self.query_one("#budget", BudgetBar).set_budget(self.plan.rto_minutes * 60)
        self._show("run-view")
        self.started_at = self.ops.monotonic()
        self._set_phase("running")
        self.query_one("#restore-summary", Static).update("Restoring… Esc to cancel (stops at the next safe point)")

    @work(thread=True, exclusive=True, group="restore-run", exit_on_error=False)
    def run_restore(self) -> Any:
        from opstower_core.restore import run_restore
        from opstower_core.runs.history import StateStore

        settings = self.ops.settings
        return run_restore(settings, self.plan, confirm=lambda _plan: self.typed_name or "",
                           on_event=lambda e: self.post_message(EngineEvent(e, "restore")),
                           cancel=self.cancel_token, state=StateStore(settings.state_dir))

    @on(EngineEvent)
    def apply_event(self, message: EngineEvent) -> None:
        show_event(message.event, self.query_one("#steps", StepList), self.query_one("#log", RichLog),
                   self.query_one("#transfer", TransferBar), self.ops.monotonic())

    def show_result(self, result: Any) -> None:
        self.result = result
        self.ended_at = self.ops.monotonic()
        self._tick()
        steps = self.query_one("#steps", StepList)
        if not result.ok:
            steps.stop_running("FAIL", "stopped")
            self.query_one("#restore-summary", Static).update(
                Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), result.sentence, "  Esc to go back"))
            self._set_phase("failed")
            return
        from opstower_core.restore import timing_table

        table = self.query_one("#timing", DataTable)
        table.clear(columns=True)
        table.add_columns("Step", "", "Seconds", "Cumulative")
        for step, (title, seconds, cumulative) in zip(result.steps, timing_table(result), strict=True):
            word = step.status.value
            table.add_row(title, Text(word, STATUS_STYLE.get(word, "")), Text(f"{seconds:.1f}", justify="right"),
                          Text(clock(cumulative), justify="right"))
        within = result.margin_seconds >= 0
        lines = [Text.assemble(("PASS " if within else "WARN ", STATUS_STYLE["PASS" if within else "WARN"]),
                               f"restored in {clock(result.total_seconds)}; RTO {clock(result.rto_seconds)}, "
                               f"margin {clock(abs(result.margin_seconds))}{'' if within else ' over'}")]
        lines.append(Text(result.sentence))
        if result.pre_restore_artifact:
            lines.append(Text(f"Safety copy of the database as it was: {result.pre_restore_artifact}"))
        self.query_one("#done-text", Static).update(Text("\n").join(lines))
        self._show("done-view")
        self.query_one("#done-view").focus()  # arrows scroll the table and the sentence
        self._set_phase("done")
        self._old_db_prompt()

    def _old_db_prompt(self) -> None:
        old = getattr(self.result, "old_database", None)
        summary = self.query_one("#restore-summary", Static)
        if old and not self.old_decided:
            summary.update(f"The previous database is kept as {old}: k keep it, x discard it (DROP), Esc decide later")
        else:
            summary.update("Done. Esc to go back")

    def action_keep_old(self) -> None:
        self.old_decided = True
        old = self.result.old_database
        from opstower_core.advice import say

        self.notify(f"Kept {old}; {say('keep_old', db=old)}", title="Restore")
        self.refresh_bindings()
        self._old_db_prompt()

    def action_discard(self) -> None:
        if self.ops.read_only or self.result is None or not self.result.old_database:
            return
        from opstower_tui.dialogs.confirm import YesNoDialog

        old = self.result.old_database
        if self.has_class("-production"):
            # A production target: the way back is dropped only against the typed name.
            from opstower_tui.dialogs.confirm import TypedConfirmDialog

            self.app.push_screen(TypedConfirmDialog(old, f"Drop {old}, the production copy from before the restore? "
                                                    "It is the fastest way back.", "Discard old (PRODUCTION)"),
                                 lambda typed: self.discard_old(old) if typed else None)
            return
        self.app.push_screen(YesNoDialog(f"Drop database {old} (the copy from before the restore)?", "Discard old"),
                             lambda yes: self.discard_old(old) if yes else None)

    @work(thread=True, exclusive=True, group="restore-discard", exit_on_error=False)
    def discard_old(self, name: str) -> str:
        from opstower_core.restore import discard_old

        discard_old(self.ops.settings, name, self.target_name)
        return name

    # -- results of the workers --------------------------------------------------------------
    def _ask_about_roles(self, error: Any) -> None:
        from opstower_tui.dialogs.confirm import ChoiceDialog

        def chosen(choice: str | None) -> None:
            if choice is None:
                self.query_one("#plan-text", Static).update(
                    Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), error.sentence))
                self.query_one("#restore-summary", Static).update("Nothing was changed. Esc to go back")
                self._set_phase("failed")
                return
            self.roles_choice = choice
            self.make_plan()

        roles = ", ".join(error.roles)
        self.app.push_screen(ChoiceDialog(
            "Roles missing on the server",
            f"The backup's objects are owned by or granted to roles this server lacks: {roles}.",
            [("c", "create_roles", "create them from the backup's globals file (passwords are not carried: set "
                                   "them afterwards; existing roles are never altered)"),
             ("n", "no_acl", "restore without ownership and grants (the application may get 'permission "
                             "denied'; the result lists what was left out)")]), chosen)

    def work_done(self, name: str, result: Any) -> None:
        if name == "make_plan":
            self.show_plan(result)
        elif name == "run_restore":
            self.show_result(result)
        elif name == "discard_old":
            self.old_decided = True
            self.notify(f"Dropped {result}", title="Restore")
            self.refresh_bindings()
            self._old_db_prompt()

    def work_failed(self, name: str, error: BaseException | None) -> bool | None:
        from opstower_core.restore import MissingRoles
        from opstower_tui.dialogs.error import sentence_of

        if name == "make_plan" and isinstance(error, MissingRoles) and self.roles_choice is None:
            self._ask_about_roles(error)
            return True
        sentence = sentence_of(error) if error is not None else "Cancelled."
        if name == "make_plan":
            self.query_one("#plan-text", Static).update(Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), sentence))
            self.query_one("#restore-summary", Static).update("Nothing was changed. Esc to go back")
            self._set_phase("failed")
        elif name == "run_restore":
            self.ended_at = self.ops.monotonic()
            self.query_one("#steps", StepList).stop_running("FAIL", "stopped")
            self.query_one("#restore-summary", Static).update(
                Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), sentence, "  Esc to go back"))
            self._set_phase("failed")

    def _tick(self) -> None:
        if self.started_at is None:
            return
        end = self.ended_at if self.ended_at is not None else self.ops.monotonic()
        self.query_one("#budget", BudgetBar).set_elapsed(end - self.started_at)

    def action_cancel_or_close(self) -> None:
        if self.phase == "running":
            if self.cancel_token is not None and not self.cancel_token.cancelled:
                self.cancel_token.cancel()
                self.query_one("#restore-summary", Static).update(
                    "Cancelling… the engine stops at the next safe point and says what state things are in")
            return
        self.dismiss(self.result)
