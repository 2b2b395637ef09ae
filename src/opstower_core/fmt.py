"""Words and numbers the CLI, the reports and the console share: the one copy of each.

Import-light on purpose (stdlib only): the console formats with it before the engine loads.
"""

from __future__ import annotations

from datetime import datetime

# Status words as marks in markdown reports.
MARK = {"PASS": "✅", "MET": "✅", "WARN": "⚠️", "OVER": "⚠️", "FAIL": "❌", "MISSED": "❌", "SKIP": "⏭️",
        "RUNNING": "⏳", "PENDING": "·"}


def size(n: float | None) -> str:
    """1.2 MiB style (binary units, one decimal)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def duration(seconds: float | None) -> str:
    """Short and exact enough for an on-call screen: 4.2s, 42s, 3m 05s, 2h 04m, 3d 4h."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def minutes(value: float) -> str:
    """A target: "15 min", "4h", "1h 15m"; fractions of a minute as a duration."""
    if value * 60 < 60 or abs(value - round(value)) > 1e-9:
        return duration(value * 60)
    m = int(round(value))
    if m < 60:
        return f"{m} min"
    return f"{m // 60}h" if m % 60 == 0 else f"{m // 60}h {m % 60:02d}m"


def when(ts: float | None) -> str:
    """Local date and time with the UTC offset (reports are read across time zones)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
