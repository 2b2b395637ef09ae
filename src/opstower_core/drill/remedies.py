"""The drill's next steps, said for the face in use (opstower_core.advice): a flag in the CLI, a
key or a field of the drill screens in the console (issue 16: no screen names a CLI flag)."""

from __future__ import annotations

from opstower_core.advice import Remedy, current_face

# Console keys are the drill screen's bindings (s start, c complete, k skip, p pause/resume,
# e export); the drill form is the one D opens for a new drill.
REMEDIES: dict[str, Remedy] = {
    "backup_or_choose": Remedy("take one with `opstower backup -d {db}` or pass --backup NAME",
                               "take one (b, Back up, on the Dashboard) or choose a backup in the drill form"),
    "custom_format_backup": Remedy("pass --backup with a .dump.zst backup",
                                   "choose a .dump.zst backup in the drill form"),
    "regular_backup": Remedy("drill with a regular backup (opstower list)",
                             "choose a regular backup in the drill form"),
    "skip_reason": Remedy("pass --reason TEXT", "type the reason when k (Skip) asks for it"),
    "choose_tables": Remedy("choose tables the backup holds (opstower drill start --table)",
                            "choose tables the backup holds in the drill form's Tables field"),
    "choose_other_tables": Remedy("choose the tables with --table", "choose the tables in the drill form's Tables field"),
    "export_report": Remedy("export its report with `opstower drill export {id} -o drill-{id}.md`",
                            "export its report with e (Export) on the drill screen"),
    "resume": Remedy("resume it: opstower drill resume {id}", "resume it with p (Pause/resume)"),
    "start_or_skip": Remedy("start it (opstower drill phase {id} start) or skip it with a reason",
                            "start it with s or skip it with k (a reason is asked)"),
    "start_first": Remedy("start it first (opstower drill phase {id} start) or skip it with a reason",
                          "start it first with s, or skip it with k (a reason is asked)"),
    "look_again": Remedy("look at `opstower drill status {id}` and repeat it",
                         "look at the drill screen again (it reloads) and repeat it"),
    "drill_list": Remedy("see `opstower drill list`", "open the drill screen (D): it lists the open drills"),
    "scenario_format": Remedy("fix the file (see `opstower drill scenarios --help` for the format)",
                              "fix the file (the format is described at the top of the built-in scenarios.toml)"),
    "scenario_list": Remedy("run `opstower drill scenarios`", "pick one of the scenarios the drill form lists"),
    # The console's only discard action is on the Restore screen, at the end of its own restore.
    "discard_old": Remedy("discard it with `opstower restore --discard-old {db}`",
                          "discard it from a terminal once it is no longer needed (the console discards only at "
                          "the end of a restore it ran)"),
}


def say(name: str, **values: object) -> str:
    """The drill remedy `name` for the face in use, its {names} filled from `values`."""
    return REMEDIES[name].text(current_face()).format(**values)
