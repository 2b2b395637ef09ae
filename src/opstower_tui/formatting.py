"""Plain functions that turn engine values into the words and numbers the console shows.

No Textual here, so they are cheap to import and easy to test. Every status has a word;
colour only repeats what the word says (16-colour terminals, NO_COLOR).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from opstower_core.fmt import duration

# Styles per status word: colour repeats the word, it never replaces it.
STATUS_STYLE = {
    "PASS": "bold green", "OK": "bold green", "FAIL": "bold red", "CRIT": "bold red",
    "WARN": "bold yellow", "SKIP": "dim", "RUN": "bold cyan", "WAIT": "dim", "-": "dim",
}


def clock(seconds: float) -> str:
    """H:MM:SS for elapsed times and budgets."""
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def age_level(age_seconds: float | None, rpo_minutes: int, warn_hours: float, crit_hours: float) -> tuple[str, str]:
    """(OK | WARN | CRIT, note) for the newest backup's age, by the reference's thresholds.

    The reference's monitoring section: target under 1 h (the RPO), warning above 2 h,
    critical above 4 h. Between the RPO and the warning threshold the word stays OK and
    the note says the RPO target is missed.
    """
    if age_seconds is None:
        return "CRIT", "no backup"
    hours = age_seconds / 3600
    if hours > crit_hours:
        return "CRIT", f"older than {crit_hours:g} h"
    if hours > warn_hours:
        return "WARN", f"older than {warn_hours:g} h"
    if age_seconds > rpo_minutes * 60:
        return "OK", f"over the RPO target of {duration(rpo_minutes * 60)}"
    return "OK", f"within the RPO target of {duration(rpo_minutes * 60)}"


@dataclass(frozen=True)
class SizeJump:
    index: int  # position in the series of the backup that jumped
    percent: float  # change against the previous backup


def size_jumps(sizes: list[int], threshold: float = 0.30) -> list[SizeJump]:
    """Backups whose size changed by more than ±30 % from the one before (the reference's alert)."""
    jumps = []
    for i in range(1, len(sizes)):
        before, now = sizes[i - 1], sizes[i]
        if before <= 0:
            continue
        change = (now - before) / before
        if abs(change) > threshold:
            jumps.append(SizeJump(i, change * 100))
    return jumps


def bar(fraction: float, width: int) -> str:
    """A text bar that reads the same with or without colour."""
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(fraction * width)
    return "█" * full + "░" * (width - full)


def eta(done: int, total: int, elapsed: float) -> str:
    """Remaining time at the average rate so far, or '--' before there is a rate."""
    if total <= 0 or done <= 0 or elapsed <= 0.2:
        return "--"
    rate = done / elapsed
    return duration((total - done) / rate) if rate > 0 else "--"


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def truncate_middle(text: str, width: int) -> str:
    """Cut in the middle, keeping the end: a backup's name ends in what tells it apart (its
    timestamp), and "…232752.dump" must never read as another file."""
    if len(text) <= width or width < 8:
        return truncate(text, width)
    head = (width - 1) // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def pitr_bar(earliest: datetime | None, latest: datetime | None, dumps: list[datetime], now: datetime,
             width: int = 40) -> str:
    """The recoverable window on a line: `=` where any moment can be recovered (WAL), `|` where a
    logical dump sits, `.` where only the dumps reach; the right end is now."""
    start = min([t for t in [earliest, *dumps] if t is not None], default=now)
    span = max((now - start).total_seconds(), 1.0)
    cells = ["."] * width

    def cell(t: datetime) -> int:
        return min(width - 1, max(0, int((t - start).total_seconds() / span * (width - 1))))

    if earliest is not None and latest is not None:
        for i in range(cell(earliest), cell(latest) + 1):
            cells[i] = "="
    for t in dumps:
        cells[cell(t)] = "|"
    return "".join(cells)
