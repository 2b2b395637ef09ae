"""What every `opstower doctor` check returns: a status, what was found and, unless it passed,
the fix. It has a module of its own so that the runner and the checks in `doctor` and the S3
checks in `doctor_s3` can share it without the two importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opstower_core.events import Status


@dataclass
class Finding:
    """One check's verdict; `data` goes into the step's data for JSON output and the TUI."""

    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)
