"""Copy one database out of a recovered (point-in-time) cluster into the live server, under a new name.

The same path and proof as a logical restore, so a PITR copy is trusted exactly as much:
1. the backup engine dumps the recovered database into a private temporary directory under
   the state dir (the usual artifact: zstd, sha256 at write time, row counts in the dump's
   snapshot, metadata), with its own history, lock and no S3, replica or alert;
2. the restore engine loads it in its new-database mode: checks 1-7 of the artifact (which
   also digest every table and read the object inventory), a staging database, the load,
   `verify.prove_restored` (per-table digests + inventory), ANALYZE/VACUUM, the rename;
   any failure drops the staging database, so no partial copy is left under any name;
3. the temporary directory is removed, whatever happened.
The recovered cluster is only read (pg_dump), never changed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opstower_core.advice import say
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.errors import Cancelled, OpsError, UsageError
from opstower_core.events import (
    CancelToken,
    Event,
    Reporter,
    Status,
)
from opstower_core.pg.admin import admin, db_exists, drop_database, free_name
from opstower_core.repo.holds import process_alive
from opstower_core.restore.model import RestoreOptions
from opstower_core.restore.plan import plan_restore
from opstower_core.restore.run import run_restore

if TYPE_CHECKING:  # only its type: the PITR modules load when a recovery runs, not with every restore
    from opstower_core.pitr import ScratchCluster

WORK_DIR = "pitr-copy"  # under the state dir: one private (0700) directory per copy-out, removed at its end


@dataclass(frozen=True)
class CopyOutResult:
    database: str  # the new database on the live server
    proof: str  # "N tables, M rows, digests equal, inventory equal (K objects)[; not compared: …]"
    seconds: float
    source: str = ""  # the database copied out of the recovered cluster
    proof_status: str = "PASS"  # PASS, or WARN when a table's digest could not be compared
    tables: int = 0
    rows: int = 0
    objects: int = 0
    not_compared: tuple[str, ...] = ()
    artifact_bytes: int = 0  # size of the temporary artifact (removed)
    phases: tuple[tuple[str, str, float], ...] = field(default=())  # (title, status, seconds), in order

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "source": self.source, "proof": self.proof,
                "proof_status": self.proof_status, "tables": self.tables, "rows": self.rows, "objects": self.objects,
                "not_compared": list(self.not_compared), "artifact_bytes": self.artifact_bytes,
                "seconds": round(self.seconds, 3),
                "phases": [{"title": t, "status": s, "seconds": round(x, 3)} for t, s, x in self.phases]}


def copy_from_cluster(settings: Settings, cluster: ScratchCluster, dbname: str, live: Target, name: str | None,
                      on_event: Callable[[Event], None] = lambda e: None,
                      cancel: CancelToken | None = None) -> CopyOutResult:
    """Copy `dbname` from the recovered cluster into a new database `name` on `live`'s server, proven.

    `name` None: `<dbname>_pitr_<YYYYMMDDHHMMSS>` (the first free variant). Raises OpsError on
    failure; then no database of the copy exists on the live server (unless the rollback itself
    failed, which the error says) and the cluster is as it was.
    """
    cancel = cancel or CancelToken()
    r = Reporter(on_event, cancel)
    started = time.monotonic()
    name = _new_name(live, dbname, name)
    work = _work_dir(settings)
    try:
        artifact, size = _dump(settings, cluster, dbname, work, r, cancel)
        restored = _load(settings, live, artifact, name, on_event, cancel)
    finally:
        _cleanup(work, r)
    proof = restored.proof
    phases = tuple((s.title, str(s.status), s.seconds) for s in [*r.results[:1], *restored.steps, *r.results[1:]])
    return CopyOutResult(name, proof.sentence, time.monotonic() - started, dbname, str(proof.status), proof.tables,
                         proof.rows, proof.objects, tuple(proof.not_compared), size, phases)


def _new_name(live: Target, dbname: str, name: str | None) -> str:
    """The copy's name on the live server: a database that does not exist yet (checked before any work)."""
    with admin(live, name or dbname) as conn:
        if name is None:
            return free_name(conn, f"{dbname}_pitr_{time.strftime('%Y%m%d%H%M%S')}")
        if db_exists(conn, name):
            raise UsageError(f"Database {name} already exists on {live.display_host}:{live.display_port}",
                             "nothing was copied; the recovered cluster is untouched",
                             say("copy_other_name"))
    return name


