"""The restore journal: what a running restore has done to the server, on disk before each change.

A restore killed outright (SIGKILL, a power cut, the OOM killer) cannot roll itself back.
Before each step that changes the server the run writes one small JSON file into
`<state_dir>/restore_journal/` (atomically: temporary name, fsync, rename) naming which
database is where (live, work/staging, old), the live database's connection settings
before they were blocked, its properties (for a reload), the pre-restore artifact, the
mode, the step and the process (pid and its start time, so a recycled pid is not taken
for the run). A run that ends - restored, or rolled back - removes its file; a file whose
process is gone is an interrupted restore, which `opstower restore --recover` finishes or
undoes (recover.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opstower_core.advice import say
from opstower_core.artifacts.names import fsync_dir, write_private
from opstower_core.pg.admin import ConnState, DbProps, open_state
from opstower_core.repo.holds import process_alive, process_start

VERSION = 1
DIRNAME = "restore_journal"


@dataclass
class Journal:
    """One restore's state as last written; `path` is where it lives."""

    live: str
    work: str
    old: str | None
    mode: str
    step: str
    target: str  # the configured target's name: recovery reaches the same server through it
    server: str  # host:port, for messages
    pid: int
    pid_start: str | None
    host: str
    started: float
    updated: float
    artifact: str
    before: ConnState | None = None  # the live database's connection settings before the run blocked them
    props: DbProps | None = None  # the live database's properties (in place: for the reload)
    pre_restore: str | None = None  # path of the pre-restore artifact, once taken
    phase: str = "running"  # running | rolling_back | rollback_failed
    stamp: str = ""  # the plan's stamp: names the rollback database an in-place rollback loads into
    path: Path = field(default=Path(), compare=False)

    @property
    def alive(self) -> bool:
        """Whether the process that wrote it still runs (on another host: assumed so, when unsure keep)."""
        if self.host != socket.gethostname():
            return True
        return process_alive(self.pid, self.pid_start)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.updated))
        return (f"restore of {self.live} on {self.server} ({self.mode}, {self.artifact}) by pid {self.pid}, "
                f"stopped at step \"{self.step}\" ({self.phase}) at {when}")

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


def journal_dir(state_dir: Path) -> Path:
    return Path(state_dir) / DIRNAME


def journal_path(state_dir: Path, target: str, live: str) -> Path:
    """One file per target and live database: the restore lock allows one run of each at a time."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{target}.{live}")
    return journal_dir(state_dir) / f"{safe}.json"


def save(ctx: Any, step: str, phase: str = "running") -> Path:
    """Write the run's state before `step` changes the server (atomic; fsync'ed).

    `ctx` is the run's RunContext (not imported: context.py calls this, one direction only)."""
    plan, touched = ctx.plan, ctx.touched
    props = touched.live_props or plan.live_props
    before = touched.blocked or (props.conn if props else None)
    before = open_state(before) if before else None  # never put a leftover block back
    path = journal_path(ctx.settings.state_dir, plan.target.name, ctx.live_db)
    previous = ctx.journal_started or time.time()
    ctx.journal_started = previous
    j = Journal(live=ctx.live_db, work=ctx.work_db, old=ctx.old_db, mode=plan.mode, step=step,
                target=plan.target.name, server=f"{plan.target.display_host}:{plan.target.display_port}",
                pid=os.getpid(), pid_start=process_start(os.getpid()), host=socket.gethostname(),
                started=previous, updated=time.time(), artifact=ctx.entry.filename, before=before, props=props,
                pre_restore=str(ctx.pre_restore.path) if ctx.pre_restore else None, phase=phase,
                stamp=plan.stamp)
    write(path, j)
    return path


def write(path: Path, j: Journal) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps({"version": VERSION, **j.as_dict()}, indent=1, default=str).encode())
    fsync_dir(path.parent)


def remove(path: Path | None) -> None:
    """The run ended (restored or rolled back): nothing left to recover."""
    if path is None:
        return
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        fsync_dir(path.parent)


def read(path: Path) -> Journal | None:
    """The journal at `path`; None when absent or unreadable (a torn write cannot happen: rename)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    try:
        before = ConnState(**raw["before"]) if raw.get("before") else None
        props = _props(raw["props"]) if raw.get("props") else None
        return Journal(live=raw["live"], work=raw["work"], old=raw.get("old"), mode=raw["mode"], step=raw["step"],
                       target=raw["target"], server=raw.get("server", "?"), pid=int(raw["pid"]),
                       pid_start=raw.get("pid_start"), host=raw.get("host", ""), started=float(raw["started"]),
                       updated=float(raw["updated"]), artifact=raw.get("artifact", "?"), before=before, props=props,
                       pre_restore=raw.get("pre_restore"), phase=raw.get("phase", "running"),
                       stamp=raw.get("stamp", ""), path=path)
    except (KeyError, TypeError, ValueError):
        return None


def _props(d: dict[str, Any]) -> DbProps:
    conn = ConnState(**d["conn"]) if d.get("conn") else None
    grants = [tuple(g) for g in d["grants"]] if d.get("grants") is not None else None
    return DbProps(owner=d.get("owner"), encoding=d.get("encoding"), collate=d.get("collate"), ctype=d.get("ctype"),
                   provider=d.get("provider"), locale=d.get("locale"), conn=conn,
                   settings=[(r, list(c)) for r, c in d.get("settings", [])], grants=grants)  # type: ignore[misc]


def journals(state_dir: Path) -> list[Journal]:
    """Every journal in the state directory, oldest first (running restores included)."""
    d = journal_dir(state_dir)
    if not d.is_dir():
        return []
    found = [j for p in sorted(d.glob("*.json")) if (j := read(p)) is not None]
    return sorted(found, key=lambda j: j.started)


def interrupted(state_dir: Path) -> list[Journal]:
    """Journals whose process is gone: restores that were killed before they could finish or roll back."""
    return [j for j in journals(state_dir) if not j.alive]


def interrupted_notice(state_dir: Path) -> str | None:
    """One line for any command to print when a killed restore left the server in between; None if not.

    Cheap (reads a directory, no server round trip): the CLI calls it before every command."""
    try:
        found = interrupted(state_dir)
    except OSError:
        return None
    if not found:
        return None
    j = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"WARNING: an interrupted {j.describe()}{more} may have left {j.live} blocked, renamed or missing; "
            f"{say('recover_interrupted')} to finish or undo it.")
