"""One run per database at a time: an flock'ed lock file that says who holds it.

flock is released by the kernel when a process dies, so a lock left by a crashed run
(dead pid) is simply taken over; the file's content names the holder for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
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
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0))) if holder else "?"
            raise LockHeld(
                f"Another {holder.get('purpose', 'run')} of database {self.database!r} is running "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {since})",
                "this run changed nothing",
                "wait for it to finish, or stop that process if it is stuck",
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
                             "purpose": self.purpose}))
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
