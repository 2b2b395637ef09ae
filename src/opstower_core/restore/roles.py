"""Roles from a backup's globals file, created on request.

Existing roles are never altered; passwords are never carried (the globals file is dumped
without them)."""

from __future__ import annotations

import re

import psycopg

from opstower_core.events import Reporter

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_ROLE = re.compile(rf"^CREATE ROLE ({_IDENT});\s*$")


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()


def parse_roles(globals_sql: str) -> dict[str, list[str]]:
    """Role name → its CREATE ROLE line and the ALTER ROLE lines that follow it in a pg_dumpall globals file."""
    roles: dict[str, list[str]] = {}
    idents: dict[str, str] = {}
    for line in globals_sql.splitlines():
        m = _CREATE_ROLE.match(line)
        if m:
            name = _unquote(m.group(1))
            roles[name] = [line.strip()]
            idents[m.group(1)] = name
            continue
        for ident, name in idents.items():
            if line.startswith(f"ALTER ROLE {ident} ") and line.rstrip().endswith(";"):
                roles[name].append(line.strip())
    return roles


def existing_roles(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


def create_roles(conn: psycopg.Connection, roles: dict[str, list[str]], r: Reporter, step: str) -> list[str]:
    """Create the roles that do not exist yet (with their attributes); existing roles are never altered."""
    have = existing_roles(conn)
    created = []
    for name, statements in roles.items():
        if name in have:
            r.log(step, f"Role {name} exists: left as it is")
            continue
        with conn.transaction():
            for sql in statements:
                conn.execute(sql)
        r.log(step, f"Created role {name}: {' '.join(statements)}")
        created.append(name)
    return created

