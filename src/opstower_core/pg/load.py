"""Loading an artifact into a database: psql for plain SQL, pg_restore for custom format.

Plain SQL: the decompressed stream goes to `psql -v ON_ERROR_STOP=1 --single-transaction`,
so a dump that fails halfway leaves nothing behind. Custom format: `pg_restore
--exit-on-error`, streamed on stdin for one job; for several jobs pg_restore needs a seekable
file, so the .dump.zst is first decompressed to a private temporary file in the backup
directory (removed afterwards, whatever happens). Selective restores pass pg_restore a
`--use-list` of the chosen tables' entries, taken from the archive's own table of contents.
"""

from __future__ import annotations

import os
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from opstower_core.advice import say
from opstower_core.artifacts.names import ArtifactName
from opstower_core.artifacts.scan import OUT_CHUNK, DumpReader, ScanError
from opstower_core.config import Settings, Target
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import Reporter, command
from opstower_core.pg.blockload import BLOCK_ROWS, Block, Markers, Splitter
from opstower_core.pg.tools import PgTools, connect, quote_ident, select_tools, server_info
from opstower_core.repo.catalog import CatalogEntry
from opstower_core.storage.s3 import store_for

APP_NAME = "opstower-restore"  # sessions we open show under this name (and are never "other sessions")

Sink = Callable[[memoryview], object]
# Reads the artifact once and hands each decompressed chunk to the sink (e.g. verification's
# streaming pass with the loader as its tee); raises to stop the load.
Reader = Callable[[Sink], None]


class ToolStopped(Exception):
    """Raised to a reader when the tool it feeds has failed: its read has no load left to serve."""


class FeedRefused(OpsError):
    """The reader decided the stream must not be loaded (a failed verification): raised as is,
    after the tool was killed before its stdin was closed, so it never saw a complete dump."""


@dataclass
class LoadSpec:
    """What to load and how: the commands shown in the plan are built from this."""

    name: ArtifactName
    dbname: str
    jobs: int = 1
    tables: list[str] | None = None  # "schema.table"
    no_owner: bool = False
    temp_dir: Path | None = None  # where a seekable copy goes for jobs > 1
    # Load the data in committed blocks (pg/blockload.py), for a reader of each block beside the
    # load: only into a database nobody uses yet, and only for a whole custom archive streamed.
    blocks: bool = False

    @property
    def via_file(self) -> bool:
        return self.name.format == "custom" and self.jobs > 1 and not self.tables

    @property
    def in_blocks(self) -> bool:
        return self.blocks and self.name.format == "custom" and not self.via_file and not self.tables

    def commands(self, tools: PgTools, source: str) -> list[str]:
        """Human-readable pipeline, exactly as run (`source` is the artifact path or S3 key)."""
        return [" ".join(_shell(a) for a in line) for line in self._argv_lines(tools, source)]

    def _argv_lines(self, tools: PgTools, source: str) -> list[list[str]]:
        dec = {"zstd": ["zstd", "-dc"], "gzip": ["gzip", "-dc"], "none": []}[self.name.compression]
        if self.name.encrypted:
            read = ["age", "--decrypt", "--identity=<identity>", source] + (["|"] + dec if dec else [])
        else:
            read = dec + [source] if dec else ["cat", source]
        if self.name.format == "plain":
            return [read + ["|"] + psql_argv(tools, self.dbname)]
        if self.via_file:
            direct = not dec and not self.name.encrypted
            tmp = source if direct else str(self.temp_file(Path(source).parent))
            first = [] if direct else [read + [">", tmp]]
            return first + [pg_restore_argv(tools, self.dbname, self.no_owner, jobs=self.jobs, file=tmp)]
        if self.in_blocks:  # one read feeds pre-data (which reads the table of contents) and the data
            pre = pg_restore_argv(tools, self.dbname, self.no_owner, section="pre-data")
            return [read + ["|", "tee", ">(" + " ".join(_shell(a) for a in pre) + ")", "|", tools.pg_restore,
                            "--section=data", "--file=-", "|", f"# every COPY cut into committed blocks of {BLOCK_ROWS:,} "
                            "rows, psql started once pre-data is in", "|"] + data_psql_argv(tools, self.dbname),
                    read + ["|"] + pg_restore_argv(tools, self.dbname, self.no_owner, section="post-data")
                    + ["# reads the table of contents only"]]
        lines = []
        if self.tables:
            lines.append(read + ["|", tools.pg_restore, "--list", ">", "<toc>"])
            lines.append(["# keep the TABLE, TABLE DATA and CONSTRAINT entries of", ",".join(self.tables),
                          "in <toc>, write them to <list>"])
        lines.append(read + ["|"] + pg_restore_argv(tools, self.dbname, self.no_owner,
                                                     use_list="<list>" if self.tables else None))
        return lines

    def temp_file(self, default_dir: Path) -> Path:
        return (self.temp_dir or default_dir) / f".restore_{self.name.stem}_{os.getpid()}.dump"


