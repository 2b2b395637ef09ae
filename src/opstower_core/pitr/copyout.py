"""Copy one database out of a recovered cluster into the live server, under a new name."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.events import Event, Status, StepFinished, StepStarted
from opstower_core.pg.admin import free_name
from opstower_core.pg.tools import connect, quote_ident, select_tools, server_info
from opstower_core.pitr.recover import ScratchCluster

COUNTS = ("SELECT n.nspname || '.' || c.relname, c.oid::regclass::text FROM pg_class c JOIN pg_namespace n "
          "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
          "'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1")


def row_counts(target: Target) -> dict[str, int]:
    with connect(target) as conn:
        tables = conn.execute(COUNTS).fetchall()
        return {name: conn.execute(f"SELECT count(*) FROM {reg}").fetchone()[0] for name, reg in tables}


def copy_database(settings: Settings, cluster: ScratchCluster, dbname: str, live: Target, name: str | None,
                  on_event: Callable[[Event], None] = lambda e: None) -> str:
    """pg_dump -Fc from the recovered cluster | pg_restore into a new database on the live server.

    Proof: every table's row count in the copy equals the recovered cluster's. Returns the copy's name;
    on failure the copy is dropped.
    """
    step = "copy_out"
    started = time.monotonic()
    source = cluster.target(dbname)
    with connect(live, "postgres") as conn:
        tools = select_tools(settings, server_info(conn).major)
        name = free_name(conn, name or f"{dbname}_pitr_{time.strftime('%Y%m%d%H%M%S')}")
        on_event(StepStarted(step, f"Copying {dbname} out of the recovered cluster into {name}"))
        conn.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    try:
        dest = Target(name=live.name, dbname=name, host=live.host, port=live.port, user=live.user,
                      service=live.service, passfile=live.passfile, sslmode=live.sslmode)
        dump = subprocess.Popen([str(tools.pg_dump), "-Fc", "-Z0", "-d", _dsn(source)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        restore = subprocess.run([str(tools.pg_restore), "--exit-on-error", "-d", _dsn(dest)], stdin=dump.stdout,
                                 capture_output=True, text=True, env=dest.libpq_env())
        dump.stdout.close()  # type: ignore[union-attr]
        dump_err = dump.stderr.read().decode(errors="replace") if dump.stderr else ""
        if dump.wait() != 0 or restore.returncode != 0:
            raise OpsError(f"Copying {dbname} failed ({(dump_err or restore.stderr).strip()[:300]})",
                           f"the partial copy {name} was dropped; the recovered cluster is untouched",
                           "fix the cause and retry, or keep the cluster (--keep) and dump it yourself")
        want, got = row_counts(source), row_counts(dest)
        if want != got:
            diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            raise OpsError(f"The copy of {dbname} differs from the recovered data in {', '.join(diff[:5])}",
                           f"the copy {name} was dropped", "retry; if it repeats, keep the cluster (--keep)")
    except BaseException:
        with connect(live, "postgres") as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        raise
    on_event(StepFinished(step, Status.PASS, f"{name}: {len(got)} tables, row counts equal to the recovered data",
                          time.monotonic() - started, {"database": name, "tables": got}))
    return name


def _dsn(t: Target) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**{k: v for k, v in t.conninfo().items() if v is not None})
