"""Server-side operations of a restore: names, sessions, connection blocking, create / drop /
rename and the database properties a dump does not carry.

Every function that changes the server returns or logs the exact SQL it ran, so the plan
shown to the operator and what happens are the same statements.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from opstower_core.advice import say
from opstower_core.config import Target
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import CancelToken, Reporter
from opstower_core.pg.tools import connect, quote_ident

MAX_IDENT_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names silently


def derived_name(base: str, suffix: str) -> str:
    """`<base><suffix>` cut to PostgreSQL's 63 bytes by shortening `base`, never the suffix."""
    room = MAX_IDENT_BYTES - len(suffix.encode())
    raw = base.encode()[:room]
    return raw.decode("utf-8", "ignore") + suffix


def literal(value: str) -> str:
    """A SQL string literal for names we show and run (standard_conforming_strings is on since 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def maintenance_db(live: str) -> str:
    """The database we connect to for DDL on `live` (never `live` itself)."""
    return "template1" if live == "postgres" else "postgres"


@contextmanager
def admin(target: Target, live: str) -> Iterator[psycopg.Connection]:
    """A connection for DDL on `live`: to "postgres", or "template1" where that is not allowed."""
    try:
        conn = connect(target, dbname=maintenance_db(live))
    except OpsError as exc:
        # Only a server without a "postgres" database is tried through template1; any other
        # failure (a wrong password, the server down) is reported as it is, naming `live`.
        if maintenance_db(live) == "template1" or f'database "{maintenance_db(live)}" does not exist' not in exc.what:
            raise OpsError(exc.what.replace(f"database {maintenance_db(live)!r}", f"the server of database {live!r}", 1),
                           exc.state, exc.next_step) from None
        conn = connect(target, dbname="template1")
    with conn:
        yield conn


def db_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def free_name(conn: psycopg.Connection, name: str) -> str:
    """`name`, or `name_2`, `name_3`… when a database of that name already exists."""
    candidate, n = name, 1
    while db_exists(conn, candidate):
        n += 1
        candidate = derived_name(name, f"_{n}")
    return candidate


def database_size(conn: psycopg.Connection, name: str) -> int | None:
    row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone() if db_exists(conn, name) else None
    return int(row[0]) if row else None


# -- sessions -------------------------------------------------------------------------

SESSIONS_SQL = """
SELECT pid, usename, application_name,
       COALESCE(host(client_addr), CASE WHEN client_port = -1 THEN 'local socket' ELSE '' END),
       COALESCE(state, ''), backend_start, backend_type
FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY backend_start"""


def sessions(conn: psycopg.Connection, name: str) -> list[dict[str, Any]]:
    """Who is connected to `name` now (pg_stat_activity), oldest first."""
    out = []
    for pid, user, app, client, state, since, btype in conn.execute(SESSIONS_SQL, (name,)).fetchall():
        out.append({"pid": pid, "user": user or "", "application": app or "", "client": client or "",
                    "state": state, "since": since.isoformat() if since else "", "backend_type": btype or ""})
    return out


def describe_session(s: dict[str, Any]) -> str:
    app = f" ({s['application']})" if s.get("application") else ""
    return f"pid {s['pid']} user {s['user'] or '?'}{app} from {s['client'] or '?'}, {s['state'] or s['backend_type']}, since {s['since'][:19]}"


def prepared_transactions(conn: psycopg.Connection, name: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)).fetchall()]


def terminate_sql(name: str) -> str:
    return (f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = {literal(name)} "
            "AND pid <> pg_backend_pid()")


@dataclass
class ConnState:
    """A database's connection settings before we blocked it."""

    allow: bool
    limit: int


def open_state(before: ConnState) -> ConnState:
    """`before`, unless it is itself a block (ALLOW_CONNECTIONS false or CONNECTION LIMIT 0), most likely
    left by a killed run: then the database is to accept connections again, never to keep the block."""
    if before.allow and before.limit != 0:
        return before
    return ConnState(True, -1 if before.limit == 0 else before.limit)


def block_sql(name: str) -> list[str]:
    q = quote_ident(name)
    return [f"ALTER DATABASE {q} WITH ALLOW_CONNECTIONS false",
            f"-- if not permitted: ALTER DATABASE {q} WITH CONNECTION LIMIT 0"]


