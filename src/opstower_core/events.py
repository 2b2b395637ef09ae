"""Typed events every long run emits, and the cancel flag it honours.

Backups, verifications, restores and drill phases all report through the same four
events, so the CLI (text, progress bars or JSON lines) and the console render any run.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from opstower_core.errors import Cancelled


class Status(StrEnum):
    """Outcome of a step, as a word (never colour alone)."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StepStarted:
    step: str  # stable id, e.g. "exists" or "restore"
    title: str  # human line, e.g. "Checking file existence"
    index: int = 0  # 1-based position in the run, 0 when not counted
    total: int = 0
    kind: str = "step_started"


@dataclass(frozen=True)
class StepProgress:
    step: str
    done: int
    total: int  # 0 when unknown
    unit: str = "bytes"
    kind: str = "step_progress"


@dataclass(frozen=True)
class StepLog:
    step: str
    line: str
    level: str = "INFO"  # INFO, WARN or ERROR
    kind: str = "step_log"


@dataclass(frozen=True)
class StepFinished:
    step: str
    status: Status
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    kind: str = "step_finished"


@dataclass(frozen=True)
class CommandRan:
    """An external command or a server-changing SQL statement a step ran: the command log, so the
    operator can tell the incident channel exactly what was done. Never holds a secret (passwords
    are never in our argv or SQL; a PASSWORD literal or URL credentials are masked anyway)."""

    step: str
    command: str
    started: float  # unix time
    seconds: float
    outcome: str  # "ok", "cancelled" or "failed: <first line>"
    kind: str = "command_ran"


Event = StepStarted | StepProgress | StepLog | StepFinished | CommandRan
EventSink = Callable[[Event], None]

# The reporter and step a thread is running now: commands run deep inside a step (a client tool,
# a DDL statement on any connection) reach the command log without being passed a reporter.
_CURRENT: ContextVar[tuple[Reporter, str] | None] = ContextVar("opstower_current_step", default=None)
_SECRETS = (re.compile(r"(PASSWORD\s+)'(?:[^']|'')*'", re.IGNORECASE), re.compile(r"(://[^/\s:@]+:)[^@\s]+(@)"))


def mask(command: str) -> str:
    """The command as it may be shown and kept: password literals and URL credentials masked."""
    command = _SECRETS[0].sub(r"\1'***'", command)
    return _SECRETS[1].sub(r"\1***\2", command)


def record_command(command: str, started: float, seconds: float, outcome: str) -> None:
    """Put a command into the current step's log (nothing happens outside a run)."""
    current = _CURRENT.get()
    if current is not None:
        reporter, step = current
        try:
            reporter.emit(CommandRan(step, mask(command), started, seconds, outcome))
        except Exception:  # noqa: BLE001 - the log of a command never changes what the command did
            pass


@contextmanager
def command(text: str) -> Iterator[None]:
    """Time a command and record it with its outcome, whatever the outcome."""
    started, t0, outcome = time.time(), time.monotonic(), "ok"
    try:
        yield
    except Cancelled:
        outcome = "cancelled"
        raise
    except BaseException as exc:
        first = (getattr(exc, "sentence", None) or str(exc) or type(exc).__name__).strip().splitlines()
        outcome = f"failed: {first[0] if first else type(exc).__name__}"
        raise
    finally:
        record_command(text, started, time.monotonic() - t0, outcome)


def event_to_dict(event: Event) -> dict[str, Any]:
    """JSON-ready form of an event (for `--json` and the state file)."""
    d = asdict(event)
    if isinstance(event, StepFinished):
        d["status"] = event.status.value
        d["seconds"] = round(event.seconds, 3)
    return d


class CancelToken:
    """A cancel flag shared between the UI thread and a worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, state: str = "nothing was changed") -> None:
        """Raise Cancelled when the operator asked to stop."""
        if self._event.is_set():
            raise Cancelled(state)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when cancelled meanwhile."""
        return self._event.wait(seconds)


def _ignore(_event: Event) -> None:
    pass


@dataclass
class StepResult:
    step: str
    title: str
    status: Status
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


class Reporter:
    """Emits events for one run and keeps the finished steps for the summary."""

    def __init__(self, on_event: EventSink | None = None, cancel: CancelToken | None = None) -> None:
        self.on_event: EventSink = on_event or _ignore
        self.cancel = cancel or CancelToken()
        self.results: list[StepResult] = []
        self.commands: list[CommandRan] = []  # the command log of this run
        self._tokens: dict[str, Token[tuple[Reporter, str] | None]] = {}
        self._titles: dict[str, str] = {}
        # Progress events are throttled: a UI does not need more than ~20 a second.
        self._last_progress: dict[str, float] = {}

    def emit(self, event: Event) -> None:
        if isinstance(event, CommandRan):
            self.commands.append(event)
        self.on_event(event)

    def started(self, step: str, title: str, index: int = 0, total: int = 0) -> None:
        self._titles[step] = title
        self._tokens[step] = _CURRENT.set((self, step))
        self.emit(StepStarted(step, title, index, total))

    def progress(self, step: str, done: int, total: int = 0, unit: str = "bytes", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress.get(step, 0.0) < 0.05:
            return
        self._last_progress[step] = now
        self.emit(StepProgress(step, done, total, unit))

    def log(self, step: str, line: str, level: str = "INFO") -> None:
        self.emit(StepLog(step, line, level))

    def folded(self, step: str) -> EventSink:
        """A sink for a run inside `step` (a verification, a backup): its steps become lines and
        progress of `step`, so the outer run's steps stay its own. A failing UI never stops the run."""

        def sink(event: Event) -> None:
            with contextlib.suppress(Exception):
                if isinstance(event, StepProgress):
                    self.progress(step, event.done, event.total, event.unit)
                elif isinstance(event, StepLog):
                    self.log(step, event.line, event.level)
                elif isinstance(event, StepStarted):
                    self.log(step, f"{event.title}...")
                elif isinstance(event, StepFinished):
                    self.log(step, f"{event.status}: {event.detail}",
                             {Status.FAIL: "ERROR", Status.WARN: "WARN"}.get(event.status, "INFO"))

        return sink

    def finished(
        self, step: str, status: Status, detail: str, seconds: float, data: dict[str, Any] | None = None
    ) -> StepResult:
        token = self._tokens.pop(step, None)
        if token is not None:
            try:
                _CURRENT.reset(token)  # back to the enclosing step (a run inside a run), or to none
            except ValueError:
                pass  # finished in another thread than it started: that thread's context is its own
        result = StepResult(step, self._titles.get(step, step), status, detail, seconds, dict(data or {}))
        self.results.append(result)
        self.emit(StepFinished(step, status, detail, seconds, result.data))
        return result

    @contextmanager
    def step(self, step: str, title: str, index: int = 0, total: int = 0) -> Iterator[StepOutcome]:
        """Run a block as a step: timed, FAIL on exception (which propagates), PASS otherwise."""
        self.started(step, title, index, total)
        outcome = StepOutcome()
        t0 = time.monotonic()
        try:
            yield outcome
        except Cancelled:
            self.finished(step, Status.SKIP, "cancelled", time.monotonic() - t0)
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the step's FAIL, then re-raised
            detail = getattr(exc, "sentence", None) or str(exc) or type(exc).__name__
            self.finished(step, Status.FAIL, detail, time.monotonic() - t0, outcome.data)
            raise
        self.finished(step, outcome.status, outcome.detail, time.monotonic() - t0, outcome.data)


@dataclass
class StepOutcome:
    """What a `Reporter.step` block sets to describe its result."""

    status: Status = Status.PASS
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
