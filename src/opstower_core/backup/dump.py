"""The streaming dump: pg_dump → zstd (or gzip) → age → sha256 → temp file (+ S3 parts).

One pass, constant memory: pg_dump writes the custom format uncompressed on stdout; we
compress (multi-threaded zstd with a content checksum), optionally encrypt, hash, write
the temporary file and feed the multipart uploads (the primary's, and the replica's when
its copy is streamed) from the same bytes; the read-back (readback.py) follows the file as
it is written. Row counts are taken at the same time in the dump's exported snapshot, on
their own connection.

Waiting is bounded: pg_dump gets `--lock-wait-timeout` and the counting session
`lock_timeout`, both the run's `--wait-for-locks`; a watcher names the session holding the
lock after a few seconds of waiting, and stops pg_dump within a fraction of a second when
the run is cancelled (the console's Esc cannot interrupt a blocking read).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import humanize
import psycopg
import psycopg.sql
import zstandard

from opstower_core.advice import say
from opstower_core.artifacts.crypto import EncryptingWriter, EncryptionSettings
from opstower_core.artifacts.names import ArtifactName, write_private
from opstower_core.backup.locks import LockHolder, find_holders, what_to_do
from opstower_core.backup.model import BackupOptions, DumpResult
from opstower_core.backup.readback import ReadBack
from opstower_core.config import Target
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import Reporter
from opstower_core.pg.rowcounts import count_rows
from opstower_core.pg.tools import PgTools, connect

CHUNK = 1024 * 1024
# No byte from pg_dump for this long: look for a session holding a lock we wait for.
STALL_NOTICE = 2.0
WATCH_TICK = 0.2  # how often the watcher looks at the cancel flag
GONE = "no backup was written; the temporary file was removed"


class ByteSink(Protocol):
    """An upload fed as the artifact is written (the primary's StreamingUpload, the replica's feed).

    `write` must not raise for an upload failure: it records it for its own completion step."""

    def write(self, data: bytes) -> None: ...


class _Sink:
    """Where compressed bytes go: the temp file, the running sha256 and the S3 streams.

    A thread of its own does the three, so hashing and writing overlap the next read and
    compression instead of queueing behind them (the compressor's thread only hands bytes over).
    A failure there (a full disk, a dead upload) is raised in the producer at its next write."""

    DEPTH = 8  # compressed chunks in flight: a few MiB, constant memory

    def __init__(self, fd: int, uploads: Sequence[ByteSink], on_written: Callable[[int], None]) -> None:
        self.fd = fd
        self.on_written = on_written
        self.sha = hashlib.sha256()
        self.size = 0
        self.uploads = uploads
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="dump-sink", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep taking, so the producer never blocks on a dead sink
            try:
                # Straight to the file, no buffer: the read-back follows what is in the file.
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
                self.on_written(len(data))
                self.sha.update(data)
                self.size += len(data)
                for upload in self.uploads:
                    upload.write(data)
            except BaseException as exc:  # noqa: BLE001 - raised in the producer
                self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if data:
            self._queue.put(data)

    def close(self) -> None:
        """Wait until every byte is written and hashed; raise what went wrong there."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class StreamingDump:
    """One pg_dump of `target` into `tmp`. `run()` returns a DumpResult or raises with nothing left running."""

    def __init__(self, target: Target, tools: PgTools, options: BackupOptions, enc: EncryptionSettings,
                 reporter: Reporter, lock_wait: float, readback: ReadBack, uploads: Sequence[ByteSink] = (),
                 statistics: bool = False, server_major: int = 0) -> None:
        self.target = target
        self.readback = readback
        self.statistics = statistics
        self.server_major = server_major
        self.tools = tools
        self.options = options
        self.enc = enc
        self.r = reporter
        self.lock_wait = lock_wait
        self.uploads = uploads
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_tail: list[str] = []
        self.counts: dict[str, Any] = {}
        self.count_conn: psycopg.Connection | None = None
        self.our_pids: list[int] = []
        self.holder: LockHolder | None = None  # named by the watcher while we waited
        self._last_byte = time.monotonic()
        self._raw_bytes = 0  # pg_dump's output read so far
        self._done = threading.Event()

    # -- the pipeline ------------------------------------------------------------------
    def run(self, tmp: Path) -> DumpResult:
        snap_conn = connect(self.target, autocommit=False)
        self.our_pids.append(snap_conn.info.backend_pid)
        threads: list[threading.Thread] = []
        try:
            snap_conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = snap_conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            self.proc = self._start_pg_dump(snapshot)
            threads = [threading.Thread(target=self._pump_stderr, daemon=True),
                       # Row counts in the exported snapshot, while pg_dump streams: proves completeness later.
                       threading.Thread(target=self._count, args=(snapshot,), daemon=True),
                       threading.Thread(target=self._watch, daemon=True, name="dump-watch")]
            for t in threads:
                t.start()
            size, sha, raw_bytes = self._pump(tmp)
            rc = self.proc.wait()
            threads[0].join(5)
            threads[1].join()
            self._check(rc)
            return DumpResult(size, sha, raw_bytes, self.counts["rows"])
        except BaseException:
            self._stop()
            raise
        finally:
            self._done.set()
            snap_conn.close()

    def _start_pg_dump(self, snapshot: str) -> subprocess.Popen[bytes]:
        fmt = self.options.fmt
        args = [self.tools.pg_dump, f"--format={'custom' if fmt == 'custom' else 'plain'}",
                f"--snapshot={snapshot}", "--verbose", f"--dbname={self.target.dbname}",
                f"--lock-wait-timeout={max(1, int(self.lock_wait * 1000))}"]
        for table in self.options.tables or ():
            schema, _, name = table.partition(".")
            args.append('--table="' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"')
        if fmt == "custom":
            args.append("--compress=0")  # we compress with zstd, in parallel, outside pg_dump
            if self.statistics:
                args.append("--statistics")
        else:
            args += ["--no-owner", "--no-acl"]  # the reference's plain dump flags
        # UTC: timestamptz values in the dump's text do not depend on the server's or the host's
        # zone, so content digests of two dumps of the same data compare equal.
        env = {**self.target.libpq_env(), "PGTZ": "UTC"}
        if self.server_major >= 14:
            # A killed pg_dump's server session waiting for a lock would wait on until the lock is free
            # (it notices its dead client only then): let it check its client every second.
            env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c client_connection_check_interval=1000").strip()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        _widen_pipe(proc.stdout.fileno())
        return proc

    def _pump(self, tmp: Path) -> tuple[int, str, int]:
        """Read pg_dump's output to its end; (compressed size, sha256, uncompressed bytes)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.readback.start()
            sink = _Sink(fd, self.uploads, self.readback.written)
            try:
                self._stream(sink)
            finally:
                sink.close()  # every byte written and hashed (or the sink's error raised)
            os.fsync(fd)
        finally:
            os.close(fd)
            self.readback.writer_done()  # the read-back reads to the end of the file, then stops
        return sink.size, sink.sha.hexdigest(), self._raw_bytes

    def _stream(self, sink: _Sink) -> None:
        """pg_dump's stdout → compressor (→ age) → the sink's thread."""
        assert self.proc is not None and self.proc.stdout is not None
        compress, finish = self._compressor()
        # Encryption wraps the compressed stream in the same pass (age, constant memory).
        encryptor = EncryptingWriter(sink.write, list(self.enc.recipients)) if self.enc.enabled else None
        emit = encryptor.write if encryptor is not None else sink.write
        read = self.proc.stdout.read
        try:
            while chunk := read(CHUNK):
                self._last_byte = time.monotonic()
                self._raw_bytes += len(chunk)
                emit(compress(chunk))
                self.r.progress("dump", self._raw_bytes)
                if self.r.cancel.cancelled:
                    break
            if self.r.cancel.cancelled:  # also when the watcher stopped a waiting pg_dump
                raise Cancelled("the dump was stopped and its temporary file removed; no backup was written")
            emit(finish())
        except BaseException:
            if encryptor is not None:
                encryptor.abort()
            raise
        if encryptor is not None:
            encryptor.close()
        self.r.progress("dump", self._raw_bytes, force=True)

    def _compressor(self) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
        if self.options.fmt == "custom":
            comp = zstandard.ZstdCompressor(level=self.options.zstd_level, threads=self.options.zstd_threads,
                                            write_checksum=True)
            cobj = comp.compressobj()
            return cobj.compress, cobj.flush
        zobj = zlib.compressobj(self.options.gzip_level, zlib.DEFLATED, 31)  # 31: gzip container
        return zobj.compress, zobj.flush

    def _check(self, rc: int) -> None:
        """pg_dump's exit and the row counts, as the operator's sentence."""
        tail = self.stderr_tail
        count_error = self.counts.get("error", "")
        if _lock_timeout(" ".join(tail[-5:])) or _lock_timeout(count_error):
            raise self._lock_failure()
        if rc != 0:
            last = next((ln for ln in reversed(tail) if "error" in ln.lower()), tail[-1] if tail else "")
            raise OpsError(f"Database dump failed (pg_dump exit {rc}: {last.strip()})", GONE,
                           "check the log and the database, then run the backup again")
        if count_error:
            raise OpsError(f"Counting rows in the dump's snapshot failed ({count_error})",
                           "no backup was written", "check the database, then run the backup again")

    def _lock_failure(self) -> OpsError:
        holder = self.holder
        if holder is None:
            try:
                found = find_holders(self.target, self.our_pids, self._app_name(), waiting=False)
            except Exception:  # noqa: BLE001 - the sentence still says what happened
                found = []
            holder = found[0] if found else None
        wait = f"{self.lock_wait:g} s"
        if holder is None:
            return OpsError(f"The backup waited {wait} for a table lock and gave up (the holder has gone since)",
                            GONE, f"run the backup again; {say('wait_longer')}")
        return OpsError(f"The backup waited {wait} for a lock held by {holder.describe()}", GONE, what_to_do(holder))

    def _app_name(self) -> str:
        return self.target.libpq_env().get("PGAPPNAME", "opstower")

    def _stop(self) -> None:
        """Kill pg_dump and cancel a counting query still waiting: nothing keeps running after us."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._cancel_waiting_backends()
        conn = self.count_conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=2)
            except Exception:  # noqa: BLE001 - its lock_timeout ends the wait anyway
                pass

    def _cancel_waiting_backends(self) -> None:
        """pg_dump's server session waiting for a lock does not notice its client died: cancel it.

        Otherwise it stays queued for the lock until the lock timeout, and takes it the moment
        the holder lets go. Ours: the counting session, and sessions under our application name
        that started after our snapshot's and wait for a lock.
        """
        if not self.our_pids:
            return
        try:
            with connect(self.target) as conn:
                conn.execute("SET statement_timeout = '2s'")
                conn.execute(
                    """SELECT pg_cancel_backend(w.pid) FROM pg_stat_activity w
                       WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
                         AND (w.pid = ANY(%(ours)s) OR (w.application_name = %(app)s AND w.backend_start >=
                              (SELECT backend_start FROM pg_stat_activity WHERE pid = %(snap)s)))""",
                    {"ours": self.our_pids, "app": self._app_name(), "snap": self.our_pids[0]})
        except Exception:  # noqa: BLE001 - best effort: their lock timeout ends the wait anyway
            pass

    # -- helper threads ----------------------------------------------------------------
    def _pump_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            del self.stderr_tail[:-20]
            self.r.log("dump", line, "ERROR" if "error" in line.lower() else "DEBUG")

    def _count(self, snapshot: str) -> None:
        # Own connection importing the snapshot: an error while counting (a table this role may not
        # read) must not abort the exporting transaction, or pg_dump fails with "could not import
        # the requested snapshot" instead of its own, telling error.
        try:
            with connect(self.target, autocommit=False) as conn:
                self.count_conn = conn
                self.our_pids.append(conn.info.backend_pid)
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute(psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot)))
                conn.execute(psycopg.sql.SQL("SET LOCAL lock_timeout = {}").format(
                    psycopg.sql.Literal(f"{max(1, int(self.lock_wait * 1000))}ms")))
                rows = count_rows(conn)
                if self.options.tables is not None:  # the dump holds these tables only
                    rows = {k: v for k, v in rows.items() if k in self.options.tables}
                self.counts["rows"] = rows
                conn.rollback()
        except Exception as exc:  # noqa: BLE001 - reported by the dump step
            text = getattr(exc, "sentence", None) or str(exc).strip()
            self.counts["error"] = text.splitlines()[0] if text else type(exc).__name__

    def _watch(self) -> None:
        """Stop pg_dump when the run is cancelled; name the holder of a lock we wait for."""
        next_look = time.monotonic() + STALL_NOTICE
        while not self._done.wait(WATCH_TICK):
            if self.r.cancel.cancelled:
                self._stop()
                return
            now = time.monotonic()
            if self.holder is None and now >= next_look and now - self._last_byte >= STALL_NOTICE:
                next_look = now + STALL_NOTICE
                try:
                    found = find_holders(self.target, list(self.our_pids), self._app_name())
                except Exception:  # noqa: BLE001 - only a notice; the lock timeout still bounds the wait
                    continue
                if found:
                    self.holder = found[0]
                    self.r.log("dump", f"Waiting for a lock held by {self.holder.describe()}; giving up after "
                               f"{self.lock_wait:g} s ({say('wait_option_name')})", "WARN")


