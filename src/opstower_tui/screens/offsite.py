"""The second off-site copy and the PITR set-up in the console: replicate (Y), base backup (B),
enable WAL archiving (E: its dry run first, `a` applies).

Each is a RunScreen whose job calls the engine in a worker thread (the engine is imported inside
the job, not before the first paint); what the CLI prints, the steps show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.binding import Binding

from opstower_tui.screens.run import RunScreen
from opstower_tui.widgets.step_list import StepList

Job = Callable[[Callable[[Any], None], Any], Any]


# -- replicate (`opstower replicate`) ------------------------------------------------------

def replicate_job(settings: Any) -> Job:
    """Every backup the replica lacks, then (with [pitr]) the base backups and WAL it lacks."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.errors import OpsError
        from opstower_core.events import Reporter, Status
        from opstower_core.storage.replica import catch_up, catch_up_pitr, replica_store

        reporter = Reporter(on_event, cancel)
        with reporter.step("replicate", "Copying the backups the replica lacks, checking each") as out:
            where = replica_store(settings).where  # one line when no [s3.replica] is configured
            report = catch_up(settings, None, lambda line: reporter.log("replicate", line),
                              cancel=lambda: cancel.cancelled)
            cancel.check("the copies made so far are on the replica and checked")
            out.status = Status.PASS if report.ok else Status.FAIL
            out.detail = f"{where}: {report.summary}"
            if report.primary_error:
                out.status = Status.WARN if report.ok else out.status
                reporter.log("replicate", f"the primary was not listed ({report.primary_error}); only local "
                             "backups were copied", level="WARN")
        pitr = None
        if settings.pitr.enabled:
            with reporter.step("replicate_pitr", "Copying the PITR base backups and WAL the replica lacks") as out:
                try:
                    pitr = catch_up_pitr(settings, lambda line: reporter.log("replicate_pitr", line),
                                         cancel=lambda: cancel.cancelled)
                except OpsError as exc:
                    out.status, out.detail = Status.FAIL, exc.sentence
                else:
                    out.status = Status.PASS if pitr is None or pitr.ok else Status.FAIL
                    out.detail = pitr.summary if pitr is not None else "nothing to copy"
        return report, pitr

    return job


def replicate_summary(result: Any) -> str:
    report, pitr = result
    ok = report.ok and (pitr is None or pitr.ok)
    text = f"{'PASS' if ok else 'FAIL'}: {report.summary}"
    if pitr is not None:
        text += f"; {pitr.summary}"
    return text


# -- base backup (`opstower base-backup`) ---------------------------------------------------

def base_backup_job(settings: Any, target_name: str | None) -> Job:
    """barman-cloud-backup of the target's server to S3; with a replica, the new base backup and WAL go there too."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.errors import OpsError
        from opstower_core.events import Reporter, Status
        from opstower_core.pitr import take_base_backup
        from opstower_core.storage.replica import catch_up_pitr, replica_settings

        backup = take_base_backup(settings, settings.target(target_name), on_event, cancel=cancel)
        if replica_settings(settings) is not None:
            reporter = Reporter(on_event, cancel)
            with reporter.step("replica", "Copying the base backup and WAL to the replica") as out:
                try:
                    report = catch_up_pitr(settings, lambda line: reporter.log("replica", line))
                except OpsError as exc:
                    # The base backup itself is good: only its second copy is missing.
                    out.status, out.detail = Status.FAIL, f"{exc.sentence}; the base backup is good"
                else:
                    out.status = Status.PASS if report is None or report.ok else Status.FAIL
                    out.detail = report.summary if report is not None else "nothing to copy"
        return backup

    return job


def base_backup_summary(backup: Any) -> str:
    return f"PASS: base backup {backup.backup_id} ({backup.size:,} bytes, WAL {backup.begin_wal}..{backup.end_wal})"


# -- enable WAL archiving (`opstower pitr enable`, then `--apply`) ---------------------------

def pitr_enable_job(settings: Any, target_name: str | None, apply: bool) -> Job:
    """The server's archive settings as steps (ok / to fix); with apply: the launcher written, ALTER SYSTEM, reload."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.events import Reporter, Status
        from opstower_core.pitr import enable

        reporter = Reporter(on_event, cancel)
        with reporter.step("inspect", "Applying the archive settings" if apply else
                           "Reading the server's archive settings (dry run: nothing is changed)") as out:
            report = enable(settings, settings.target(target_name), apply=apply)
            out.detail = (f"Server {report.server_version}, data directory {report.data_directory}, "
                          f"OS user {report.os_user}")
            for line in report.applied:
                reporter.log("inspect", f"applied: {line}")
        for c in report.checks:
            with reporter.step(f"check:{c.name}", c.name) as out:
                out.status = Status.PASS if c.ok else Status.WARN
                note = f" ({c.note})" if c.note else ""
                out.detail = f"{c.current or '(empty)'}; wanted: {c.wanted}{note}"
        if report.launcher_ok is not None:
            with reporter.step("launcher", f"launcher {report.launcher}") as out:
                out.status = Status.PASS if report.launcher_ok else Status.WARN
                out.detail = report.launcher_detail
        return report

    return job


