"""Holds: an artifact in use (being restored, verified, drilled) is never deleted by retention.

A hold is a small JSON file in `<state_dir>/holds/`, written for as long as the holding
process runs. It names the process (pid and its start time, so a recycled pid is not
mistaken for the holder), so the hold of a killed process is ignored: no crash can leave
an artifact undeletable forever, and no running job can lose its artifact under it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from opstower_core.config import Settings


@dataclass(frozen=True)
class Hold:
    artifact: str  # file name of the artifact (local and S3 copies alike)
    reason: str
    pid: int
    host: str
    since: float
    path: Path

    def describe(self) -> str:
        return f"held by pid {self.pid} ({self.reason}) since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"


def _holds_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) / "holds"


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """True if `pid` runs (and, when `start` is given, is the same process that recorded it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if start is not None:
        now = process_start(pid)
        return now is None or now == start  # no /proc: when unsure, it is alive
    return True


@contextmanager
def hold(settings: Settings, artifact_filename: str | os.PathLike[str], reason: str) -> Iterator[Path]:
    """Hold an artifact for the duration of the `with` block: retention keeps it and says why.

    `artifact_filename` may be a name or a path (its base name counts). Yields the hold
    file's path. Released on exit, whatever the exit; a killed process's hold is ignored.
    """
    directory = _holds_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    pid = os.getpid()
    record = {"artifact": os.path.basename(os.fspath(artifact_filename)), "reason": reason, "pid": pid,
              "start": process_start(pid), "host": socket.gethostname(), "since": time.time()}
    path = directory / f"{pid}-{uuid.uuid4().hex[:12]}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # never a half-written hold that reads as none
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def active_holds(settings: Settings, tidy: bool = False) -> dict[str, list[Hold]]:
    """artifact file name -> holds of processes still running. `tidy` removes dead ones' files."""
    out: dict[str, list[Hold]] = {}
    try:
        paths = sorted(_holds_dir(settings).glob("*.json"))
    except OSError:
        return out
    here = socket.gethostname()
    for path in paths:
        try:
            rec = json.loads(path.read_text())
            h = Hold(str(rec["artifact"]), str(rec.get("reason", "")), int(rec["pid"]), str(rec.get("host", here)),
                     float(rec.get("since", 0)), path)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: vanished between glob and read, or not ours
        # Another host's pid cannot be checked from here: when unsure, the hold stands.
        if h.host == here and not process_alive(h.pid, rec.get("start")):
            if tidy:
                path.unlink(missing_ok=True)
            continue
        out.setdefault(h.artifact, []).append(h)
    return out
