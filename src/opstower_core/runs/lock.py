"""One run per database at a time: an flock'ed lock file that says who holds it.

flock is released by the kernel when a process dies, so a lock left by a crashed run
(dead pid) is simply taken over; the file's content names the holder for the message:
its pid, host, start time and command, so an operator can find a hung run and stop it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import IO

from opstower_core.errors import LockHeld


class RunLock:
    def __init__(self, state_dir: Path, database: str, purpose: str = "backup") -> None:
        self.path = Path(state_dir) / "locks" / f"{database}.lock"
        self.database = database
        self.purpose = purpose
        self._fh: IO[str] | None = None
        self.took_over: dict | None = None  # holder info of a stale lock we replaced

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fh = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            fh.close()
            raise LockHeld(
                f"Another {holder.get('purpose', 'run')} of database {self.database!r} is running "
                f"({describe_holder(holder)})",
                "this run changed nothing",
                f"wait for it to finish, or stop that process if it is stuck (kill {holder.get('pid', 'PID')})",
            ) from None
        fh.seek(0)
        previous = fh.read()
        if previous.strip():
            try:
                self.took_over = json.loads(previous)  # a crashed run left this behind
            except json.JSONDecodeError:
                self.took_over = {}
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                             "purpose": self.purpose, "command": _command()}))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command() -> str:
    """This process's command line, shortened (our arguments carry no secret: they live in env and files)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    argv = ["opstower" if prog in ("__main__.py", "-c", "-m") else prog, *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


def describe_holder(holder: dict) -> str:
    """`pid 4242 on db1, since 2026-12-01 03:00:02+00:00 (2 h 5 min ago), command: opstower backup`."""
    if not holder:
        return "holder unknown"
    since = holder.get("since")
    when = "?"
    if isinstance(since, int | float):
        ago = max(0, int(time.time() - since))
        when = (f"{datetime.fromtimestamp(since).astimezone().isoformat(sep=' ', timespec='seconds')} "
                f"({_ago(ago)} ago)")
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {when}"
    if holder.get("command"):
        text += f", command: {holder['command']}"
    return text


def _ago(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