def block_connections(conn: psycopg.Connection, name: str, r: Reporter, step: str) -> ConnState:
    """Stop new sessions arriving: ALLOW_CONNECTIONS false, else CONNECTION LIMIT 0."""
    allow, limit = conn.execute("SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = %s",
                                (name,)).fetchone()
    before = ConnState(bool(allow), int(limit))
    sql = f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS false"
    try:
        conn.execute(sql)
    except psycopg.Error as exc:
        r.log(step, f"{sql} not permitted ({first_line(exc)}); using CONNECTION LIMIT 0 instead", "WARN")
        sql = f"ALTER DATABASE {quote_ident(name)} WITH CONNECTION LIMIT 0"
        conn.execute(sql)
    r.log(step, f"New connections to {name} blocked: {sql}")
    return before


def unblock_sql(name: str, before: ConnState) -> str:
    return (f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS {'true' if before.allow else 'false'} "
            f"CONNECTION LIMIT {before.limit}")


def unblock_connections(conn: psycopg.Connection, name: str, before: ConnState) -> str:
    sql = unblock_sql(name, before)
    conn.execute(sql)
    return sql


def terminate_sessions(conn: psycopg.Connection, name: str, r: Reporter, step: str, wait: float = 15.0) -> int:
    """Terminate every other session on `name` and wait until they are gone; returns how many."""
    seen: set[int] = set()
    deadline = time.monotonic() + wait
    pause = 0.005  # a terminated backend is usually gone within milliseconds: look again soon, then less often
    while True:
        current = sessions(conn, name)
        if not current:
            return len(seen)
        for s in current:
            if s["pid"] not in seen:
                r.log(step, f"Terminating {describe_session(s)}")
                seen.add(s["pid"])
        conn.execute(terminate_sql(name))
        if time.monotonic() > deadline:
            left = ", ".join(str(s["pid"]) for s in current)
            raise OpsError(f"Sessions on {name} did not end after pg_terminate_backend (pids {left})", "", "")
        r.cancel.check()
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


# -- create / drop / rename -----------------------------------------------------------

@dataclass
class DbProps:
    """What a database carries outside its dump: encoding, locale, owner, settings, ACL, limits."""

    owner: str | None = None
    encoding: str | None = None
    collate: str | None = None
    ctype: str | None = None
    provider: str | None = None  # c (libc), i (icu), b (builtin)
    locale: str | None = None  # ICU / builtin locale
    conn: ConnState | None = None
    settings: list[tuple[str | None, list[str]]] = field(default_factory=list)  # (role or None, ["k=v"])
    grants: list[tuple[str, str, bool]] | None = None  # (grantee or PUBLIC, privilege, grantable); None = default


def read_props(conn: psycopg.Connection, name: str) -> DbProps:
    row = conn.execute(
        "SELECT to_jsonb(d) - 'datacl' - 'datfrozenxid' - 'datminmxid', pg_get_userbyid(d.datdba),"
        " pg_encoding_to_char(d.encoding), d.datacl IS NULL FROM pg_database d WHERE datname = %s", (name,)
    ).fetchone()
    if row is None:
        raise OpsError(f"Database {name} does not exist", "", "")
    d, owner, encoding, default_acl = row
    props = DbProps(owner=owner, encoding=encoding, collate=d.get("datcollate"), ctype=d.get("datctype"),
                    provider=d.get("datlocprovider"), locale=d.get("datlocale") or d.get("daticulocale"),
                    conn=ConnState(bool(d.get("datallowconn", True)), int(d.get("datconnlimit", -1))))
    for role, config in conn.execute(
        "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig"
        " FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s", (name,)
    ).fetchall():
        props.settings.append((role, list(config or [])))
    if not default_acl:
        props.grants = [(g, p, bool(gr)) for g, p, gr in conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,"
            " a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", (name,)).fetchall()]
    return props


def create_sql(name: str, props: DbProps | None) -> str:
    """CREATE DATABASE from template0 with the live database's encoding, locale and owner."""
    sql = f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"
    if props is None:
        return sql
    if props.encoding:
        sql += f" ENCODING {literal(props.encoding)}"
    if props.provider == "i":
        sql += " LOCALE_PROVIDER icu" + (f" ICU_LOCALE {literal(props.locale)}" if props.locale else "")
    elif props.provider == "b":
        sql += " LOCALE_PROVIDER builtin" + (f" BUILTIN_LOCALE {literal(props.locale)}" if props.locale else "")
    if props.collate:
        sql += f" LC_COLLATE {literal(props.collate)}"
    if props.ctype:
        sql += f" LC_CTYPE {literal(props.ctype)}"
    if props.owner:
        sql += f" OWNER {quote_ident(props.owner)}"
    return sql


