"""What an artifact says about itself, read from its own bytes before anything is touched:
the database it is a dump of, and the roles its objects are owned by or granted to.

Custom format: `pg_restore --list` prints the archive header (`;     dbname: NAME`), and
`pg_restore --schema-only --file=-` the OWNER TO / GRANT / REVOKE statements; both read only
the start of the stream (the TOC). Plain SQL: the dump's statements, scanned line by line
(COPY data skipped); the database name only when the dump was made with --create."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.events import Reporter
from opstower_core.pg.load import pg_restore_output, read_dump
from opstower_core.pg.tools import PgTools
from opstower_core.repo.catalog import CatalogEntry

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_OWNER = re.compile(rf"\bOWNER TO ({_IDENT});\s*$")
_GRANT_TO = re.compile(rf"^(?:GRANT|ALTER DEFAULT PRIVILEGES\b.*\bGRANT)\b.*\bTO ((?:{_IDENT}\s*,\s*)*{_IDENT})"
                       r"(?: WITH GRANT OPTION)?(?: GRANTED BY .*)?;\s*$")
_REVOKE_FROM = re.compile(rf"^(?:REVOKE|ALTER DEFAULT PRIVILEGES\b.*\bREVOKE)\b.*\bFROM ((?:{_IDENT}\s*,\s*)*{_IDENT})"
                          r"(?: CASCADE)?;\s*$")
_FOR_ROLE = re.compile(rf"^ALTER DEFAULT PRIVILEGES FOR ROLE ({_IDENT})\b")
_SESSION_AUTH = re.compile(rf"^SET SESSION AUTHORIZATION ({_IDENT})'?;")
_CONNECT = re.compile(r"^\\connect (?:-reuse-previous=on )?(?:\"dbname='((?:[^']|'')*)'\"|(\S+))")
_CREATE_DB = re.compile(rf"^CREATE DATABASE ({_IDENT})")
_IDENTS = re.compile(_IDENT)
_PSEUDO = {"public", "current_user", "session_user", "current_role"}


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()


@dataclass
class ArtifactFacts:
    """The artifact's own word on what it holds."""

    dbname: str | None = None  # the database it is a dump of (None: the bytes do not say)
    owners: set[str] = field(default_factory=set)
    grantees: set[str] = field(default_factory=set)
    owner_statements: int = 0
    grant_statements: int = 0
    statistics: int | None = None  # STATISTICS DATA entries in a custom archive's TOC (None: not known)

    @property
    def roles(self) -> set[str]:
        return self.owners | self.grantees

    def add_sql_line(self, line: str) -> None:
        """Take what a line of the dump's SQL says about roles and the database."""
        if (m := _OWNER.search(line)) and line.startswith("ALTER "):
            self.owners.add(_unquote(m.group(1)))
            self.owner_statements += 1
            return
        for pattern in (_GRANT_TO, _REVOKE_FROM):
            if m := pattern.match(line):
                self.grant_statements += 1
                self.grantees |= {_unquote(i) for i in _IDENTS.findall(m.group(1))
                                  if _unquote(i) not in _PSEUDO and i.upper() != "PUBLIC"}
                if m2 := _FOR_ROLE.match(line):
                    self.owners.add(_unquote(m2.group(1)))
                return
        if m := _SESSION_AUTH.match(line):
            self.owners.add(_unquote(m.group(1).strip("'")))
        elif self.dbname is None and (m := _CREATE_DB.match(line)):
            self.dbname = _unquote(m.group(1))
        elif self.dbname is None and (m := _CONNECT.match(line)):
            self.dbname = (m.group(1) or "").replace("''", "'") or _unquote(m.group(2))


def read_facts(settings: Settings, entry: CatalogEntry, tools: PgTools) -> ArtifactFacts:
    """The artifact's database name and the roles it needs, from its own bytes."""
    facts = ArtifactFacts()
    quiet = Reporter()
    if entry.name.format == "custom":
        try:
            for line in pg_restore_output(settings, entry, tools, ["--list"], quiet, "plan"):
                if line.startswith(";     dbname: "):
                    facts.dbname = line.split(": ", 1)[1]
                elif " STATISTICS DATA " in line and not line.startswith(";"):
                    facts.statistics = (facts.statistics or 0) + 1
            facts.statistics = facts.statistics or 0
            for line in pg_restore_output(settings, entry, tools, ["--schema-only", "--file=-"], quiet, "plan"):
                facts.add_sql_line(line)
        except OpsError:
            pass  # an unreadable archive is reported by the verification step
        return facts
    _scan_plain(settings, entry, facts)
    return facts


def _scan_plain(settings: Settings, entry: CatalogEntry, facts: ArtifactFacts) -> None:
    """Every statement line of a plain dump (COPY data skipped), fed as it streams."""
    state = {"rest": b"", "copy": False}

    def sink(chunk: memoryview) -> None:
        data = state["rest"] + bytes(chunk)
        lines = data.split(b"\n")
        state["rest"] = lines.pop()
        for raw in lines:
            if state["copy"]:
                state["copy"] = raw != b"\\."
                continue
            if raw.startswith(b"COPY ") and raw.rstrip().endswith(b"FROM stdin;"):
                state["copy"] = True
            elif raw[:1] in (b"A", b"G", b"R", b"S", b"C", b"\\"):
                facts.add_sql_line(raw.decode("utf-8", "replace"))

    try:
        read_dump(settings, entry, sink, Reporter(), "plan")
    except OpsError:
        return  # a damaged artifact is reported by the verification step
    if state["rest"] and not state["copy"]:
        facts.add_sql_line(state["rest"].decode("utf-8", "replace"))