def _shell(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_=./:<>|,@%+" for c in arg) else "'" + arg.replace("'", "'\\''") + "'"


def psql_argv(tools: PgTools, dbname: str) -> list[str]:
    return [tools.psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--single-transaction",
            f"--dbname={dbname}"]


def data_psql_argv(tools: PgTools, dbname: str) -> list[str]:
    """psql for a block load's data section: no single transaction (every block commits on its own);
    query results unaligned, without headers, for the block markers."""
    return [tools.psql, "--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set=ON_ERROR_STOP=1",
            f"--dbname={dbname}"]


def pg_restore_argv(tools: PgTools, dbname: str, no_owner: bool, jobs: int = 1, file: str | None = None,
                    use_list: str | None = None, section: str | None = None) -> list[str]:
    argv = [tools.pg_restore, "--exit-on-error", "--verbose", f"--dbname={dbname}"]
    if section:
        argv.append(f"--section={section}")
    if no_owner:
        argv += ["--no-owner", "--no-acl"]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    if use_list:
        argv.append(f"--use-list={use_list}")
    if file:
        argv.append(file)
    return argv


def open_artifact(settings: Settings, entry: CatalogEntry) -> IO[bytes]:
    """The artifact's raw bytes: the local file, else a streaming S3 GET."""
    if entry.local_path is not None:
        return open(entry.local_path, "rb")  # noqa: SIM115 - caller closes
    if not entry.s3_key:
        raise OpsError(f"{entry.filename} is neither local nor in S3", "nothing was changed", say("see_backups"))
    return store_for(settings.s3).client.get_object(Bucket=settings.s3.bucket, Key=entry.s3_key)["Body"]


def _env(target: Target) -> dict[str, str]:
    env = target.libpq_env()
    env["PGAPPNAME"] = APP_NAME
    return env


def run_tool(argv: list[str], target: Target, r: Reporter, step: str,
             feed: Callable[[IO[bytes]], None] | None = None,
             on_line: Callable[[str], object] | None = None, failed: threading.Event | None = None) -> list[str]:
    """Run a client tool (see _run_tool), recorded in the command log with its outcome."""
    with command(shlex.join(argv)):
        return _run_tool(argv, target, r, step, feed, on_line, failed)


def _run_tool(argv: list[str], target: Target, r: Reporter, step: str,
              feed: Callable[[IO[bytes]], None] | None = None,
              on_line: Callable[[str], object] | None = None, failed: threading.Event | None = None) -> list[str]:
    """Run a client tool, optionally feeding its stdin from `feed` in a thread.

    Output lines become DEBUG logs (errors as ERROR); a cancel request kills the tool. Raises
    OpsError naming the tool's last error line when it fails, or when feeding failed (a
    truncated or corrupt stream is never handed over as if it were complete: the tool is
    killed before its stdin is closed, so psql cannot commit half a dump).
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if feed else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_env(target))
    tail: list[str] = []
    feed_error: list[BaseException] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                tail.append(text)
                del tail[:-30]
                r.log(step, text, "ERROR" if "error" in text.lower() else "DEBUG")
                if on_line is not None:
                    on_line(text)  # e.g. pg_restore --verbose's progress, which the restore follows

    def feeder() -> None:
        assert proc.stdin is not None
        try:
            assert feed is not None
            feed(proc.stdin)
        except BrokenPipeError:
            pass  # the tool stopped reading; its exit status says why
        except BaseException as exc:  # noqa: BLE001 - reported below, after the tool is stopped
            feed_error.append(exc)
            proc.kill()
            return
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    writer = threading.Thread(target=feeder, daemon=True) if feed else None
    if writer:
        writer.start()
    try:
        while True:
            try:
                rc = proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                if r.cancel.cancelled:
                    proc.kill()
                    proc.wait()
                    raise Cancelled() from None
        # The tool may finish before the feed does (pg_restore leaves after the last data block):
        # a feed that verifies the stream must reach its verdict before the load counts as done.
        # A tool that failed tells the feed to stop (`failed`): its error is the one reported.
        if rc != 0 and failed is not None:
            failed.set()
        while writer is not None and writer.is_alive():
            writer.join(0.1)
            if r.cancel.cancelled:
                raise Cancelled()
    finally:
        if writer:
            writer.join(10)
        reader.join(5)
    _outcome(os.path.basename(argv[0]), rc, tail, feed_error)
    return tail


def _outcome(tool: str, rc: int, tail: list[str], feed_error: list[BaseException]) -> None:
    """Raise what stopped a tool fed from the artifact: the feed's own failure (a cancel, a refused
    stream, a read error), unless the tool failed first and the feed only stopped for it."""
    if feed_error and not (rc != 0 and isinstance(feed_error[0], ToolStopped)):
        exc = feed_error[0]
        if isinstance(exc, Cancelled | FeedRefused):
            raise exc
        raise OpsError(f"{tool} was stopped: reading the artifact failed ({getattr(exc, 'what', None) or exc})", "", "")
    if rc != 0:
        last = next((ln for ln in reversed(tail) if "error" in ln.lower()), tail[-1] if tail else f"exit {rc}")
        raise OpsError(f"{tool} failed (exit {rc}): {last}", "", "")


class _Tee:
    """The artifact's bytes to the pre-data pg_restore until it has read what it needs and left (its
    table of contents; it blocks the feed while it creates the tables), and to the data pass."""

    def __init__(self, head: IO[bytes], rest: IO[bytes]) -> None:
        self.head: IO[bytes] | None = head
        self.rest = rest

    def write(self, data: bytes | memoryview) -> None:
        if self.head is not None:
            try:
                self.head.write(data)
            except (BrokenPipeError, ValueError):
                self.head = None
        self.rest.write(data)

    def close(self) -> None:
        for out in (self.head, self.rest):
            try:
                if out is not None:
                    out.close()
            except BrokenPipeError:
                pass


def _run_blocks(pre: list[str], restore: list[str], psql: list[str], target: Target, r: Reporter, step: str,
                feed: Callable[[IO[bytes]], None], failed: threading.Event, on_block: Callable[[Block], object],
                on_line: Callable[[str], object] | None, data_tap: Callable[[bytes], object] | None) -> int:
    """pre-data, then the data section through `pg_restore --section=data --file=-` | Splitter | psql
    (pg/blockload.py), both fed by one read of the artifact (`feed`, e.g. the verification's): the
    number of blocks loaded.

    psql starts once pre-data is in. Its stdin is closed only when pg_restore exited cleanly and the
    feed reached its end (with its verdict): otherwise psql is killed first, so a block it has not
    committed never is. When psql fails, pg_restore is stopped and the feed told to stop (`failed`);
    psql's error is reported."""
    env = _env(target)
    head = subprocess.Popen(pre, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    dump = subprocess.Popen(restore, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert head.stdin and head.stdout and dump.stdin and dump.stdout and dump.stderr
    procs: list[subprocess.Popen] = [dump, head]  # killed in this order on a failure; psql goes first
    tails: dict[str, list[str]] = {"pre": [], "dump": [], "psql": []}
    feed_error: list[BaseException] = []

    def note(tail: str, text: str) -> None:
        tails[tail].append(text)
        del tails[tail][:-30]
        r.log(step, text, "ERROR" if "error" in text.lower() else "DEBUG")

    def kill_all() -> None:
        for proc in list(procs):
            if proc.poll() is None:
                proc.kill()

    def feeder() -> None:
        tee = _Tee(head.stdin, dump.stdin)
        try:
            feed(tee)  # type: ignore[arg-type] - a writable stream is all `feed` needs
        except BrokenPipeError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported below, after the tools are stopped
            feed_error.append(exc)
            kill_all()  # psql first: it must not see the end of a refused stream as its end
            return
        tee.close()

    def head_out() -> None:
        for raw in head.stdout:
            if text := raw.decode("utf-8", "replace").rstrip():
                note("pre", text)
                if on_line is not None:
                    on_line(text)

    def dump_err() -> None:
        for raw in dump.stderr:
            if text := raw.decode("utf-8", "replace").rstrip():
                note("dump", text)

    def wait(proc: subprocess.Popen, also: Callable[[], bool] = lambda: False) -> int:
        while (rc := proc.poll()) is None:
            if r.cancel.cancelled or feed_error or also():
                kill_all()
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        return rc

    def joined(t: threading.Thread) -> None:
        while t.is_alive():
            t.join(0.1)
            if r.cancel.cancelled:
                raise Cancelled()

    def refused() -> None:
        """What the feed raised, when it decides (a cancel, a refused stream)."""
        if feed_error and isinstance(feed_error[0], Cancelled | FeedRefused):
            raise feed_error[0]

    threads = [threading.Thread(target=f, daemon=True, name=f"blocks-{f.__name__}")
               for f in (feeder, head_out, dump_err)]
    for t in threads:
        t.start()
    try:
        pre_rc = wait(head)  # the tables exist before a row is sent
        if pre_rc != 0 or feed_error or r.cancel.cancelled:
            failed.set()
            kill_all()
            joined(threads[0])
            refused()
            if r.cancel.cancelled:
                raise Cancelled()
            threads[1].join(5)
            _outcome("pg_restore", pre_rc, tails["pre"], feed_error)
        sql = subprocess.Popen(psql, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env)
        procs.insert(0, sql)
        assert sql.stdin and sql.stdout
        splitter = Splitter(dump.stdout, sql.stdin, tap=data_tap)
        markers = Markers(splitter, on_block, lambda text: note("psql", text))

        def split() -> None:
            try:
                splitter.run()
            except (BrokenPipeError, ValueError):  # psql stopped: drain, so pg_restore is not left blocked
                while dump.stdout.read(1 << 20):
                    pass

        def psql_out() -> None:
            for raw in sql.stdout:
                markers.line(raw.decode("utf-8", "replace").rstrip("\n"))

        more = [threading.Thread(target=f, daemon=True, name=f"blocks-{f.__name__}") for f in (split, psql_out)]
        for t in more:
            t.start()
        threads += more
        rc = wait(dump, lambda: sql.poll() not in (None, 0))  # a failed psql: its error is the one reported
        if rc != 0 or sql.poll() not in (None, 0):
            failed.set()
        joined(threads[0])  # the feed's verdict
        joined(more[0])  # every byte pg_restore wrote
        if r.cancel.cancelled:
            raise Cancelled()
        if rc != 0 or feed_error:
            sql_rc = sql.poll()  # a psql that failed on its own exits 1-3; one killed here, by a signal
            kill_all()
            sql.wait()
            refused()
            if sql_rc is not None and sql_rc > 0:
                more[1].join(5)
                _outcome("psql", sql_rc, tails["psql"], [])
            _outcome("pg_restore", rc, tails["dump"], feed_error)
        try:
            sql.stdin.close()
        except BrokenPipeError:
            pass
        wait(sql)
        more[1].join(5)
        _outcome("psql", sql.returncode, tails["psql"], [])
        return len(splitter.blocks)
    finally:
        kill_all()
        for proc in procs:
            proc.wait()
        for t in threads:
            t.join(5)


def _decompressed(raw: IO[bytes], compression: str, r: Reporter, step: str | None, total: int,
                  sink: Callable[[memoryview], object], identities: list | None = None) -> None:
    """Feed the dump's bytes to `sink` through the shared DumpReader (decryption, zstd/gzip, damage checks);
    progress is reported on `step` (None: a read that is not the step's own, e.g. a table of contents)."""
    reader = DumpReader(raw, compression, identities, lambda n: step and r.progress(step, n, total))
    buf = memoryview(bytearray(OUT_CHUNK))
    try:
        while True:
            if r.cancel.cancelled:
                raise Cancelled()
            n = reader.readinto(buf)
            if not n:
                reader.finish()
                break
            sink(buf[:n])
    except ScanError as exc:
        raise OpsError(f"the artifact is damaged: {exc}", "", "") from None
    finally:
        reader.close()
    if step:
        r.progress(step, reader.hashing.count, total, force=True)


def identities_for(settings: Settings, name: ArtifactName) -> list | None:
    """age identities for an encrypted artifact (None for a plain one); OpsError when none is configured."""
    if not name.encrypted:
        return None
    from opstower_core.artifacts.crypto import encryption_settings, load_identities

    return load_identities(encryption_settings(settings))


def read_toc(settings: Settings, entry: CatalogEntry, tools: PgTools, target: Target, r: Reporter, step: str
             ) -> list[str]:
    """The archive's table of contents (`pg_restore --list`), read from the start of the stream."""
    return pg_restore_output(settings, entry, tools, ["--list"], r, step)


def pg_restore_output(settings: Settings, entry: CatalogEntry, tools: PgTools, args: list[str], r: Reporter,
                      step: str) -> list[str]:
    """What `pg_restore ARGS` prints for a custom archive fed on stdin (e.g. `--list`, or
    `--schema-only --file=-`): pg_restore reads the header and TOC, then leaves; only the
    start of the stream is read."""
    proc = subprocess.Popen([tools.pg_restore, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: out.update(o=proc.stdout.read(), e=proc.stderr.read()), daemon=True)
    reader.start()
    assert proc.stdin is not None
    try:
        with open_artifact(settings, entry) as raw:
            _decompressed(raw, entry.name.compression, r, step, 0, proc.stdin.write,
                          identities_for(settings, entry.name))
    except (BrokenPipeError, ValueError):
        pass  # pg_restore has read the table of contents and left
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    rc = proc.wait()
    reader.join(5)
    if rc != 0:
        err = out.get("e", b"").decode("utf-8", "replace").strip().splitlines()
        raise OpsError(f"Cannot read the archive's table of contents ({err[-1] if err else rc})", "", "")
    return out.get("o", b"").decode("utf-8", "replace").splitlines()


def read_dump(settings: Settings, entry: CatalogEntry, sink: Callable[[memoryview], object], r: Reporter,
              step: str) -> None:
    """Feed the artifact's dump bytes (decrypted, decompressed, damage-checked) to `sink`; a sink
    may stop the read early by raising StopIteration."""
    try:
        with open_artifact(settings, entry) as raw:
            _decompressed(raw, entry.name.compression, r, step, 0, sink, identities_for(settings, entry.name))
    except StopIteration:
        pass


TOC_TYPES = ("TABLE DATA", "TABLE", "CONSTRAINT")


def toc_entry(line: str) -> tuple[str, str, str] | None:
    """(type, schema, tag) of a `pg_restore --list` line for the types a table selection keeps."""
    if not line or line.startswith(";"):
        return None
    try:
        _ids, rest = line.split("; ", 1)
        rest = rest.split(" ", 2)[2]  # drop "<tableoid> <oid>"
    except (ValueError, IndexError):
        return None
    for kind in TOC_TYPES:
        if rest.startswith(kind + " "):
            fields = rest[len(kind) + 1:].split(" ")
            if len(fields) < 3:
                return None
            return kind, fields[0], " ".join(fields[1:-1])  # owner is the last field
    return None


def select_tables(toc: list[str], tables: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(list lines to restore, schemas needed, requested tables not in the archive)."""
    found: dict[tuple[str, str], str] = {}
    for line in toc:
        e = toc_entry(line)
        if e and e[0] == "TABLE":
            found[(e[1], e[2])] = f"{e[1]}.{e[2]}"
    wanted: set[tuple[str, str]] = set()
    missing = []
    for t in tables:
        if "." in t:
            schema, _, name = t.partition(".")
            keys = [(schema, name)] if (schema, name) in found else []
        else:
            keys = [k for k in found if k[1] == t]
        if not keys:
            missing.append(t)
        wanted.update(keys)
    keep = []
    for line in toc:
        e = toc_entry(line)
        if not e:
            continue
        kind, schema, tag = e
        table = tag.split(" ", 1)[0] if kind == "CONSTRAINT" else tag
        if (schema, table) in wanted:
            keep.append(line)
    return keep, sorted({s for s, _ in wanted}), missing


def resolve_tables(toc: list[str], tables: list[str]) -> list[str]:
    """Requested names as "schema.table" keys (the form of the metadata's row counts)."""
    keys = []
    for line in toc:
        e = toc_entry(line)
        if e and e[0] == "TABLE":
            full = f"{e[1]}.{e[2]}"
            if full in tables or e[2] in tables:
                keys.append(full)
    return keys


def load(settings: Settings, target: Target, tools: PgTools, entry: CatalogEntry, spec: LoadSpec,
         r: Reporter, step: str, reader: Reader | None = None,
         on_line: Callable[[str], object] | None = None, on_block: Callable[[Block], object] | None = None,
         data_tap: Callable[[bytes], object] | None = None) -> None:
    """Load `entry` into `spec.dbname` (which exists and is empty) as `spec` says.

    `reader`: reads the artifact instead of the plain decompression (verification's pass, so
    the artifact is read once); the tool's stdin is then written by a thread of its own, so
    the reader's work on a chunk overlaps the tool's on the one before. `on_line`: each line the
    streamed one-job pg_restore prints (--verbose: the TOC entry it is restoring). `on_block`:
    with `spec.in_blocks`, each block of rows once committed (pg/blockload.py); `data_tap`: then
    every chunk of the data section's SQL as pg_restore wrote it (e.g. pg.digest_job.StreamDigests)."""
    name = entry.name
    identities = identities_for(settings, name)
    total = entry.size or (entry.local_path.stat().st_size if entry.local_path else 0)

    failed = threading.Event()  # set by run_tool when the tool fails: the reader stops there

    def stream(stdin: IO[bytes]) -> None:
        if reader is not None:
            with _PipeWriter(stdin, failed) as put:
                reader(put)
            return
        with open_artifact(settings, entry) as raw:
            _decompressed(raw, name.compression, r, step, total, stdin.write, identities)

    if name.format == "plain":
        r.log(step, f"Restoring data from backup with psql (ON_ERROR_STOP, single transaction) into {spec.dbname}")
        run_tool(psql_argv(tools, spec.dbname), target, r, step, stream, failed=failed)
        return
    if spec.tables:
        toc = read_toc(settings, entry, tools, target, r, step)
        keep, schemas, missing = select_tables(toc, spec.tables)
        if missing:
            raise OpsError(f"Tables not in the backup: {', '.join(missing)}", "", "")
        with connect(target, dbname=spec.dbname) as conn:
            for schema in schemas:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        list_file = (spec.temp_dir or settings.backup_dir) / f".restore_{name.stem}_{os.getpid()}.list"
        fd = os.open(list_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(keep) + "\n")
        try:
            r.log(step, f"Restoring {len(keep)} archive entries of {', '.join(spec.tables)} into {spec.dbname}")
            run_tool(pg_restore_argv(tools, spec.dbname, spec.no_owner, use_list=str(list_file)), target, r, step,
                     stream)
        finally:
            list_file.unlink(missing_ok=True)
        return
    if spec.in_blocks and on_block is not None:
        _load_blocks(settings, target, tools, entry, spec, r, step, stream, failed, on_block, on_line, data_tap)
        return
    if not spec.via_file:
        r.log(step, f"Restoring with pg_restore (one job, streamed) into {spec.dbname}")
        run_tool(pg_restore_argv(tools, spec.dbname, spec.no_owner), target, r, step, stream, on_line, failed)
        return
    if name.compression == "none" and not name.encrypted and entry.local_path is not None:
        r.log(step, f"Restoring with pg_restore --jobs={spec.jobs} into {spec.dbname}")
        run_tool(pg_restore_argv(tools, spec.dbname, spec.no_owner, jobs=spec.jobs, file=str(entry.local_path)),
                 target, r, step)
        return
    tmp = spec.temp_file(settings.backup_dir)
    try:
        r.log(step, f"Decompressing to {tmp} (parallel pg_restore needs a seekable file)")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            if reader is not None:
                reader(fh.write)
            else:
                with open_artifact(settings, entry) as raw:
                    _decompressed(raw, name.compression, r, step, total, fh.write, identities)
        r.log(step, f"Restoring with pg_restore --jobs={spec.jobs} into {spec.dbname}")
        run_tool(pg_restore_argv(tools, spec.dbname, spec.no_owner, jobs=spec.jobs, file=str(tmp)), target, r, step)
    finally:
        tmp.unlink(missing_ok=True)


def _load_blocks(settings: Settings, target: Target, tools: PgTools, entry: CatalogEntry, spec: LoadSpec,
                 r: Reporter, step: str, stream: Callable[[IO[bytes]], None], failed: threading.Event,
                 on_block: Callable[[Block], object], on_line: Callable[[str], object] | None,
                 data_tap: Callable[[bytes], object] | None) -> None:
    """pre-data and post-data by pg_restore (each reads the table of contents only), the data between
    them in committed blocks (`_run_blocks`): together, what one pg_restore does."""
    identities = identities_for(settings, entry.name)

    def toc_only(stdin: IO[bytes]) -> None:  # pg_restore leaves once it has the entries it needs
        with open_artifact(settings, entry) as raw:
            _decompressed(raw, entry.name.compression, r, None, 0, stdin.write, identities)

    r.log(step, f"Restoring into {spec.dbname} in three sections: pre-data and post-data by pg_restore, the data "
          f"by psql in committed blocks of up to {BLOCK_ROWS:,} rows")
    pre = pg_restore_argv(tools, spec.dbname, spec.no_owner, section="pre-data")
    restore = [tools.pg_restore, "--section=data", "--file=-"] + (["--no-owner", "--no-acl"] if spec.no_owner else [])
    psql = data_psql_argv(tools, spec.dbname)
    with command(f"{shlex.join(pre)}; {shlex.join(restore)} | <blocks of {BLOCK_ROWS} rows> | {shlex.join(psql)}"):
        n = _run_blocks(pre, restore, psql, target, r, step, stream, failed, on_block, on_line, data_tap)
    r.log(step, f"Loaded {n} block(s) of at most {BLOCK_ROWS:,} rows, each committed on its own")
    # The artifact was verified by the read that fed the data (when a reader was given); this read
    # stops at the table of contents.
    run_tool(pg_restore_argv(tools, spec.dbname, spec.no_owner, section="post-data"), target, r, step, toc_only,
             on_line)


class _PipeWriter:
    """Writes chunks to a tool's stdin from a thread: `put` copies the chunk (the reader reuses its
    buffer) and returns at once unless 8 chunks wait. When the tool stops reading (pg_restore
    leaves after the last data block, or fails), the rest is discarded, not raised: the reader
    still reads to the end for its verdict, and the tool's exit status says whether the load
    worked."""

    def __init__(self, stdin: IO[bytes], failed: threading.Event) -> None:
        self.stdin, self.failed = stdin, failed
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.closed = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="load-writer", daemon=True)

    def _run(self) -> None:
        while (chunk := self.q.get()) is not None:
            if self.closed:
                continue
            try:
                self.stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                self.closed = True
            except BaseException as exc:  # noqa: BLE001 - raised to the reader at its next put
                self.error, self.closed = exc, True

    def put(self, data: memoryview) -> None:
        if self.error is not None:
            raise self.error
        if self.failed.is_set():
            raise ToolStopped("the tool fed by this read failed")
        if not self.closed:
            self.q.put(bytes(data))

    def __enter__(self) -> Callable[[memoryview], None]:
        self.thread.start()
        return self.put

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.closed = True  # a failed read: the tool gets nothing more (it is killed next)
        self.q.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def restore_into(settings: Settings, target: Target, entry_or_path: CatalogEntry | str | Path, dbname: str,
                 reporter: Reporter, step_id: str, jobs: int | None = None, tables: list[str] | None = None,
                 reader: Reader | None = None, on_line: Callable[[str], object] | None = None,
                 on_block: Callable[[Block], object] | None = None, data_tap: Callable[[bytes], object] | None = None
                 ) -> None:
    """Load an artifact into the existing, empty database `dbname` (for verify's check 8 and drills);
    with `on_block`, a whole custom archive is loaded in committed blocks (see `load`).

    Owners and privileges are not restored (`--no-owner --no-acl`): a scratch database
    must not depend on the roles of the source server.
    """
    from opstower_core.repo.catalog import resolve

    entry = entry_or_path if isinstance(entry_or_path, CatalogEntry) else resolve(settings, str(entry_or_path))
    with connect(target, dbname="postgres") as conn:
        tools = select_tools(settings, server_info(conn).major)
    spec = LoadSpec(entry.name, dbname, jobs=max(1, jobs or 1) if entry.local_path else 1, tables=tables,
                    no_owner=True, blocks=on_block is not None)
    load(settings, target, tools, entry, spec, reporter, step_id, reader=reader, on_line=on_line,
         on_block=on_block, data_tap=data_tap)
