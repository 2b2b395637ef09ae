"""The selected backup's metadata, beside (wide terminals) or under (80 columns) the table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from opstower_core.fmt import duration, size
from opstower_tui.formatting import STATUS_STYLE


class MetaPanel(Widget, can_focus=False):
    DEFAULT_CSS = """
    MetaPanel { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.entry: Any | None = None
        self.now: datetime | None = None
        self.bucket = ""

    def show(self, entry: Any | None, now: datetime, bucket: str = "") -> None:
        self.entry, self.now, self.bucket = entry, now, bucket
        self.refresh()  # fixed size: no layout pass on every cursor move

    def render(self) -> Table | Text:
        e = self.entry
        if e is None:
            return Text("No backup selected.", style="dim")
        meta = e.meta or {}
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, min_width=8)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        verified = e.verified or "never"
        grid.add_row("Backup", Text.assemble(e.filename, "  ", (verified, STATUS_STYLE.get(verified, "dim"))))
        age = duration((self.now - e.created).total_seconds()) if self.now else ""
        grid.add_row("Created", f"{e.created:%Y-%m-%d %H:%M:%S} ({age} ago)  {size(e.size)}  "
                                f"{e.name.format}/{e.name.compression}{' +age' if e.name.encrypted else ''}")
        grid.add_row("Local", str(e.local_path) if e.local_path else Text("not here (S3 only)", style="dim"))
        # The whole key, folded over lines when it is long: its end tells one backup from another.
        grid.add_row("S3", Text(f"s3://{self.bucket}/{e.s3_key}", no_wrap=False, overflow="fold") if e.s3_key
                     else Text("no copy in S3", style="dim"))
        if meta:
            tables = meta.get("table_count", "?")
            grid.add_row("Content", f"db {meta.get('database_size', '?')}, {tables} tables, "
                                    f"{meta.get('postgresql_version', 'PostgreSQL ?')}, "
                                    f"took {meta.get('duration_seconds', '?')} s")
            sha = str(meta.get("sha256") or "none recorded")
            grid.add_row("sha256", sha[:16] + "…" if len(sha) > 16 else sha)
        else:
            grid.add_row("Metadata", Text(e.meta_problem or "missing", style="yellow"))
        return grid
