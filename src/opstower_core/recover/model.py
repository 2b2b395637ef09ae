"""What a table recovery is made of: its options, the preview (per table, before anything is
touched), and the result (per table, what was inserted, updated, replaced, and the proof)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from opstower_core.advice import say
from opstower_core.events import StepResult

MODES = ("merge", "replace", "copy")

MODE_TEXT = {
    "merge": "put back the backup's rows that are missing live; rows written since stay",
    "replace": "the table as it was in the backup; rows written since are removed",
    "copy": "the backup's table under another name, for a human to compare",
}

STEP_TITLES = {
    "verify": "Verifying backup file (checks 1-7)",
    "download": "Downloading backup from S3",
    "scratch": "Restoring the backup into a scratch database",
    "prove_scratch": "Proving the scratch copy against the backup",
    "preview": "Comparing the backup's rows with the live tables",
    "confirm": "Confirming with the operator",
    "pre_change": "Copying the live tables before the change",
    "apply": "Changing the live tables (one transaction)",
    "prove": "Proving the result, then committing",
    "cleanup": "Dropping the scratch database",
}

# What each action does to one table.
ACTIONS = {
    "merge": "insert the backup's rows missing live",
    "replace": "make the table equal to the backup's (delete, update, insert by key)",
    "restore": "restore the whole table (it does not exist live) with its indexes, constraints, triggers and grants",
    "copy": "create a copy of the backup's table under another name",
    "blocked": "nothing can be done in this mode",
}


@dataclass
class RecoverOptions:
    tables: list[str]
    mode: str = "merge"  # merge | replace | copy
    into: str | None = None  # copy: "schema.table" to create
    overwrite_changed: bool = False  # merge: the backup's values for rows that differ
    with_parents: bool = False  # merge: also the parent rows the recovered rows reference
    disable_triggers: bool = False  # the live tables' user triggers do not fire during the load
    force: bool = False  # no typed confirmation
    from_s3: bool = False
    target_db: str | None = None  # the live database (default: the target's)


@dataclass
class TablePlan:
    table: str  # "schema.table"
    action: str  # merge | replace | restore | copy | blocked
    requested: bool = True  # False: pulled in as a parent of a requested table (--with-parents)
    kind: str = "table"  # table | partitioned | partition
    key: list[str] | None = None  # the columns rows are matched by; None: no usable key
    key_name: str | None = None
    backup_rows: int = 0
    live_rows: int | None = None  # None: the table does not exist live
    missing: int | None = None  # backup keys absent live
    changed: int | None = None  # keys in both, values different
    only_live: int | None = None  # live keys absent from the backup (written since)
    insert: int = 0  # what the action will do
    update: int = 0
    delete: int = 0
    triggers: list[str] = field(default_factory=list)  # user triggers that fire during the load
    notes: list[str] = field(default_factory=list)
    into: str | None = None  # copy: the new table

    @property
    def changes(self) -> int:
        return self.insert + self.update + self.delete

    def describe(self) -> str:
        """One line for the confirmation and the plan."""
        if self.action == "blocked":
            return f"{self.table}: nothing ({'; '.join(self.notes)})"
        if self.action == "restore":
            return f"{self.table}: restore the whole table ({self.backup_rows:,} rows; it does not exist live)"
        if self.action == "copy":
            return f"{self.table}: copy its {self.backup_rows:,} backup rows into the new table {self.into}"
        parts = [f"insert {self.insert:,}"]
        if self.update or self.action == "replace" or self.changed:
            parts.append(f"update {self.update:,}")
        if self.action == "replace":
            parts.append(f"delete {self.delete:,}")
        return f"{self.table}: {', '.join(parts)} row(s)" + ("" if self.requested else f" (parent rows, {say('opt_with_parents')})")


@dataclass
class RecoveryPlan:
    artifact: str | None  # the backup file; None: the source is not one (a recovered cluster)
    live_db: str
    source: str  # what the data as it was is read from ("backup X in scratch database Y")
    host: str
    mode: str
    options: RecoverOptions
    tables: list[TablePlan]  # parent-first: the order rows are inserted in
    notes: list[str] = field(default_factory=list)
    rto_minutes: int = 240

    @property
    def blocked(self) -> list[TablePlan]:
        return [t for t in self.tables if t.action == "blocked"]

    @property
    def changes(self) -> int:
        return sum(t.changes for t in self.tables if t.action in ("merge", "replace")) + sum(
            t.backup_rows for t in self.tables if t.action in ("restore", "copy"))

    def as_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "live_db": self.live_db, "source": self.source, "host": self.host,
                "mode": self.mode, "options": asdict(self.options), "notes": list(self.notes),
                "rto_minutes": self.rto_minutes, "tables": [asdict(t) for t in self.tables]}


@dataclass
class TableOutcome:
    table: str
    action: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    proof: str = ""  # what was checked, in words
    proven: bool = False

    def describe(self) -> str:
        if self.action == "restore":
            return f"{self.table}: restored ({self.inserted:,} rows)"
        if self.action == "copy":
            return f"{self.table}: copied ({self.inserted:,} rows)"
        parts = [f"{self.inserted:,} inserted"]
        if self.updated or self.action == "replace":
            parts.append(f"{self.updated:,} updated")
        if self.action == "replace":
            parts.append(f"{self.deleted:,} deleted")
        return f"{self.table}: {', '.join(parts)}"


@dataclass
class RecoveryResult:
    ok: bool
    status: str  # success | failed | cancelled
    plan: RecoveryPlan | None
    steps: list[StepResult]
    total_seconds: float
    rto_seconds: float
    sentence: str
    tables: list[TableOutcome] = field(default_factory=list)
    pre_change_artifact: str | None = None
    scratch_database: str | None = None
    scratch_proof: str | None = None
    source: str | None = None  # where the rows came from (the backup, or the moment a cluster was recovered to)
    compared: str | None = None  # what the proof compared the live tables with, in words

    @property
    def margin_seconds(self) -> float:
        return self.rto_seconds - self.total_seconds

    @property
    def rows_back(self) -> int:
        """Rows that came back into live (inserted, restored) or were put back to their values (updated)."""
        return sum(t.inserted + t.updated for t in self.tables if t.action != "copy")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "status": self.status, "mode": self.plan.mode if self.plan else None,
            "artifact": self.plan.artifact if self.plan else None, "live_db": self.plan.live_db if self.plan else None,
            "tables": [asdict(t) for t in self.tables], "rows_back": self.rows_back,
            "pre_change_artifact": self.pre_change_artifact, "scratch_database": self.scratch_database,
            "scratch_proof": self.scratch_proof, "source": self.source, "compared": self.compared,
            "total_seconds": round(self.total_seconds, 3),
            "rto_seconds": self.rto_seconds, "margin_seconds": round(self.margin_seconds, 3),
            "steps": [{"step": s.step, "title": s.title, "status": s.status.value, "seconds": round(s.seconds, 3),
                       "detail": s.detail} for s in self.steps],
            "sentence": self.sentence,
        }
