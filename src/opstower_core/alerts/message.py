"""What an alert says: the notification, its status level, and the scrubbing of secrets from it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

EVENTS = ("backup", "verify", "health", "restore", "drill")

# Status words callers use, folded into three levels; anything unknown counts as a failure so an
# unexpected status alerts rather than disappears.
_SUCCESS = {"success", "succeeded", "ok", "pass", "passed", "healthy", "good"}
_WARNING = {"warning", "warn", "degraded", "cancelled", "canceled", "skip", "skipped"}


def status_level(status: str) -> str:
    """Fold a status word into "success", "warning" or "failure"."""
    word = str(status).strip().lower()
    if word in _SUCCESS:
        return "success"
    if word in _WARNING:
        return "warning"
    return "failure"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in `text` with "***"."""
    # Longest first, so a URL is replaced whole before its token part would be.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass
class Notification:
    """One thing worth telling a human about."""

    event: str  # one of EVENTS
    status: str  # e.g. "success" / "failed" / "warning"; health: "ok" / "warning" / "critical"
    title: str  # one line, e.g. "OpsTower Backup FAILED"
    message: str  # what happened and what to do next
    database: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"Notification.event must be one of {', '.join(EVENTS)}, not {self.event!r}")

    @property
    def level(self) -> str:
        """"success", "warning" or "failure"."""
        return status_level(self.status)


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one channel's delivery; `error` is one line and holds no secret."""

    channel: str  # "slack", "webhook" or "email"
    ok: bool
    destination: str = ""  # redacted: scheme://host/… or the recipients
    error: str = ""
    seconds: float = 0.0


class Cleaner:
    """Applies `scrub` to strings and to every string inside a JSON-like value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        return scrub(text, self.secrets)

    def deep(self, value: Any) -> Any:
        """A copy of `value` with every string (keys too) scrubbed."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.deep(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))  # Path, datetime, …: as text, scrubbed