def _widen_pipe(fd: int) -> None:
    """A pipe of CHUNK bytes instead of 64 KiB: pg_dump's small writes fill it without waking
    us for each 64 KiB, and one read takes a whole chunk (Linux; elsewhere the default stays)."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except OSError:  # above /proc/sys/fs/pipe-max-size, or not Linux
        pass


def _lock_timeout(text: str) -> bool:
    text = text.lower()
    return "lock timeout" in text or "could not obtain lock" in text


def log_sizes(r: Reporter, dumped: DumpResult) -> None:
    ratio = 100 * (1 - dumped.size_bytes / dumped.uncompressed_bytes) if dumped.uncompressed_bytes else 0.0
    r.log("dump", f"Compressed size: {humanize.naturalsize(dumped.size_bytes, binary=True)} "
          f"(from {humanize.naturalsize(dumped.uncompressed_bytes, binary=True)} original, {ratio:.0f}% smaller)")


class GlobalsDump:
    """Roles and tablespaces (pg_dumpall --globals-only, without passwords), taken on a thread of
    its own beside the dump and written beside the artifact when that is stored."""

    def __init__(self, tools: PgTools, target: Target) -> None:
        self.tools = tools
        self.target = target
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = b""
        self.note = ""
        self._thread = threading.Thread(target=self._run, name="dump-globals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.proc = subprocess.Popen(
                [self.tools.pg_dumpall, "--globals-only", "--no-role-passwords", f"--database={self.target.dbname}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.target.libpq_env(), stdin=subprocess.DEVNULL)
            out, err = self.proc.communicate(timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            self.stop()
            self.note = f"pg_dumpall could not run ({exc})"
            return
        if self.proc.returncode != 0:
            reason = err.decode("utf-8", "replace").strip().splitlines()
            self.note = reason[-1] if reason else f"pg_dumpall exit {self.proc.returncode}"
            return
        self.out = out

    def write(self, directory: Path, name: ArtifactName) -> tuple[bool, str]:
        """(dumped, note): the file's name, or why there is none."""
        self._thread.join()
        if self.note:
            return False, self.note
        write_private(directory / name.globals_filename, self.out)
        return True, name.globals_filename

    def stop(self) -> None:
        """The run failed: pg_dumpall does not outlive it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