def _work_dir(settings: Settings) -> Path:
    """A private directory for the temporary artifact; those of killed copy-outs are removed first."""
    root = settings.state_dir / WORK_DIR
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("copy-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"copy-{os.getpid()}-", dir=root))  # mode 0700


def _dump(settings: Settings, cluster: ScratchCluster, dbname: str, work: Path, r: Reporter,
          cancel: CancelToken) -> tuple[Path, int]:
    """The backup engine's artifact of the recovered database, in `work`: (its path, its size)."""
    source = cluster.target(dbname)
    # A private world for this one artifact: its history, lock and retention stay in `work`; no S3
    # copy, replica or alert (it is not a backup of the live server); not encrypted by the config's
    # recipients (removed at the end, never leaves this machine, and this host may hold no identity).
    raw = {k: v for k, v in settings.raw.items() if k not in ("notify", "encryption", "s3")}
    private = settings.with_changes(backup_dir=work / "artifact", state_dir=work / "state", s3=S3Settings(),
                                    targets={source.name: source}, default_target=source.name, raw=raw)
    from opstower_core.backup import BackupOptions, run_backup  # imported here: only a copy-out dumps

    with r.step("copy_dump", f"Dumping {dbname} from the recovered cluster (backup engine, temporary artifact)") as out:
        try:
            backup = run_backup(private, source.name, BackupOptions(local_only=True), r.folded("copy_dump"), cancel)
        except Cancelled:
            raise
        except OpsError as exc:
            raise OpsError(f"Dumping {dbname} from the recovered cluster failed ({exc.what.rstrip('.')})",
                           "nothing was copied into the live server; the recovered cluster is untouched",
                           exc.next_step or f"fix the cause and retry, or {say('keep_cluster')}") from None
        size = backup.meta["size_bytes"]
        out.detail = (f"{backup.path.name}: {len(backup.meta['row_counts'])} tables, "
                      f"{sum(backup.meta['row_counts'].values()):,} rows, {size:,} bytes, sha256 {backup.meta['sha256'][:12]}…")
        out.data = {"artifact": str(backup.path), "size_bytes": size, "sha256": backup.meta["sha256"]}
    return backup.path, size


def _load(settings: Settings, live: Target, artifact: Path, name: str, on_event: Callable[[Event], None],
          cancel: CancelToken) -> Any:
    """The restore engine's new-database run; its steps are this copy-out's phases (events as they are)."""
    # The live target as given is the one restored into (it need not be a configured target).
    restore_settings = settings.with_changes(targets={**settings.targets, live.name: live})
    plan = plan_restore(restore_settings, str(artifact), live.name, RestoreOptions(target_db=name))
    if plan.mode != "new_db":  # created between our check and the plan: never replace anything
        raise OpsError(f"Database {name} appeared on {live.display_host} while the copy was prepared",
                       "nothing was copied into it; the recovered cluster is untouched", "choose another name")
    result = run_restore(restore_settings, plan, on_event=on_event, cancel=cancel)
    if result.status == "cancelled":
        raise Cancelled(f"{result.sentence.rstrip('.')}; the recovered cluster is untouched")
    if not result.ok:
        raise OpsError(f"Copying the recovered database into {name} failed", result.sentence.rstrip("."),
                       f"the recovered cluster is untouched: retry, or {say('keep_cluster_it')} and copy by hand")
    if result.proof is None or result.proof.status == Status.FAIL:
        # The restore ran without a proof (the artifact could not be digested): not a proven copy.
        with admin(live, name) as conn:
            drop_database(conn, name)
        raise OpsError(f"The copy {name} could not be proven equal to the recovered data",
                       f"{name} was dropped; the recovered cluster is untouched",
                       f"retry; if it repeats, {say('keep_cluster')} and copy by hand")
    return result


def _cleanup(work: Path, r: Reporter) -> None:
    with r.step("copy_cleanup", "Removing the temporary artifact") as out:
        shutil.rmtree(work, ignore_errors=True)
        if work.exists():
            out.status, out.detail = Status.WARN, f"{work} could not be removed entirely: remove it by hand"
        else:
            out.detail = f"{work} removed"
