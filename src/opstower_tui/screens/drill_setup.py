"""Start or resume a DR drill: open drills first (a dropped SSH session comes back here), then
a form for a new one: scenario, database, backup, participants, tables, keep databases.

Returns the drill id to show, or None. Scenarios, backups and the drill list are read in
thread workers; starting the drill (which resolves the backup, maybe in S3) is one too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, OptionList, Select, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from opstower_core.config import Settings

NEWEST = "__newest__"


class DrillSetup(Screen[int | None]):
    DEFAULT_CSS = """
    DrillSetup { padding: 0 1; }
    DrillSetup .setup-title { text-style: bold; height: 1; }
    DrillSetup #setup-open { height: auto; max-height: 6; border: none; }
    DrillSetup .setup-row { height: 1; margin: 0 0 1 0; }
    DrillSetup .setup-label { width: 14; text-style: bold; }
    DrillSetup .setup-row Select, DrillSetup .setup-row Input { width: 1fr; }
    DrillSetup #setup-problem { height: auto; color: $error; }
    DrillSetup #setup-start { margin: 0 0 0 14; }
    """
    BINDINGS: ClassVar = [
        Binding("escape", "back", "Back", id="drill.setup.back"),
        Binding("ctrl+s", "start", "Start drill", id="drill.setup.start"),
    ]

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        yield Static("Resume an open drill", classes="setup-title", id="setup-open-title")
        yield OptionList(id="setup-open")
        yield Static("Start a new DR drill", classes="setup-title")
        with Vertical():
            for label, widget in (
                ("Scenario", Select([], prompt="loading…", id="setup-scenario", compact=True, allow_blank=True)),
                ("Database", Select([(t, t) for t in sorted(self.settings.targets)], id="setup-database",
                                    compact=True, allow_blank=False, value=self._default_target())),
                ("Backup", Select([("newest backup not failing verification", NEWEST)], id="setup-backup",
                                  compact=True, allow_blank=False, value=NEWEST)),
                ("Participants", Input(placeholder="NAME:ROLE, NAME:ROLE (e.g. you:Drill lead)", id="setup-people",
                                       compact=True)),
                ("Tables", Input(placeholder="for table restores: public.orders, … (empty: all)",
                                 id="setup-tables", compact=True)),
            ):
                with Horizontal(classes="setup-row"):
                    yield Static(label, classes="setup-label")
                    yield widget
            yield Checkbox(self._keep_label(False), id="setup-keep", compact=True)
            yield Button("Start drill (ctrl+s)", id="setup-start", variant="primary", compact=True)
        yield Static("", id="setup-problem")
        yield Footer(compact=True)

    @staticmethod
    def _keep_label(keep: bool) -> str:
        # The word says the state: a compact checkbox differs by colour only.
        return f"Keep the drill databases at the end: {'YES' if keep else 'NO (dropped)'}"

    @on(Checkbox.Changed, "#setup-keep")
    def keep_changed(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = self._keep_label(event.value)

    def _default_target(self) -> str:
        names = sorted(self.settings.targets)
        return self.settings.default_target if self.settings.default_target in names else names[0]

    def on_mount(self) -> None:
        self.load_choices()
        self.load_backups(self._default_target())

    # -- workers ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="setup-load", exit_on_error=False)
    def load_choices(self) -> tuple[list[Any], list[Any]]:
        from opstower_core.drill import DrillStore, load_scenarios

        drills = [d for d in DrillStore(self.settings.state_dir).recent(50) if d.open]
        return list(load_scenarios(self.settings).values()), drills

    @work(thread=True, exclusive=True, group="setup-backups", exit_on_error=False)
    def load_backups(self, target: str) -> list[str]:
        from opstower_core.repo.catalog import list_catalog

        dbname = self.settings.target(target).dbname
        catalog = list_catalog(self.settings, database=dbname)
        return [e.filename for e in catalog.entries if not e.name.pre_restore][:50]

    @work(thread=True, exclusive=True, group="setup-start", exit_on_error=False)
    def start(self, scenario: str, target: str, options: Any) -> int:
        from opstower_core.drill import start_drill

        return start_drill(self.settings, scenario, target, options).drill.id

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        w = event.worker
        if event.state == WorkerState.ERROR and w.error is not None:
            self.query_one("#setup-problem", Static).update(
                f"FAIL  {getattr(w.error, 'sentence', None) or w.error}")
            return
        if event.state != WorkerState.SUCCESS:
            return
        if w.name == "load_choices":
            scenarios, drills = w.result
            select = self.query_one("#setup-scenario", Select)
            select.set_options([(f"{s.name} ({len(s.phases)} phases, {s.target_minutes:g} min)", s.id)
                                for s in scenarios])
            if scenarios:
                select.value = scenarios[0].id
            opened = self.query_one("#setup-open", OptionList)
            opened.clear_options()
            for d in drills:
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.started_at))
                opened.add_option(Option(f"#{d.id} {d.scenario.name} on {d.database}: {d.status.upper()} "
                                         f"since {since}", id=str(d.id)))
            if not drills:
                opened.display = False
                self.query_one("#setup-open-title", Static).update("No open drills to resume")
        elif w.name == "load_backups":
            select = self.query_one("#setup-backup", Select)
            select.set_options([("newest backup not failing verification", NEWEST), *[(n, n) for n in w.result]])
            select.value = NEWEST
        elif w.name == "start":
            self.dismiss(w.result)

    # -- events -------------------------------------------------------------------------------
    @on(Select.Changed, "#setup-database")
    def database_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.load_backups(event.value)

    @on(OptionList.OptionSelected, "#setup-open")
    def resume(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    @on(Button.Pressed, "#setup-start")
    def pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        from opstower_core.drill import DrillOptions, Participant
        from opstower_core.errors import OpsError

        scenario = self.query_one("#setup-scenario", Select).value
        target = self.query_one("#setup-database", Select).value
        if not isinstance(scenario, str) or not isinstance(target, str):
            self.query_one("#setup-problem", Static).update("FAIL  Choose a scenario and a database first.")
            return
        backup = self.query_one("#setup-backup", Select).value
        people = [p for p in self.query_one("#setup-people", Input).value.split(",") if p.strip()]
        tables = [t.strip() for t in self.query_one("#setup-tables", Input).value.split(",") if t.strip()]
        try:
            participants = [Participant.parse(p) for p in people]
        except OpsError as exc:
            self.query_one("#setup-problem", Static).update(f"FAIL  {exc.sentence}")
            return
        options = DrillOptions(backup=None if backup == NEWEST else str(backup), participants=participants,
                               tables=tables or None, keep_databases=self.query_one("#setup-keep", Checkbox).value)
        self.query_one("#setup-problem", Static).update("Starting the drill…")
        self.start(scenario, target, options)

    def action_back(self) -> None:
        self.dismiss(None)