def create_database(conn: psycopg.Connection, name: str, props: DbProps | None, r: Reporter, step: str) -> str:
    """Create `name` like the live database; a locale the server lacks falls back to the defaults."""
    sql = create_sql(name, props)
    try:
        conn.execute(sql)
    except psycopg.errors.DuplicateDatabase:
        raise
    except psycopg.Error as exc:
        if props is None:
            raise
        fallback = create_sql(name, DbProps(owner=props.owner))
        r.log(step, f"{sql} failed ({first_line(exc)}); creating with the server's defaults instead", "WARN")
        conn.execute(fallback)
        sql = fallback
    r.log(step, sql)
    return sql


def drop_sql(name: str) -> str:
    return f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"


def drop_database(conn: psycopg.Connection, name: str, bound: float = 15.0) -> str:
    """Drop a database this run made (`conn`: autocommit, on another database); the SQL that did it.

    WITH (FORCE) ends the sessions of our own role, but a role without SUPERUSER is refused
    outright (InsufficientPrivilege) while any superuser session is in the database — an
    autovacuum worker analysing what was just loaded, for one. A plain DROP DATABASE ends
    autovacuum workers itself (and waits up to 5 s for any other session), so it is tried then.
    Either is tried again, backing off, for up to `bound` seconds; the last error is raised if
    the database is still there."""
    plain = f"DROP DATABASE IF EXISTS {quote_ident(name)}"
    deadline, delay = time.monotonic() + bound, 0.2
    while True:
        try:
            conn.execute(drop_sql(name))
            return drop_sql(name)
        except psycopg.errors.InsufficientPrivilege as exc:
            last: psycopg.Error = exc
            try:
                conn.execute(plain)
                return plain
            except psycopg.Error as again:
                last = again
        except (psycopg.errors.ObjectInUse, psycopg.errors.LockNotAvailable) as exc:
            last = exc
        if time.monotonic() + delay > deadline:
            raise last
        time.sleep(delay)
        delay = min(2 * delay, 2.0)


def rename_sql(old: str, new: str) -> str:
    return f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}"


def swap_statements(live: str, staging: str, old: str, before: ConnState) -> list[str]:
    """Rename live → old and staging → live; each gets the connection settings live had."""
    return [rename_sql(live, old), rename_sql(staging, live), unblock_sql(old, before), unblock_sql(live, before)]


def in_place_statements(work: str, live: str, before: ConnState | None) -> list[str]:
    return [rename_sql(work, live)] + ([unblock_sql(live, before)] if before else [])


def in_transaction(conn: psycopg.Connection, statements: list[str]) -> None:
    """All or nothing: the live name always points at one whole database."""
    with conn.transaction():
        for sql in statements:
            conn.execute(sql)


_LIST_GUCS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
              "default_text_search_config"}


def _guc_value(key: str, value: str) -> str:
    if key.lower() in _LIST_GUCS - {"default_text_search_config"} and "," in value:
        parts = []
        for item in value.split(","):
            item = item.strip()
            if len(item) >= 2 and item[0] == item[-1] == '"':
                item = item[1:-1].replace('""', '"')
            parts.append(literal(item))
        return ", ".join(parts)
    return literal(value)


def apply_props_sql(name: str, props: DbProps) -> list[str]:
    """Statements giving a freshly created database the settings and grants of the old one.

    Both are kept by oid, so they follow the database through the later rename."""
    q = quote_ident(name)
    out = []
    for role, config in props.settings:
        for item in config:
            key, _, value = item.partition("=")
            prefix = f"ALTER ROLE {quote_ident(role)} IN DATABASE {q}" if role else f"ALTER DATABASE {q}"
            out.append(f"{prefix} SET {key} TO {_guc_value(key, value)}")
    if props.grants is not None:
        out.append(f"REVOKE ALL ON DATABASE {q} FROM PUBLIC")
        for grantee, privilege, grantable in props.grants:
            who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
            out.append(f"GRANT {privilege} ON DATABASE {q} TO {who}{' WITH GRANT OPTION' if grantable else ''}")
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- waits on the server: bounded, cancellable, explained ---------------------------------

