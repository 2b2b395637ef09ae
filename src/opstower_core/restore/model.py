"""What a restore is made of: its options, the plan shown before anything happens, and the
result with its step table timed against the RTO."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opstower_core.config import Target
from opstower_core.errors import OpsError
from opstower_core.events import StepResult
from opstower_core.pg.admin import DbProps
from opstower_core.pg.load import LoadSpec
from opstower_core.pg.tools import PgTools
from opstower_core.repo.catalog import CatalogEntry

STEP_TITLES = {
    "verify": "Verifying backup file (checks 1-7)",
    "download": "Downloading backup from S3",
    "confirm": "Confirming with the operator",
    "roles": "Creating missing roles",
    "pre_backup": "Creating pre-restore backup of current database",
    "terminate": "Terminating existing database connections",
    "drop_create": "Creating the database to restore into",
    "restore": "Restoring database from backup",
    "verify_restored": "Verifying restored database",
    "analyze": "Analyzing database",
    "vacuum": "Vacuuming database",
    "reindex": "Reindexing database",
    "swap": "Switching the restored database into place",
}


# What each mode means, as the console and the CLI show it (the one copy).
class MissingRoles(OpsError):
    """The artifact needs roles the server lacks and no choice was made (create them, or --no-acl)."""

    def __init__(self, roles: list[str], what: str, state: str, nxt: str) -> None:
        super().__init__(what, state, nxt)
        self.roles = roles


MODE_TEXT: dict[str, str] = {
    "swap": "restore into a staging database, verify it, then swap names; the old database is kept until "
            "you discard it",
    "in_place": "drop and re-create the live database, then restore into it (for servers without room for two copies)",
    "new_db": "restore into a new database; the live one is not touched",
    "tables": "restore the chosen tables only",
}


def mode_text(plan: RestorePlan) -> str:
    """The plan's mode in one line, with its own database names."""
    return {
        "swap": f"safe swap (restore into {plan.work_db}, then rename; the old database is kept as {plan.old_db})",
        "in_place": "in place (drop and recreate; the pre-restore backup is the way back)",
        "new_db": f"new database {plan.live_db}",
        "tables": f"tables {', '.join(plan.options.tables or [])} into {plan.work_db}",
    }[plan.mode]


@dataclass
class RestoreOptions:
    from_s3: bool = False
    force: bool = False
    target_db: str | None = None
    in_place: bool = False
    tables: list[str] | None = None
    jobs: int | None = None
    create_roles: bool = False
    no_acl: bool = False  # restore without ownership and grants (chosen explicitly, reported)
    reindex: bool = False  # REINDEX after the load even where pg_restore has just built every index


@dataclass
class PlannedStep:
    id: str
    title: str
    commands: list[str]
    detail: str
    skip: str | None = None  # why this step will not run (it is reported as SKIP)
    # Steps this one runs beside (started in a thread, joined before the first step that touches the
    # live database): the RTO clock waits for it only where it outlasts them.
    parallel_with: list[str] = field(default_factory=list)
    # Runs after the switch, with the restored database already in service: off the RTO clock, and its
    # failure or cancel leaves the restore done (reported as WARN / SKIP), since nothing is left to undo.
    after_service: bool = False


