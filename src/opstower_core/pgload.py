"""Stream an artifact into a database: zstd/gzip decompression feeding pg_restore or psql.

Used by the full restoration test (verify check 8) and by restores. Plain SQL goes through
psql with ON_ERROR_STOP; custom format through pg_restore --exit-on-error. Nothing is
decompressed to disk for a single-job restore.
"""

from __future__ import annotations

import subprocess
import threading
from typing import IO

from .artifact import ArtifactName
from .config import Target
from .errors import Cancelled, OpsError
from .events import Reporter
from .pgtools import PgTools
from .scan import OUT_CHUNK, DumpReader, ScanError


def load_command(tools: PgTools, name: ArtifactName, dbname: str, no_owner: bool = True,
                 tables: list[str] | None = None, source: str | None = None, jobs: int = 1) -> list[str]:
    """The exact command that loads a dump of `name`'s format into `dbname` (stdin unless `source`)."""
    if name.format == "plain":
        return [tools.psql, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", f"--dbname={dbname}",
                "--single-transaction"] + ([f"--file={source}"] if source else [])
    cmd = [tools.pg_restore, "--exit-on-error", f"--dbname={dbname}"]
    if no_owner:
        cmd += ["--no-owner", "--no-acl"]
    if jobs > 1 and source:
        cmd.append(f"--jobs={jobs}")
    for t in tables or []:
        cmd.append(f"--table={t}")
    if source:
        cmd.append(source)
    return cmd


def stream_into(
    cmd: list[str],
    target: Target,
    raw: IO[bytes],
    compression: str,
    reporter: Reporter,
    step: str,
    total_bytes: int = 0,
    identities: list | None = None,
) -> None:
    """Run `cmd` with the artifact's dump bytes on its stdin; raise OpsError with its last error line.

    The artifact is (decrypted and) decompressed on the fly; damage found on the way stops
    the tool (its stdin is closed early) and is reported as such.
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=target.libpq_env())
    tail: list[str] = []

    def pump_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                tail.append(text)
                del tail[:-20]
                reporter.log(step, text, "ERROR" if "error" in text.lower() else "DEBUG")

    output = threading.Thread(target=pump_output, daemon=True)
    output.start()
    reader = DumpReader(raw, compression, identities, lambda n: reporter.progress(step, n, total_bytes))
    buf = memoryview(bytearray(OUT_CHUNK))
    broken = False
    try:
        assert proc.stdin is not None
        while True:
            if reporter.cancel.cancelled:
                raise Cancelled()
            try:
                n = reader.readinto(buf)
                if not n:
                    reader.finish()
                    break
            except ScanError as exc:
                raise OpsError(f"The artifact is damaged: {exc}", "", "") from None
            try:
                proc.stdin.write(buf[:n])
            except BrokenPipeError:
                broken = True  # the tool stopped reading: its exit code says why
                break
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.close()
        output.join(5)
    if rc != 0 or broken:
        last = next((ln for ln in reversed(tail) if "error" in ln.lower()), tail[-1] if tail else f"exit {rc}")
        raise OpsError(f"{cmd[0].rsplit('/', 1)[-1]} failed: {last}", "", "")
