"""Errors an on-call engineer can act on.

Every error raised for the operator carries one sentence: what failed, the state things
are in, and what to do next. The CLI prints it on one line and exits non-zero; the console
shows it in a modal. Neither shows a traceback for these.
"""

from __future__ import annotations


class OpsError(Exception):
    """A failure explained for the operator (never a programming error)."""

    exit_code = 1

    def __init__(self, what: str, state: str = "", next_step: str = "") -> None:
        self.what = what
        self.state = state
        self.next_step = next_step
        super().__init__(self.sentence)

    @property
    def sentence(self) -> str:
        # One sentence: "what failed; state things are in; what to do next."
        parts = [p.strip().rstrip(".") for p in (self.what, self.state, self.next_step) if p and p.strip()]
        return "; ".join(parts) + "."


class UsageError(OpsError):
    """Bad arguments or configuration: exit 2, like argparse."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key has a value we cannot use."""


class Cancelled(OpsError):
    """The operator cancelled a run; whatever was started has been undone."""

    exit_code = 130

    def __init__(self, state: str = "nothing was changed") -> None:
        super().__init__("Cancelled by the operator", state)


class LockHeld(OpsError):
    """Another run holds the lock for this database."""
