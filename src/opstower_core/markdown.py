"""Markdown pieces the drill report and the incident report share.

Both read well on GitHub as they are (pipe tables, task lists, headings) and in a
terminal: every status is a word, the emoji only repeat it.
"""

from __future__ import annotations

import time
from typing import Any

from opstower_core.fmt import MARK, duration


def cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def table(headers: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def verdict(met: bool) -> str:
    return "✅ MET" if met else "❌ MISSED"


def status_cell(word: str, note: str) -> str:
    mark = MARK["OVER"] if "OVER BUDGET" in note and word == "PASS" else MARK.get(word, "")
    return f"{mark} {word}" + (f": {note}" if note else "")


# -- the drill report -------------------------------------------------------------------------

def margin(seconds: float) -> str:
    return f"{duration(seconds)} to spare" if seconds >= 0 else f"{duration(-seconds)} over"


def signoff(people: list[tuple[str, str]], roles_needed: tuple[str, ...] = ("Drill lead", "Management")) -> list[str]:
    rows = [[name, role, "", ""] for name, role in people]
    roles = {r.lower() for _, r in people}
    for role in roles_needed:
        if role.lower() not in roles:
            rows.append(["", role, "", ""])
    return ["", "## Sign-off", "", *table(["Name", "Role", "Signature", "Date"], rows)]


# -- the incident report --------------------------------------------------------------------------


def command_log(commands: list[dict[str, Any]]) -> list[str]:
    """The commands and server-changing statements a run executed, in order (secrets masked)."""
    if not commands:
        return ["_No command was recorded._"]
    rows = [[time.strftime("%H:%M:%S", time.localtime(c["started"])), duration(c["seconds"]), c["outcome"],
             c["step"], f"`{c['command']}`"] for c in commands]
    return table(["Started", "Took", "Outcome", "Step", "Command"], rows, "lrlll")
