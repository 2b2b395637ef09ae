"""The restore steps before anything on the server is touched: verify the artifact, download
it, ask the operator, create missing roles, take the pre-restore backup."""

from __future__ import annotations

import dataclasses
from typing import Any

import humanize

from opstower_core.artifacts.names import read_metadata, write_private
from opstower_core.backup import BackupOptions, run_backup
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import Status, StepOutcome
from opstower_core.pg.admin import admin
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.restore.checks import create_roles, existing_roles, parse_roles
from opstower_core.restore.plan import safe_destination, toc_owners
from opstower_core.storage.s3 import S3Store


class ConfirmDeclined(Cancelled):
    """The operator did not type the database name: nothing was changed (exit 1, like the reference)."""

    exit_code = 1

    def __init__(self) -> None:
        OpsError.__init__(self, "Restore cancelled: the name typed did not match the database name",
                          "nothing was changed")


class SourceSteps:
    """Mixin of RestoreRun (which provides settings, plan, reporter, cancel flag and locks)."""

    settings: Any
    p: Any
    r: Any
    cancel: Any
    state: Any
    entry: Any
    target: Any
    live: str
    confirm: Any
    roles: dict[str, list[str]]
    no_owner: bool
    pre_restore: Any

    def _verify(self, out: StepOutcome) -> None:
        from opstower_core.verify import verify

        res = verify(self.settings, self.entry, on_event=self._forward("verify"), cancel=self.cancel,
                     state=self.state, upto=7)
        blocking = []
        for f in res.failed:
            if f.step == "s3" and not self.p.download_key:
                # Off-site redundancy, not this artifact's integrity: we restore the verified local copy.
                self.r.log("verify", f"S3 copy check failed ({f.detail}); restoring the verified local copy", "WARN")
            else:
                blocking.append(f)
        if blocking:
            f = blocking[0]
            hint = ""
            s3_copy_ok = any(r.step == "s3" and r.status == Status.PASS for r in res.results)
            if self.entry.local_path is not None and s3_copy_ok:
                hint = " (or add --from-s3 to restore the S3 copy, which checked out)"
            raise OpsError(f"Backup verification failed: {f.title}: {f.detail}", "nothing was changed",
                           f"pick another backup (`opstower list`){hint}")
        counts = {s: sum(1 for x in res.results if x.status == s) for s in Status}
        warned = counts[Status.WARN] + len(res.failed)
        out.status = Status.WARN if warned else Status.PASS
        out.detail = (f"Backup file verified: {counts[Status.PASS]} checks passed, {warned} warnings, "
                      f"{counts[Status.SKIP]} skipped ({humanize.naturalsize(self.p.artifact_size, binary=True)})")

    def _download(self, out: StepOutcome) -> None:
        key, dest = self.p.download_key, self.p.download_dest
        assert key and dest
        store = S3Store(self.settings.s3)
        self.r.log("download", f"Downloading from: s3://{store.bucket}/{key}")
        self.r.log("download", f"Downloading to: {dest}")
        try:
            store.download(key, dest, progress=lambda d, t: self.r.progress("download", d, t),
                           cancel=lambda: self.cancel.cancelled)
        except OpsError:
            self.cancel.check("the partial download was removed; nothing was changed")
            raise
        folder = key.rsplit("/", 1)[0]
        name = self.entry.name
        extra = [name.meta_filename]
        gfile = (self.entry.meta or {}).get("globals_file")
        if gfile:
            extra.append(gfile)
        for fn in extra:
            try:
                data = store.get_bytes(f"{folder}/{fn}")
            except Exception:  # noqa: BLE001 - optional sidecars
                continue
            write_private(safe_destination(self.settings.backup_dir, fn), data)
        meta, problem = read_metadata(dest.with_name(name.meta_filename))
        self.entry = CatalogEntry(name, dest.stat().st_size, local_path=dest, s3_key=key, s3_size=self.entry.s3_size,
                                  meta=meta or self.entry.meta, meta_problem=problem)
        self.p.entry = self.entry
        self._refresh_roles()
        self.r.log("download", "Download completed successfully")
        out.detail = f"Downloaded {humanize.naturalsize(dest.stat().st_size, binary=True)} to {dest} (sha256 checked)"

    def _refresh_roles(self) -> None:
        """After a download: roles from the globals file, owners from the archive, as the plan does locally."""
        meta = self.entry.meta or {}
        gfile = meta.get("globals_file") if meta.get("globals_dumped") else None
        if gfile and not self.roles and (self.settings.backup_dir / gfile).is_file():
            self.roles = parse_roles((self.settings.backup_dir / gfile).read_text(encoding="utf-8", errors="replace"))
        with admin(self.target, self.live) as conn:
            have = existing_roles(conn)
        missing = {r for r in self.roles if r not in have}
        if self.entry.name.format == "custom" and not self.p.options.create_roles:
            missing |= toc_owners(self.settings, self.entry, self.p.tools, self.target) - have
            if missing and not self.no_owner:
                self.no_owner = True
                self.r.log("download", f"Roles missing on this server: {', '.join(sorted(missing))}; objects will be "
                           "owned by the restoring user (--no-owner --no-acl)", "WARN")
        self.p.missing_roles = sorted(missing)

    def _confirm(self, out: StepOutcome) -> None:
        if self.confirm is None:
            raise OpsError(f"Replacing {self.live} needs the operator to type its name", "nothing was changed",
                           "run it on a terminal, or pass --force")
        typed = self.confirm(self.p)
        if (typed or "").strip() != self.live:
            raise ConfirmDeclined()
        out.detail = f"Confirmed: the operator typed {self.live}"

    def _roles(self, out: StepOutcome) -> None:
        if not self.roles:
            out.status = Status.WARN
            out.detail = "No globals file with this backup (globals_dumped false): no roles to create"
            return
        with admin(self.target, self.live) as conn:
            created = create_roles(conn, self.roles, self.r, "roles")
            have = existing_roles(conn)
        if self.no_owner and self.entry.name.format == "custom":
            owners: set[str] = set()
            if self.entry.local_path is not None:
                owners = toc_owners(self.settings, self.entry, self.p.tools, self.target)
            if not (owners - have):
                self.no_owner = False  # every owner exists now: keep owners and privileges
        out.detail = (f"Created {len(created)} role(s){': ' + ', '.join(created) if created else ''}; "
                      f"{len(self.roles) - len(created)} existed and were left as they are")

    def _pre_backup(self, out: StepOutcome) -> None:
        tname = self.live
        targets = dict(self.settings.targets)
        if not any(t.dbname == self.live and t.name == tname for t in targets.values()):
            targets[tname] = dataclasses.replace(self.target, name=tname, dbname=self.live)
        bsettings = self.settings.with_changes(targets=targets, default_target=tname)
        self.pre_restore = run_backup(bsettings, tname, BackupOptions(pre_restore=True),
                                      on_event=self._forward("pre_backup"), cancel=self.cancel, state=self.state)
        self._lock(self.live)  # from here no backup of this database may run until we are done
        size = humanize.naturalsize(self.pre_restore.meta["size_bytes"], binary=True)
        self.r.log("pre_backup", f"Pre-restore backup created: {self.pre_restore.path}")
        out.detail = f"Pre-restore backup created: {self.pre_restore.path} ({size})"
        out.data = {"artifact": self.pre_restore.name.filename}