DATABASE_LOCKS_SQL = """
SELECT DISTINCT a.pid, a.usename, a.application_name, a.state, a.query,
       COALESCE(a.xact_start, a.query_start, a.backend_start), d.datname
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid JOIN pg_database d ON d.oid = l.objid
WHERE l.granted AND l.locktype = 'object' AND l.classid = 'pg_database'::regclass
  AND d.datname = ANY(%s) AND l.pid <> pg_backend_pid()
ORDER BY 6"""


def database_lock_holders(conn: psycopg.Connection, names: list[str]) -> list[str]:
    """Sessions holding a lock on one of these databases (ALTER/COMMENT ON DATABASE in an open transaction)."""
    out = []
    for pid, user, app, state, query, since, db in conn.execute(DATABASE_LOCKS_SQL, (names,)).fetchall():
        q = " ".join((query or "").split())
        q = q if len(q) <= 120 else q[:117] + "..."
        when = since.astimezone().isoformat(sep=" ", timespec="seconds") if since else "?"
        out.append(f"pid {pid} on database {db} (user {user or '?'}, application {app or '?'}, "
                   f"{state or 'state unknown'} since {when}, query \"{q}\")")
    return out


@contextmanager
def guarded(conn: psycopg.Connection, cancel: CancelToken | None, lock_wait: float, names: list[str],
            what: str = "the restore") -> Iterator[psycopg.Connection]:
    """Statements on `conn` inside wait at most `lock_wait` s for a lock (lock_timeout) and are cancelled
    on the server within 0.1 s of a cancel request; a lock that times out becomes an OpsError naming its
    holder. Without this, one session holding a lock would hang us past any Ctrl-C."""
    conn.execute(f"SET lock_timeout = '{max(1, int(lock_wait * 1000))}ms'")
    try:
        # PostgreSQL 14+: a backend whose client was killed notices within a second, even while
        # it waits for a lock, instead of keeping (or later taking) the lock for a dead run.
        conn.execute("SET client_connection_check_interval = '1s'")
    except psycopg.Error:
        pass
    token = cancel or CancelToken()
    try:
        with cancelled_on_request(conn, token):
            yield conn
    except psycopg.errors.LockNotAvailable:
        holders = database_lock_holders(conn, names) if not conn.broken else []
        who = f"a lock held by {'; '.join(holders)}" if holders else "a lock (its holder has gone since)"
        nxt = (f"ask that session to commit or roll back, or end it (SELECT pg_terminate_backend({holders[0].split()[1]})),"
               f" then run it again; {say('wait_longer')}" if holders
               else f"run it again; {say('wait_longer')}")
        raise OpsError(f"{what} waited {lock_wait:g} s for {who}", "", nxt) from None
    except psycopg.errors.QueryCanceled:
        if token.cancelled:
            raise Cancelled() from None
        raise


@contextmanager
def cancelled_on_request(conn: psycopg.Connection, cancel: CancelToken) -> Iterator[None]:
    """A cancel request cancels what runs on `conn` on the server within 0.1 s. Leaving does not
    wait for the watcher, which ends by itself within 0.1 s: joining it cost every admin step
    that much (CREATE DATABASE, the switch, ANALYZE), on the RTO clock."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.1):
                if not done.is_set():  # the block may have ended meanwhile: its connection is not ours
                    conn.cancel_safe()
                return

    threading.Thread(target=watch, name="cancel-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


# -- room on the server ------------------------------------------------------------------

def server_free_bytes(conn: psycopg.Connection, target: Target, live: str | None) -> tuple[int | None, str]:
    """(free bytes where a new database of the server goes, where that was read); (None, why) when it
    cannot be known: a remote server, or a data directory this process may not read. Never guessed."""
    import os

    host = conn.info.host or target.display_host or ""  # where libpq really went (a socket dir for a local one)
    if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1", "")):
        return None, f"the server runs on {host}: its disk cannot be seen from here"
    try:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        row = conn.execute("SELECT pg_tablespace_location(dattablespace) FROM pg_database WHERE datname = %s",
                           (live,)).fetchone() if live else None
    except psycopg.Error as exc:
        return None, f"the data directory is not visible to this role ({first_line(exc)})"
    where = (row[0] if row and row[0] else None) or os.path.join(data_dir, "base")
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return None, f"{where} cannot be read from here ({exc.strerror})"
    return st.f_bavail * st.f_frsize, where
