"""Per-run log files: timestamped INFO/WARN/ERROR lines, one file per run, optional syslog."""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from pathlib import Path

from opstower_core.events import CommandRan, Event, Status, StepFinished, StepLog, StepProgress, StepStarted


class RunLog:
    """An event sink that writes the reference's log line shape to `<dir>/logs/<kind>_<ts>.log`."""

    def __init__(self, directory: Path, kind: str, stamp: str, syslog: bool = False) -> None:
        logs = Path(directory) / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o750)
        # One file per run: a second run within the same second gets `_2`, never the first run's file.
        n = 1
        while True:
            self.path = logs / (f"{kind}_{stamp}.log" if n == 1 else f"{kind}_{stamp}_{n}.log")
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                break
            except FileExistsError:
                n += 1
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._syslog: logging.Logger | None = None
        if syslog and Path("/dev/log").exists():
            logger = logging.getLogger(f"opstower.syslog.{kind}")
            if not logger.handlers:
                handler = logging.handlers.SysLogHandler(address="/dev/log")
                handler.setFormatter(logging.Formatter("opstower: %(message)s"))
                logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            self._syslog = logger

    def line(self, level: str, text: str) -> None:
        self._fh.write(f"[{level}] {time.strftime('%Y-%m-%d %H:%M:%S')} - {text}\n")
        self._fh.flush()
        if self._syslog is not None and level != "DEBUG":
            self._syslog.log(logging.ERROR if level == "ERROR" else logging.WARNING if level == "WARN" else logging.INFO,
                             text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepProgress):
            return
        if isinstance(event, StepStarted):
            self.line("INFO", f"{event.title}...")
        elif isinstance(event, StepLog):
            self.line(event.level, event.line)
        elif isinstance(event, StepFinished):
            level = {Status.FAIL: "ERROR", Status.WARN: "WARN"}.get(event.status, "INFO")
            self.line(level, f"{event.status}: {event.detail} ({event.seconds:.1f}s)")
        elif isinstance(event, CommandRan):
            self.line("INFO" if event.outcome == "ok" else "WARN",
                      f"ran: {event.command} ({event.seconds:.1f}s, {event.outcome})")

    def close(self) -> None:
        self._fh.close()


def tee(*sinks):
    """One sink that forwards each event to several."""

    def forward(event: Event) -> None:
        for sink in sinks:
            if sink is not None:
                sink(event)

    return forward
