"""Where the data as it was comes from: a database on a reachable server (the source interface).

`ScratchRestore` is the one made from a backup: the whole artifact restored into a scratch
database `<db>_recover_<ts>` on the live server with the same loader as every restore, proven
against the artifact, and dropped at the end whatever happens. The point-in-time recovery
adds a scratch *cluster* recovered to a moment (pitr.PitrSource), handed to the session ready;
the merge, replace and copy code only ever needs `target` + `dbname` (where to connect),
`label` and `record` (words) and `close()`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Protocol, runtime_checkable

from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.events import Reporter, Status
from opstower_core.pg.admin import (
    admin,
    create_database,
    derived_name,
    drop_database,
    first_line,
    free_name,
    literal,
)
from opstower_core.pg.load import LoadSpec, load
from opstower_core.pg.tools import PgTools, connect, quote_ident
from opstower_core.repo.catalog import CatalogEntry

SCRATCH_MARK = "opstower recover scratch"  # COMMENT ON DATABASE of every scratch database we create


@runtime_checkable
class RecoverySource(Protocol):
    """A database holding the data as it was, reachable with `target`'s connection settings."""

    target: Target  # the server (its `dbname` is not used: see `dbname`)
    dbname: str
    label: str  # what the data is, for messages: "backup X (taken …)"
    record: str  # what the proof compares with, in words: "the backup", "the recovered cluster"

    def close(self) -> None:
        """Release the source (drop a scratch database); safe to call twice."""


def scratch_name(conn: Any, live: str, stamp: str) -> str:
    return free_name(conn, derived_name(live, f"_recover_{stamp}"))


def drop_leftover_scratch(target: Target, live: str, r: Reporter, step: str) -> list[str]:
    """Drop scratch databases of `live` left by a killed run (its pid gone on this host)."""
    from opstower_core.repo.holds import process_alive

    host = socket.gethostname()
    dropped = []
    with admin(target, live) as conn:
        rows = conn.execute(
            "SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database') FROM pg_catalog.pg_database d "
            "WHERE d.datname LIKE %s", (live.replace("_", r"\_") + r"\_recover\_%",)).fetchall()
        for name, comment in rows:
            if not comment or not comment.startswith(SCRATCH_MARK):
                continue
            fields = dict(p.split("=", 1) for p in comment[len(SCRATCH_MARK):].split() if "=" in p)
            pid = int(fields.get("pid", "0") or 0)
            if fields.get("host") == host and pid and process_alive(pid):
                continue  # a recovery running now
            if fields.get("host") != host and time.time() - float(fields.get("at", "0") or 0) < 86400:
                continue  # another host's, recent: not ours to judge
            sql = drop_database(conn, name)
            r.log(step, f"Dropped {name}, left by a recovery that was killed ({sql})", "WARN")
            dropped.append(name)
    return dropped


class ScratchRestore:
    """The whole artifact restored into a scratch database on the live server, proven, dropped at close()."""

    def __init__(self, settings: Settings, target: Target, entry: CatalogEntry, live: str, tools: PgTools,
                 stamp: str) -> None:
        self.settings, self.target, self.entry, self.live, self.tools = settings, target, entry, live, tools
        self.stamp = stamp
        self.dbname = ""
        self.created = False
        self.with_acl = False  # owners and grants restored (the roles exist on this server)
        self.proof: Any = None  # verify's ProofResult of the scratch database against the artifact
        self.label = f"backup {entry.filename}"
        self.record = "the backup"  # the scratch copy is proven against it before anything is compared

    def create(self, r: Reporter, step: str) -> None:
        with admin(self.target, self.live) as conn:
            self.dbname = scratch_name(conn, self.live, self.stamp)
            create_database(conn, self.dbname, None, r, step)
            self.created = True
            note = f"{SCRATCH_MARK} pid={os.getpid()} host={socket.gethostname()} at={int(time.time())}"
            conn.execute(f"COMMENT ON DATABASE {quote_ident(self.dbname)} IS {literal(note)}")

    def load(self, r: Reporter, step: str, artifact_proof: Any) -> None:
        """Restore the artifact; owners and grants too when every role it names exists here."""
        missing = self._missing_roles(artifact_proof)
        self.with_acl = self.entry.name.format == "custom" and artifact_proof is not None and not missing
        if missing:
            r.log(step, f"Roles the backup names are missing on this server ({', '.join(sorted(missing))}): "
                        "the scratch copy is restored without owners and grants", "WARN")
        spec = LoadSpec(self.entry.name, self.dbname, jobs=1, no_owner=not self.with_acl)
        load(self.settings, self.target, self.tools, self.entry, spec, r, step)

    def prove(self, artifact_proof: Any, cancel: Any) -> tuple[Status, str]:
        """The scratch database against the artifact (verify's restore proof)."""
        from opstower_core.verify import prove_restored

        if artifact_proof is None:
            return Status.WARN, "not proven: the artifact could not be digested during verification"
        self.proof = prove_restored(self.target, self.dbname, artifact_proof, cancel=cancel,
                                    no_acl=not self.with_acl, database_settings=False)
        return self.proof.status, self.proof.sentence

    def _missing_roles(self, artifact_proof: Any) -> set[str]:
        if artifact_proof is None:
            return set()
        inv = artifact_proof.inventory
        names = {o for o in inv.objects.values() if o}
        for statements in inv.grants.values():
            names.update(s.split(" ")[1] for s in statements if s.count(" ") >= 1)
        names.discard("PUBLIC")
        if not names:
            return set()
        with connect(self.target, dbname=self.live) as conn:
            have = {r[0] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles")}
        return names - have

    def close(self, r: Reporter | None = None, step: str = "cleanup") -> str | None:
        """Drop the scratch database; returns a problem sentence instead of raising."""
        if not self.created:
            return None
        try:
            with admin(self.target, self.live) as conn:
                sql = drop_database(conn, self.dbname)
            self.created = False
            if r is not None:
                r.log(step, sql)
            return None
        except (OpsError, Exception) as exc:  # noqa: BLE001 - the caller reports what is left
            return f"{self.dbname} could not be dropped ({getattr(exc, 'what', None) or first_line(exc)})"
