"""One database on the dashboard: backup age against the RPO, last verification and drill, sizes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from opstower_core.fmt import duration, size
from opstower_tui.formatting import STATUS_STYLE, age_level, size_jumps


def _word(word: str) -> Text:
    return Text(word.ljust(4), style=STATUS_STYLE.get(word, ""))


def _line(text: str, style: str = "") -> Text:
    """One line, cut with an ellipsis when the card is narrow (80 columns over SSH)."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _run_word(status: str) -> str:
    return {"success": "PASS", "failed": "FAIL", "cancelled": "SKIP"}.get(status, status.upper())


class DbCard(Vertical, can_focus=True):
    DEFAULT_CSS = """
    DbCard { height: auto; }
    DbCard > Horizontal { height: 1; }
    """
    # On the card itself: the scroll container around the cards would otherwise take ↑/↓ to scroll
    # while the focus (and so the target of r, v, b) stayed on the first card.
    BINDINGS: ClassVar = [
        Binding("down", "move(1)", "Next database", show=False, id="card.next"),
        Binding("up", "move(-1)", "Previous database", show=False, id="card.previous"),
    ]

    def __init__(self, name: str, *, production: bool = False, read_only: bool = False, id: str | None = None) -> None:
        super().__init__(id=id, classes="db-card -production" if production else "db-card")
        self.target_name = name
        marks = ["PRODUCTION"] * production + ["read-only"] * read_only
        self.border_title = f"{name} · {' · '.join(marks)}" if marks else name
        self.status: Any | None = None

    def action_move(self, step: int) -> None:
        cards = list(self.screen.query(DbCard))
        target = cards[max(0, min(len(cards) - 1, cards.index(self) + step))]
        target.focus()
        target.scroll_visible()

    def compose(self) -> ComposeResult:
        yield Static("loading…", classes="card-info")
        with Horizontal(classes="card-sizes"):
            yield Static("Sizes        ", classes="card-label")
            yield Sparkline([], classes="card-spark")
            yield Static("", classes="card-jumps")

    def update_status(self, status: Any, now: datetime, warn_hours: float, crit_hours: float,
                      read_only: bool = False) -> None:
        self.status = status
        self.border_subtitle = f"RPO {duration(status.rpo_minutes * 60)} · RTO {duration(status.rto_minutes * 60)}"
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=12, no_wrap=True, style="bold")
        grid.add_column(width=4, no_wrap=True)
        # Wrappable for Rich's layout, so a long line shrinks this column and never the labels or
        # the status words; each cell is then cut to one line with an ellipsis (_line).
        grid.add_column(overflow="ellipsis")
        latest = status.latest
        age = latest.age_seconds(now) if latest is not None else None
        level, note = age_level(age, status.rpo_minutes, warn_hours, crit_hours)
        if latest is None:
            grid.add_row("Last backup", _word(level), _line("no backup yet" + ("" if read_only else ": press b to take one")))
        else:
            grid.add_row("Last backup", _word(level), _line(f"{duration(age)} ago, {note}"))
            grid.add_row("", "", _line(f"{latest.filename} ({latest.where}, {size(latest.size)})", style="dim"))
        run = status.last_backup_run
        if run is not None and run.status != "success":
            error = (run.error or run.status).replace("KeyboardInterrupt: ", "interrupted").rstrip(": ")
            grid.add_row("", _word("FAIL"), _line(f"last run {duration(now.timestamp() - run.started_at)} ago: {error}"))
        verify = status.last_verify
        if verify is None:
            grid.add_row("Verified", _word("-"), _line("never: press v to verify the newest backup"))
        else:
            ago = duration(now.timestamp() - (verify.finished_at or verify.started_at))
            grid.add_row("Verified", _word(verify.status), _line(f"{ago} ago, {verify.artifact}"))
        forecast = getattr(status, "forecast", None)
        if forecast is not None:
            # Against the RTO: past half of it is a warning, past it a failure waiting to happen.
            frac = forecast.rto_fraction if forecast.known else None
            word = "-" if frac is None else "CRIT" if frac > 1 else "WARN" if frac > 0.5 else "OK"
            grid.add_row("Restore", _word(word), _line(forecast.sentence()))
        drill = status.last_drill
        if drill is None:
            grid.add_row("Last drill", _word("-"), _line("none yet"))
        else:
            ago = duration(now.timestamp() - (drill.finished_at or drill.started_at))
            d = drill.details
            scenario = d.get("scenario_name") or d.get("scenario") or "drill"
            rto = "" if "rto_met" not in d else f", RTO {'met' if d['rto_met'] else 'missed'}"
            grid.add_row("Last drill", _word(_run_word(drill.status)), _line(f"{ago} ago, {scenario}{rto}"))
        self.query_one(".card-info", Static).update(grid)
        sizes = [s for _ts, s in status.sizes]
        spark = self.query_one(Sparkline)
        spark.data = sizes or [0]
        spark.styles.width = min(len(sizes), 24)  # one column per backup reads best
        spark.display = bool(sizes)
        jumps = size_jumps(sizes)
        if not sizes:
            text = Text("no backups", style="dim")
        elif jumps:
            last = jumps[-1]
            ts = status.sizes[last.index][0]
            text = Text.assemble(" ", ("WARN", STATUS_STYLE["WARN"]), f" {len(jumps)} size jump(s) >30%",
                                 f", last {last.percent:+.0f}% at {ts[4:6]}-{ts[6:8]} {ts[9:11]}:{ts[11:13]}")
        else:
            text = Text(f" {len(sizes)} backup{'' if len(sizes) == 1 else 's'}, no size jump >30%")
        self.query_one(".card-jumps", Static).update(text)
