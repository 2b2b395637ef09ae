"""DR drills: scenarios, operator-led or unattended runs, markdown reports."""

from .export import export_report
from .report import phase_status, render_drill_report
from .runner import DrillOptions, DrillRunner, start_drill
from .scenarios import (
    Phase,
    Scenario,
    ScenarioError,
    builtin_scenarios,
    find_scenario,
    load_scenarios,
    parse_scenarios,
    scenario_files,
)
from .state import RUNNING, Drill, DrillStore, Participant, PhaseRun

__all__ = [
    "Drill",
    "DrillOptions",
    "DrillRunner",
    "DrillStore",
    "Participant",
    "Phase",
    "PhaseRun",
    "RUNNING",
    "Scenario",
    "ScenarioError",
    "builtin_scenarios",
    "export_report",
    "find_scenario",
    "load_scenarios",
    "parse_scenarios",
    "phase_status",
    "render_drill_report",
    "scenario_files",
    "start_drill",
]
