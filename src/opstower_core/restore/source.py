"""The restore steps before the server is touched: verify the artifact, download it, ask the
operator, create missing roles, take the pre-restore backup."""

from __future__ import annotations

import dataclasses
from typing import Any

import humanize

from opstower_core.advice import say
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import Status, StepOutcome
from opstower_core.pg.admin import admin
from opstower_core.repo.catalog import CatalogEntry, fetch_s3_metadata
from opstower_core.repo.download import download
from opstower_core.restore.context import RunContext
from opstower_core.restore.roles import create_roles
from opstower_core.storage.s3 import store_for


class ConfirmDeclined(Cancelled):
    """The operator did not type the database name: nothing was changed (exit 1, like the reference)."""

    exit_code = 1

    def __init__(self) -> None:
        OpsError.__init__(self, "Restore cancelled: the name typed did not match the database name",
                          "nothing was changed")


class Interrupted(Cancelled):
    """Ctrl-C at the typed confirmation: nothing was changed (exit 130)."""

    def __init__(self) -> None:
        OpsError.__init__(self, "Restore interrupted at the confirmation", "nothing was changed")


def verify_artifact(ctx: RunContext, out: StepOutcome) -> None:
    from opstower_core.verify import verify

    res = verify(ctx.settings, ctx.entry, on_event=ctx.forward("verify"), cancel=ctx.cancel, state=ctx.state, upto=7)
    judge_verification(ctx, res, out)


def judge_verification(ctx: RunContext, res: Any, out: StepOutcome, in_load: bool = False) -> None:
    """The verification's verdict for the restore: raises OpsError on a failed check (before the
    server is touched, or, `in_load`, before the staging/new database is used: the run drops
    it); else fills `out`. An off-site copy check failure does not block a local restore."""
    r = ctx.reporter
    ctx.artifact_proof = res.proof  # digests and inventory of the artifact's own bytes, for verify_restored
    blocking = []
    for f in res.failed:
        if f.step == "s3" and not ctx.plan.download_key:
            # Off-site redundancy, not this artifact's integrity: we restore the verified local copy.
            r.log("verify", f"S3 copy check failed ({f.detail}); restoring the verified local copy", "WARN")
        else:
            blocking.append(f)
    replica, replica_note = None, None
    if blocking and ctx.plan.download_key and not in_load:
        # Issue 17: the primary S3 copy fails its checks; a replica copy that passes stands in.
        replica, replica_note = _replica_instead(ctx, blocking[0])
        if replica is not None:
            res, blocking = replica, []
    if blocking:
        f = blocking[0]
        hint = ""
        s3_copy_ok = any(x.step == "s3" and x.status == Status.PASS for x in res.results)
        if ctx.entry.local_path is not None and s3_copy_ok:
            hint += say("from_s3_hint")
        also = f"; {replica_note}" if replica_note else ""
        what = f"Backup verification failed: {f.title}: {f.detail}{also}"
        if in_load:
            from opstower_core.pg.load import FeedRefused

            raise FeedRefused(what, "", f"{say('list_backups')}{hint}")
        raise OpsError(what, "nothing was changed", f"{say('list_backups')}{hint}")
    counts = {s: sum(1 for x in res.results if x.status == s) for s in Status}
    warned = counts[Status.WARN] + len(res.failed)
    out.status = Status.WARN if warned else Status.PASS
    which = " (the replica copy: the primary copy failed its checks)" if replica is not None else ""
    out.detail = (f"Backup file verified{which}: {counts[Status.PASS]} checks passed, {warned} warnings, "
                  f"{counts[Status.SKIP]} skipped ({humanize.naturalsize(ctx.plan.artifact_size, binary=True)})")