def pitr_enable_summary(report: Any) -> str:
    restart = "archive_mode / wal_level take effect at the next server restart"
    if not report.applied:  # the dry run
        if report.ready:
            return "PASS: WAL archiving is on; nothing to change"
        return ("DRY RUN: nothing was changed; a applies the settings marked WARN"
                + (f" ({restart})" if report.restart_needed else ""))
    if report.restart_needed:
        return f"APPLIED: a server restart is needed: {restart}"
    if report.ready:
        return "PASS: WAL archiving is on"
    return "FAIL: applied, but a setting still differs: see the steps"


class PitrEnableScreen(RunScreen):
    """E on the Dashboard: what `pitr enable` would change, then `a` to apply it (typed confirmation
    on a production target: ALTER SYSTEM and a reload of its server)."""

    SCREEN_NAME = "Enable PITR"
    BINDINGS: ClassVar = [
        Binding("a", "apply_pitr_enable", "Apply", id="pitr_enable.apply"),
    ]

    def __init__(self, settings: Any, target_name: str | None) -> None:
        super().__init__("Enable WAL archiving: dry run (nothing is changed)",
                         pitr_enable_job(settings, target_name, apply=False), summary=pitr_enable_summary)
        self.settings = settings
        self.target_name = target_name
        self.applied = False

    def _target(self) -> Any:
        return self.settings.targets.get(self.target_name or self.settings.default_target)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not super().check_action(action, parameters):
            return False
        if action == "apply_pitr_enable":
            report = self.result
            return (self.finished and not self.applied and report is not None and not report.ready
                    and not self.settings.pitr.read_only)
        return True

    def work_done(self, name: str, result: Any) -> None:
        super().work_done(name, result)
        self.refresh_bindings()

    def work_failed(self, name: str, error: BaseException | None) -> None:
        super().work_failed(name, error)
        self.refresh_bindings()

    def action_apply_pitr_enable(self) -> None:
        target = self._target()
        if target is None or self.refused_for_target(target.name, "Enabling PITR"):
            return
        server = f"{target.display_host}:{target.display_port}"
        question = (f"Write the archive launcher and set wal_level, archive_mode, archive_command and "
                    f"archive_timeout on {server} (ALTER SYSTEM, then a reload)?")

        def answered(yes: object) -> None:
            if not yes:
                self.notify("Nothing was changed", title="Enable PITR")
                return
            self.applied = True
            self.job = pitr_enable_job(self.settings, self.target_name, apply=True)
            self.query_one("#run-name").update(f"Enable WAL archiving on {server}: applying")
            self.query_one("#steps", StepList).set_steps([])
            self.refresh_bindings()
            self.start()

        if target.production:
            from opstower_tui.dialogs.confirm import TypedConfirmDialog

            self.app.push_screen(TypedConfirmDialog(target.dbname, f"PRODUCTION {target.name}: {question}",
                                                    "Enable PITR (PRODUCTION)"), answered)
            return
        from opstower_tui.dialogs.confirm import YesNoDialog

        self.app.push_screen(YesNoDialog(question, "Enable PITR"), answered)
