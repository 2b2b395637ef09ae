"""SIGINT, SIGTERM and SIGHUP handled the same way by every command.

Ctrl-C, `kill`, cron's `timeout`, `systemctl stop` and a dropped SSH session must all
leave the same state behind: temporary files removed, uploads aborted, child processes
stopped, locks released, the run recorded. Python already turns SIGINT into
KeyboardInterrupt and every run cleans up on it; `install()` makes SIGTERM and SIGHUP
raise `Interrupted`, a KeyboardInterrupt, so the same cleanup paths run for them, and
the command exits 128 + the signal's number (the shell's convention: 130, 143, 129).

Only the main thread receives signals in Python. Worker threads (the console) keep
using their CancelToken.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# systemd sends SIGTERM then SIGHUP at once (SendSIGHUP=yes); a closing terminal may send
# SIGHUP twice. A repeat that soon would cut the cleanup of the first one short.
REPEAT_GRACE = 2.0


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT, SIGTERM or SIGHUP; cleanup paths treat it as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def exit_code(exc: BaseException) -> int:
    """128 + the signal's number for an interruption (130 for a plain KeyboardInterrupt)."""
    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    return 128 + signal.SIGINT


def signal_name(exc: BaseException) -> str:
    """"SIGTERM", "SIGHUP", … ("SIGINT" for a plain KeyboardInterrupt)."""
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"


class _Handler:
    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first is not None and now - self.first < REPEAT_GRACE:
            return  # the first one's cleanup is running: let it finish
        self.first = now
        raise Interrupted(signum)


def install() -> bool:
    """Make SIGINT, SIGTERM and SIGHUP raise `Interrupted(signum)` in the main thread.

    For a command's entry point; returns False (and changes nothing) off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    handler = _Handler()
    for sig in HANDLED:
        signal.signal(sig, handler)
    return True


@contextmanager
def installed() -> Iterator[bool]:
    """`install()` for a block, putting the previous handlers back after it.

    Yields False (nothing installed) when not on the main thread: the caller's own
    cancel flag is then the way to stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in HANDLED}
    install()
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Flagged:
    """Which signal asked a `cancelling()` block to stop (None: none came)."""

    def __init__(self, cancel: Any) -> None:
        self.cancel = cancel
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        self.cancel.cancel()

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal_name(Interrupted(self.signum)) if self.signum else "SIGINT"


@contextmanager
def cancelling(cancel: Any) -> Iterator[Flagged]:
    """SIGINT, SIGTERM and SIGHUP set `cancel` (a CancelToken) instead of raising, for a block.

    For runs whose rollback must not be cut into by an exception at an arbitrary line (a
    restore between its rename and its bookkeeping): the run polls the flag, cancels what
    waits on the server, rolls back and returns. Off the main thread nothing is installed.
    """
    flag = Flagged(cancel)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, flag)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