def _replica_instead(ctx: RunContext, failed: Any) -> tuple[Any | None, str | None]:
    """Verify the replica's copy of the artifact; when it passes, the run restores it (ctx.entry then
    names only the replica copy, so the download reads it) and its verification is returned; else
    (None, why the replica copy could not stand in, or None when no replica is configured)."""
    from opstower_core.storage.replica import as_primary, replica_settings
    from opstower_core.verify import verify

    settings, r = ctx.settings, ctx.reporter
    if replica_settings(settings) is None or settings.s3.role == "replica" or not ctx.entry.name.conventional:
        return None, None
    rep = as_primary(settings)
    key = ctx.entry.replica_key or ctx.entry.name.s3_key(rep.s3.prefix)
    r.log("verify", f"The primary copy failed its checks ({failed.title}: {failed.detail}); "
          f"verifying the replica copy s3://{rep.s3.bucket}/{key}", "WARN")
    try:
        head = store_for(rep.s3).head(key)
    except OpsError as exc:
        return None, _said(r, f"the replica copy could not be checked ({exc.what})")
    if head is None:
        return None, _said(r, f"the replica holds no copy (s3://{rep.s3.bucket}/{key})")
    size = int(head["ContentLength"])
    entry = CatalogEntry(ctx.entry.name, size, s3_key=key, s3_size=size)
    fetch_s3_metadata(rep, entry)
    res = verify(rep, entry, on_event=ctx.forward("verify"), cancel=ctx.cancel, state=ctx.state, upto=7)
    if not res.ok:
        bad = res.failed[0]
        return None, _said(r, f"the replica copy fails its checks too ({bad.title}: {bad.detail})")
    ctx.artifact_proof = res.proof
    # The download reads the replica only: an entry whose one off-site copy is the replica's.
    ctx.entry = dataclasses.replace(entry, s3_key=None, s3_size=None, replica_key=key, replica_size=size)
    r.log("verify", f"Restoring the replica copy (s3://{rep.s3.bucket}/{key}): it passed the checks the primary "
          f"copy (s3://{settings.s3.bucket}/{ctx.plan.download_key}) failed; the primary copy is bad", "WARN")
    return res, None


def _said(r: Any, sentence: str) -> str:
    r.log("verify", sentence[0].upper() + sentence[1:], "ERROR")
    return sentence


def download_artifact(ctx: RunContext, out: StepOutcome) -> None:
    got = download(ctx.settings, ctx.entry, reporter=ctx.reporter, step="download")
    ctx.entry = got.entry
    ctx.reporter.log("download", "Download completed successfully")
    which = " from the replica" if got.source == "replica" else ""
    out.detail = (f"Downloaded {humanize.naturalsize(got.path.stat().st_size, binary=True)}{which} to {got.path} "
                  "(sha256 checked)" + (f"; the primary copy was not used ({got.fallback})" if got.fallback else ""))


def confirm_with_operator(ctx: RunContext, out: StepOutcome) -> None:
    live = ctx.live_db
    if ctx.confirm is None:
        raise OpsError(f"Replacing {live} needs the operator to type its name", "nothing was changed",
                       say("confirm_replace"))
    try:
        typed = ctx.confirm(ctx.plan)
    except KeyboardInterrupt:
        ctx.cancel.cancel()
        raise Interrupted() from None
    if (typed or "").strip() != live:
        raise ConfirmDeclined()
    out.detail = f"Confirmed: the operator typed {live}"


def create_missing_roles(ctx: RunContext, out: StepOutcome) -> None:
    """Create the roles the plan found missing, from the globals file; existing roles are left alone."""
    wanted = {name: sql for name, sql in ctx.roles.items() if name in ctx.plan.missing_roles}
    if not wanted:
        out.status = Status.WARN
        out.detail = "No role definitions to create (no globals file with this backup)"
        return
    with admin(ctx.target, ctx.live_db) as conn:
        created = create_roles(conn, wanted, ctx.reporter, "roles")
    out.detail = (f"Created {len(created)} role(s){': ' + ', '.join(created) if created else ''} without passwords "
                  f"(set them before the application connects); {len(wanted) - len(created)} existed meanwhile and "
                  "were left as they are")


def pre_restore_backup(ctx: RunContext, out: StepOutcome) -> None:
    # After a swap the database as it was is kept as old_db: the copy is taken from it, and named for it
    # (its own header names old_db, so its identity stays true).
    after = ctx.touched.done and ctx.plan.mode == "swap" and ctx.old_db
    db = ctx.old_db if after else ctx.live_db
    assert db is not None
    targets = dict(ctx.settings.targets)
    if not any(t.dbname == db and t.name == db for t in targets.values()):
        targets[db] = dataclasses.replace(ctx.target, name=db, dbname=db)
    bsettings = ctx.settings.with_changes(targets=targets, default_target=db)
    from opstower_core.backup import (  # imported here: a new-database restore needs none
        BackupOptions,
        run_backup,
    )

    ctx.pre_restore = run_backup(bsettings, db, BackupOptions(pre_restore=True),
                                 on_event=ctx.forward("pre_backup"), cancel=ctx.cancel, state=ctx.state)
    if not after:
        ctx.lock(db)  # from here no backup of this database may run until we are done
    size = humanize.naturalsize(ctx.pre_restore.meta["size_bytes"], binary=True)
    ctx.reporter.log("pre_backup", f"Pre-restore backup created: {ctx.pre_restore.path}")
    out.detail = f"Pre-restore backup created: {ctx.pre_restore.path} ({size})"
    out.data = {"artifact": ctx.pre_restore.name.filename}
