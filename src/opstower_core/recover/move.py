"""Rows from the source database into a live session: the embedded server has no dblink or
postgres_fdw, so they travel through the client. A psql child runs `COPY (SELECT …) TO STDOUT`
on the source (the per-row protocol work stays in C) and its output is written in 1 MiB
pieces into `COPY … FROM STDIN` of the live session, inside that session's transaction."""

from __future__ import annotations

import subprocess
import threading

import psycopg

from opstower_core.errors import OpsError
from opstower_core.events import CancelToken
from opstower_core.recover.source import RecoverySource

# Text COPY under fixed settings, so every value reads back as it was written.
_PGOPTIONS = "-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex"
CHUNK = 1 << 20


def copy_rows(source: RecoverySource, select_sql: str, conn: psycopg.Connection, copy_in_sql: str, psql: str,
              cancel: CancelToken) -> int:
    """Stream `select_sql` run on the source into `copy_in_sql` (a COPY … FROM STDIN) on `conn`;
    the number of rows written. A cancel stops the source and aborts the COPY."""
    env = source.target.libpq_env()
    env.update(PGDATABASE=source.dbname, PGAPPNAME="opstower-recover", PGOPTIONS=_PGOPTIONS)
    cmd = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"COPY ({select_sql}) TO STDOUT"]
    err: list[bytes] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        try:
            with conn.cursor() as cur:
                with cur.copy(copy_in_sql) as cp:
                    while chunk := proc.stdout.read(CHUNK):
                        if cancel.cancelled:
                            proc.kill()
                            cancel.check("the live tables were not changed")
                        cp.write(chunk)
                    rc = proc.wait()
                    reader.join(5)
                    if rc != 0:
                        # Raised inside the COPY block: psycopg aborts the COPY, nothing half-read is kept.
                        text = b"".join(err).decode("utf-8", "replace").strip().splitlines()
                        raise OpsError(f"Reading the source failed ({text[-1] if text else f'psql exit {rc}'})",
                                       "the live tables were not changed", "")
                return max(cur.rowcount, 0)
        finally:
            if proc.poll() is None:
                proc.kill()