@dataclass
class RestorePlan:
    entry: CatalogEntry
    target: Target
    live_db: str  # the database being replaced (or created)
    work_db: str  # where the artifact is loaded: staging / tables database
    mode: str  # "swap" | "in_place" | "new_db" | "tables"
    steps: list[PlannedStep]
    sessions: list[dict[str, Any]]  # pid, user, application, client, state, since
    artifact_size: int
    rto_minutes: int
    options: RestoreOptions = field(default_factory=RestoreOptions)
    old_db: str | None = None  # name the live database keeps after a swap
    live_exists: bool = False
    live_size: int | None = None
    uncompressed_size: int | None = None
    jobs: int = 1
    no_owner: bool = False
    roles: dict[str, list[str]] = field(default_factory=dict)  # from the globals file
    missing_roles: list[str] = field(default_factory=list)
    download_key: str | None = None
    download_dest: Path | None = None
    server_version: str = ""
    tools: PgTools | None = None
    notes: list[str] = field(default_factory=list)
    stamp: str = ""
    live_props: DbProps | None = None  # as read when planning; the run reads them again
    artifact_database: str = ""  # the database the artifact is a dump of
    identity_source: str = ""  # where that name was read: "archive header", "dump header", "metadata", "file name"
    left_out: str | None = None  # what --no-acl leaves out, said in the result
    statistics: int | None = None  # optimizer statistics entries the archive carries (None: not known / plain)
    forecast: Any = None  # forecast.RestoreForecast: this restore's time predicted from past restores
    physical: Any = None  # forecast.PhysicalOffer: a recovery to latest instead, offered or why not (None: no [pitr])
    # The artifact is verified in the same read as the load (new-database and swap modes, issue 18):
    # the verify step runs inside the restore step; a failed check drops the staging/new database.
    verify_in_load: bool = False

    @property
    def needs_confirmation(self) -> bool:
        return any(s.id == "confirm" and s.skip is None for s in self.steps)

    @property
    def load_spec(self) -> LoadSpec:
        # In committed blocks, each read for the proof beside the next one's load (issue 18): only into a
        # database nobody uses yet, and only when the dump's zone is recorded (the reads need it).
        blocks = self.mode in ("new_db", "swap") and bool((self.entry.meta or {}).get("dump_timezone"))
        return LoadSpec(self.entry.name, self.work_db, self.jobs, self.options.tables, self.no_owner, blocks=blocks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.entry.filename, "artifact_size": self.artifact_size, "mode": self.mode,
            "live_db": self.live_db, "work_db": self.work_db, "old_db": self.old_db, "live_exists": self.live_exists,
            "live_size": self.live_size, "uncompressed_size": self.uncompressed_size, "jobs": self.jobs,
            "host": self.target.display_host, "port": self.target.display_port, "server_version": self.server_version,
            "tools": f"{self.tools.version} ({self.tools.bin_dir})" if self.tools else None,
            "artifact_database": self.artifact_database, "identity_source": self.identity_source,
            "rto_minutes": self.rto_minutes, "sessions": self.sessions, "missing_roles": self.missing_roles,
            "needs_confirmation": self.needs_confirmation, "notes": self.notes,
            "verify_in_load": self.verify_in_load,
            "options": asdict(self.options),
            "forecast": self.forecast.as_dict() if self.forecast is not None else None,
            "physical": self.physical.as_dict() if self.physical is not None else None,
            "steps": [asdict(s) for s in self.steps],
        }


@dataclass
class RestoreResult:
    ok: bool
    plan: RestorePlan
    steps: list[StepResult]
    total_seconds: float
    rto_seconds: float
    margin_seconds: float  # the RTO minus the time until the restored database was in service
    old_database: str | None  # kept live copy after a swap, to keep or discard
    pre_restore_artifact: str | None
    sentence: str  # what happened, the state things are in, what to do next
    status: str = "success"  # success | failed | cancelled
    rolled_back: bool = False
    database: str | None = None  # the database now holding the restored data
    left_out: str | None = None  # what was deliberately not restored (--no-acl)
    proof: Any = None  # verify's ProofResult: the restored database compared with the artifact
    commands: list[Any] = field(default_factory=list)  # events.CommandRan: every command and changing statement
    service_seconds: float | None = None  # until the restored database was in service (the RTO clock); None: not yet

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "status": self.status, "artifact": self.plan.entry.filename, "mode": self.plan.mode,
            "database": self.database, "old_database": self.old_database,
            "pre_restore_artifact": self.pre_restore_artifact, "rolled_back": self.rolled_back,
            "left_out": self.left_out, "proof": _proof_dict(self.proof),
            "total_seconds": round(self.total_seconds, 3), "rto_seconds": self.rto_seconds,
            "service_seconds": None if self.service_seconds is None else round(self.service_seconds, 3),
            "margin_seconds": round(self.margin_seconds, 3),
            "steps": [{"step": s.step, "title": s.title, "status": s.status.value, "seconds": round(s.seconds, 3),
                       "cumulative": round(c, 3), "detail": s.detail,
                       **({"parallel_with": s.data["parallel_with"], "waited": s.data.get("waited", s.seconds)}
                          if s.data.get("parallel_with") else {}),
                       **({"after_service": True} if s.data.get("after_service") else {})}
                      for s, (_, _, c) in zip(self.steps, timing_table(self), strict=True)],
            "sentence": self.sentence,
            "commands": [{"step": c.step, "command": c.command, "started": c.started, "seconds": round(c.seconds, 3),
                          "outcome": c.outcome} for c in self.commands],
        }


def _proof_dict(proof: Any) -> dict[str, Any] | None:
    if proof is None:
        return None
    return {"status": str(proof.status), "sentence": proof.sentence, "differences": list(proof.differences),
            "not_compared": list(proof.not_compared)}


def timing_table(result: RestoreResult) -> list[tuple[str, float, float]]:
    """(step title, seconds, cumulative seconds) for each step run, in order.

    A step that ran beside others adds to the clock only the time the run waited for it; one that ran
    after the restored database was in service adds nothing."""
    rows, total = [], 0.0
    for s in result.steps:
        if s.data.get("after_service"):
            pass
        elif s.data.get("parallel_with"):
            total += float(s.data.get("waited", s.seconds))
        else:
            total += s.seconds
        rows.append((s.title, s.seconds, total))
    return rows
