"""What to do next, said in the words of the face the operator is using.

An engine sentence that ends with a next step reaches two faces: the CLI, where the step is a
command (`opstower verify latest --full-test`), and the console, where it is a key on a screen
("press t on the Dashboard"). The sentence names the remedy (`say("full_test")`); this module
says it for the face. The console's launcher sets the face once at start, process-wide: the
console's engine calls run in worker threads, which a context variable would not follow.

A leaf: it imports nothing of the engine, so any layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Face = Literal["cli", "console"]
FACES: tuple[Face, ...] = ("cli", "console")

_face: Face = "cli"


def set_face(face: Face) -> None:
    """Make every later sentence of this process speak to `face` (the console sets it once)."""
    global _face
    if face not in FACES:
        raise ValueError(f"unknown face {face!r}; one of {', '.join(FACES)}")
    _face = face


def current_face() -> Face:
    return _face


@dataclass(frozen=True)
class Remedy:
    """One next step, as each face offers it. Both texts are `str.format` templates over the
    same names ({db}, {artifact}, …) and read as the end of a sentence ("…: <remedy>")."""

    cli: str
    console: str

    def text(self, face: Face) -> str:
        return self.cli if face == "cli" else self.console


# Console keys are the defaults of the screens' bindings (remappable under [keys]); the screen is
# named with its key where it has one (1 Dashboard, 2 Backups).
REMEDIES: dict[str, Remedy] = {
    # -- backups ---------------------------------------------------------------------------
    "backup_now": Remedy("run `opstower backup`",
                         "press b (Back up) on the Dashboard (1)"),
    "backup_offsite": Remedy("run `opstower backup` without --local-only",
                             "press b (Back up) on the Dashboard (1): the console's backups go to S3 as well"),
    "replicate": Remedy("run `opstower replicate`", "press Y (Replicate) on the Dashboard (1)"),
    "list_backups": Remedy("pick another backup (`opstower list`)",
                           "pick another backup in Backups (2)"),
    # -- verify ----------------------------------------------------------------------------
    "full_test": Remedy("run `opstower verify latest --full-test`",
                        "press t (Full test) on the Dashboard (1)"),
    "full_test_of": Remedy("run `opstower verify {artifact} --full-test`",
                           "select {artifact} in Backups (2) and press t (Full test)"),
    "verify_of": Remedy("see `opstower verify {artifact}`",
                        "select {artifact} in Backups (2) and press v (Verify)"),
    "verify_any": Remedy("verify the older ones (`opstower verify NAME`)",
                         "verify the older ones (v on each in Backups (2))"),
    # -- restore ---------------------------------------------------------------------------
    "restore_latest": Remedy("restore the newest backup of {db} with `opstower restore latest -d {db} --force`",
                             "restore the newest backup of {db}: r (Restore) on its card on the Dashboard (1)"),
    "restore_other": Remedy("restore another backup of {db} with --force",
                            "restore another backup of {db}: select it in Backups (2) and press r (Restore)"),
    "restore_artifact": Remedy("restore it now with `opstower restore {artifact} --force`",
                               "restore it now: select {artifact} in Backups (2) and press r (Restore)"),
    "in_place": Remedy("restore with --in-place",
                       "restore in place (m on the Restore screen switches swap / in place)"),
    "create_roles": Remedy("add --create-roles to create them from the backup's globals file",
                           "choose c (create them from the backup's globals file) when the Restore screen asks"),
    "no_acl": Remedy("restore with --no-acl (without ownership and grants)",
                     "choose n (restore without ownership and grants) when the Restore screen asks"),
    # A kept database is discarded as the console's restore ends (x), or later on the Kept old
    # databases screen (K on the Dashboard), which lists every one a swap kept.
    "discard_old": Remedy("`opstower restore --discard-old {db}`",
                          "x (Discard old db) as the console's restore ends, or x on it in Kept old databases "
                          "(K on the Dashboard (1))"),
    "keep_old": Remedy("it stays until `opstower restore --discard-old {db}`",
                       "it stays until x on it in Kept old databases (K on the Dashboard (1))"),
    "list_old": Remedy("list them with `opstower restore --list-old`",
                       "see them in Kept old databases (K on the Dashboard (1))"),
    "recover_interrupted": Remedy("run `opstower restore --recover`",
                                  "press R (Recover interrupted restore) on the Dashboard (1)"),
    "recover_same_config": Remedy("run --recover with the configuration that restore used",
                                  "open the console with the configuration that restore used and press R on the "
                                  "Dashboard (1)"),
    # -- table recovery --------------------------------------------------------------------
    "table_recovery": Remedy("`opstower restore {artifact} --tables …`",
                             "T (Table recovery) on {artifact} in Backups (2)"),
    "table_list": Remedy("e.g. with `opstower verify ARTIFACT`'s table list",
                         "e.g. in the backup's table list (T on it in Backups (2) lists them)"),
    "tables_example": Remedy("e.g. --tables public.orders", "e.g. public.orders"),
    "recover_parent": Remedy("recover it with --tables {table}",
                             "recover it first: pick {table} on the Table recovery screen"),
    "recover_other_db": Remedy("to recover its tables into {db} anyway, add --target-db {db}",
                               "pick a backup of {db} in Backups (2) and press T (Table recovery)"),
    "recover_into_other": Remedy("choose another --into name",
                                 "rename or drop that live table first (the console names the copy <table>_restored)"),
    "recover_mode_copy": Remedy("recover with --mode copy and compare by hand",
                                "recover in mode copy (m on the Table recovery screen) and compare by hand"),
    "recover_mode_change": Remedy("change --mode, or leave the table out",
                                  "change the mode (m on the Table recovery screen), or leave the table out"),
    "recover_put_back": Remedy("`opstower restore {artifact} --tables … --mode replace` puts them back",
                               "Table recovery (T) on {artifact} in Backups (2), mode replace, puts them back"),
    "force_given": Remedy("--force given", "confirmed beforehand"),
    "confirm_on_terminal": Remedy("run it on a terminal, or pass --force",
                                  "confirm it on the Table recovery screen (Enter, then type the name)"),
    "take_backup": Remedy("take one with `opstower backup`", "take one with b (Back up) on the Dashboard (1)"),
    # -- names of options inside a sentence (not a step to take) -------------------------------
    "full_test_name": Remedy("verify --full-test", "the full test (t)"),
    "target_db_name": Remedy("--target-db", "a restore into another database (n on the Restore screen)"),
    "from_s3_restores": Remedy("restores --from-s3", "restores from S3"),
    "local_only_taken": Remedy("--local-only", "local only"),
    "opt_tables": Remedy("--tables", "Table recovery"),
    "opt_mode": Remedy("--mode {mode}", "mode {mode} (m)"),
    "opt_overwrite": Remedy("--overwrite-changed", "Overwrite changed (o)"),
    "opt_with_parents": Remedy("--with-parents", "With parents (p)"),
    "opt_into": Remedy("--into", "a name for the copy"),
    "opt_disable_triggers": Remedy("--disable-triggers",
                                   "the CLI's disable-triggers option (the console has no toggle for it)"),
    # -- the rest --------------------------------------------------------------------------
    "doctor": Remedy("`opstower doctor`", "press O for the doctor"),
    "health": Remedy("run `opstower health`", "press H (Health)"),
    "prune_dry_run": Remedy("`opstower prune --dry-run`", "Prune (P), which shows its dry run first"),
    "base_backup": Remedy("opstower base-backup", "B (Base backup) on the Dashboard (1)"),
    "pitr_enable": Remedy("`opstower pitr enable --apply`",
                          "E (Enable PITR) on the Dashboard (1): its dry run first, then a applies it"),
    # -- engine sentences of backup, repo, storage, pitr, copy-out (issue 16) -----------------
    # The console has no per-run lock wait: it reads wait_for_locks_seconds from the config at start.
    "wait_longer": Remedy("--wait-for-locks SECONDS waits longer",
                          "wait_for_locks_seconds in the config waits longer (read when the console starts)"),
    "wait_option_name": Remedy("--wait-for-locks", "wait_for_locks_seconds"),
    "backup_format": Remedy("use --format custom or plain", "use the custom or plain format"),
    "replicate_copies": Remedy("the next backup or `opstower replicate` copies it",
                               "the next backup copies it, or Y (Replicate) on the Dashboard (1) now"),
    "see_backups": Remedy("run `opstower list` to see the backups", "see the backups in Backups (2)"),
    "pick_backup": Remedy("pick a backup from `opstower list`", "pick a backup in Backups (2)"),
    "check_key": Remedy("check the key with `opstower list`", "check the key in Backups (2)"),
    "doctor_aside": Remedy("opstower doctor", "O, the doctor"),
    "base_backup_again": Remedy("fix the cause and run `opstower base-backup` again",
                                "fix the cause and press B (Base backup) on the Dashboard (1) again"),
    "base_backup_take": Remedy("take one: opstower base-backup",
                               "take one: B (Base backup) on the Dashboard (1)"),
    "pitr_status_retake": Remedy("run `opstower pitr status` and take another base backup",
                                 "look at the PITR line on the Dashboard (1) and take another base backup (B)"),
    "pitr_status": Remedy("check `opstower pitr status`", "check the PITR line on the Dashboard (1)"),
    "copy_other_name": Remedy("choose another name (--as NAME), or leave it out for a dated one",
                              "type another name in the copy dialog (c), or keep the dated one it offers"),
    "keep_cluster": Remedy("keep the cluster (--keep)", "keep the cluster (k, Keep as server, on the recovery screen)"),
    "keep_cluster_it": Remedy("keep it (--keep)", "keep it (k, Keep as server, on the recovery screen)"),
    # -- restore and verify sentences (issue 16) ---------------------------------------------
    "full_test_use": Remedy("use --full-test", "t (Full test) runs it"),
    "no_acl_aside": Remedy("--no-acl", "without ownership and grants"),
    # The console restores the local copy when there is one (it offers no from-S3 choice).
    "from_s3_hint": Remedy(" (or add --from-s3 to restore the S3 copy, which checked out)",
                           " (the S3 copy checked out: move the local file out of the backup directory and the "
                           "console restores the S3 copy)"),
    "confirm_replace": Remedy("run it on a terminal, or pass --force",
                              "confirm it on the Restore screen (Enter, then type the name)"),
    "other_target_db": Remedy("choose another --target-db", "choose another database name (n on the Restore screen)"),
}


def say(name: str, face: Face | None = None, **values: object) -> str:
    """The remedy `name` for `face` (default: the process's face), its {names} filled from `values`."""
    return REMEDIES[name].text(face or _face).format(**values)
