"""The dump's per-table digests, computed by a process of their own at idle priority.

Issue 18: the restore proof needs every table's digest of the artifact (rows, dump-order sha256;
the order-independent sum only for a table restored in another order: then the file is read again
with it, `DigestJob.with_sums`). Parsing pg_dump -Z0's one-chunk-per-row data blocks costs ~3-4
CPU-s per GB-scale dump; done in the load's read it stretched pg_restore's COPY phase by a third
on 2 cores. The digests are needed only when the restored tables are compared, so a child process
computes them from the local artifact under SCHED_IDLE (nice 19 where that is refused): it runs
in the CPU time the load leaves unused and never slows the load. Once the caller waits for them,
they are on the RTO clock: a child starved by other work on the host (SCHED_IDLE gets almost no
CPU while every core is busy) is raised to normal priority where the system allows it, else it
gets a twin at normal priority, and the first to finish answers.

The child reads the file on its own, so its digests prove something only about the bytes it
read: it also hashes them, and `DigestJob.result` accepts the digests only when that sha256
is the one the load's verified read matched (the metadata's). Anything else — a child that
failed, was killed or read other bytes — gives no digests and a reason, never a guess.

A custom archive's data blocks are walked by pg_restore, not by Python: `pg_restore --data-only
--file=-` writes them out as the plain dump's COPY text, whose rows the digests cover, for a tenth
of the CPU (0.4 against ~3 CPU-s for the 0.6 GB bench dump). That mattered even at idle priority:
on 2 cores the Python walk still stretched a bare restore's COPY phase by ~0.9 s (median of 7).

A load in committed blocks (pg/blockload.py) already has pg_restore write the data section as that
text, for psql: `StreamDigests` digests it there, as it comes and before it is cut into blocks, by
the same parser, instead of a second read of the file (the 0.6 GB bench dump: ~1 CPU-s in the
load's process against ~2.9 CPU-s for the job's decompression, pg_restore and parse). Those bytes are
the load's own verified read: a failed check stops the load, and with it the proof.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from opstower_core.events import CancelToken
from opstower_core.pg.digest import DumpDigester, DumpFormatError, TableDigest
from opstower_core.pg.tools import PgTools

TableKey = tuple[str, str]


@dataclass(frozen=True)
class JobDigests:
    """What the child read: the stored bytes' sha256 and each table's digest and COPY columns."""

    sha256: str
    tables: dict[TableKey, TableDigest]
    copy_columns: dict[TableKey, list[str] | None]
    seconds: float
    twin: bool = False  # answered by the normal-priority twin of a starved idle child
    promoted: bool = False  # the starved idle child was raised to normal priority instead
    stream: bool = False  # taken from the load's own data stream (StreamDigests)

    def how(self) -> str:
        """One line for the run log: how and when the digests came."""
        if self.stream:
            return (f"The artifact's table digests were taken from the load's own verified data stream "
                    f"({len(self.tables)} tables, ready after {self.seconds:.1f} s)")
        if self.promoted:
            return (f"The artifact's table digests were computed beside the load, at idle priority until other "
                    f"work on this host starved it, then at normal priority ({len(self.tables)} tables, ready "
                    f"after {self.seconds:.1f} s)")
        if self.twin:
            return (f"The artifact's table digests were computed by a second reader at normal priority: the "
                    f"idle-priority one was starved by other work on this host ({len(self.tables)} tables, "
                    f"ready after {self.seconds:.1f} s)")
        return (f"The artifact's table digests were computed beside the load at idle priority "
                f"({len(self.tables)} tables, ready after {self.seconds:.1f} s)")


class DigestJob:
    """One child digesting `path`; `result()` waits for it (honouring `cancel`) and checks its sha256."""

    tap = None  # it reads the file itself: nothing to feed (see StreamDigests.tap)

    def __init__(self, path: Path, compression: str, multiset: bool = False, pg_restore: str | None = None,
                 idle: bool = True) -> None:
        """`multiset`: also the order-independent sums (a third more work), needed only for a table
        restored in another order (`ArtifactProof.multisets`). `pg_restore`: for a custom archive,
        the pg_restore that turns its data blocks into COPY text (None: walked in Python). `idle`:
        at idle priority (beside a load); False for digests the caller is about to wait for."""
        self.path, self.compression, self.started = path, compression, time.monotonic()
        self.multiset, self.pg_restore, self.idle = multiset, pg_restore, idle
        self.promoted = False  # raised to normal priority by result(), when starved and allowed
        # The answer goes to an unlinked temp file, not a pipe: thousands of tables exceed a pipe's
        # buffer, and the parent reads only once the child has ended.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by result() or kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opstower_core.pg.digest_job", str(path), compression]
            + (["--sums"] if multiset else []) + (["--pg-restore", pg_restore] if pg_restore else [])
            + ([] if idle else ["--normal"]),
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.PIPE, close_fds=True)

    @classmethod
    def beside_load(cls, path: Path, compression: str, fmt: str, tools: PgTools | None,
                    in_blocks: bool = False) -> DigestJob | StreamDigests:
        """The digests of an artifact being loaded. A block load's data stream is digested as it
        passes (`in_blocks`: StreamDigests, fed through its `tap`); otherwise a job reads the file: a
        custom archive's data blocks written out by the load's own pg_restore (`tools`), a plain dump
        as it is."""
        pg_restore = tools.pg_restore if tools is not None and fmt == "custom" else None
        if in_blocks and pg_restore is not None:
            return StreamDigests(path, compression, pg_restore)
        return cls(path, compression, pg_restore=pg_restore)

    def result(self, expected_sha256: str, cancel: CancelToken | None = None) -> tuple[JobDigests | None, str]:
        """(digests, "") when the child read exactly the bytes whose sha256 is `expected_sha256`;
        else (None, why not).

        While this waits, an idle-priority child that sits in the run queue for most of two seconds
        in a row and runs for little of them (`_Starvation`) is raised to normal priority where the
        system allows it (`_promote`: root, CAP_SYS_NICE, a permissive RLIMIT_NICE); else it gets a
        twin at normal priority reading the same file: the first to finish answers, the other is
        killed. So the wait is bounded by
        a normal process's work, not by how long other work keeps every core busy (measured: an
        idle child digesting 400,000 rows beside two busy loops on 2 cores was not done after
        120 s; with the twin the answer came after 2.8 s)."""
        done = self._first_to_finish(cancel)
        if done is None:
            return None, "cancelled"
        got, why = done._answer(expected_sha256)
        if got is not None and (done is not self or self.promoted):  # its time counts from the first start
            got = replace(got, seconds=time.monotonic() - self.started, twin=done is not self, promoted=self.promoted)
        return got, why

    def _first_to_finish(self, cancel: CancelToken | None) -> DigestJob | None:
        """This job or its twin, whichever ended first (the other is killed); None when cancelled."""
        twin: DigestJob | None = None
        watch = _Starvation(self.proc.pid) if self.idle else None
        try:
            while True:
                try:
                    self.proc.wait(timeout=0.1)
                    return self
                except subprocess.TimeoutExpired:
                    pass
                if twin is not None and twin.proc.poll() is not None:
                    return twin
                if cancel is not None and cancel.cancelled:
                    return None
                if twin is None and watch is not None and watch.starved():
                    if _promote(self.proc.pid):  # allowed (root, CAP_SYS_NICE): it goes on, nothing redone
                        watch, self.promoted = None, True
                        continue
                    twin = DigestJob(self.path, self.compression, multiset=self.multiset, pg_restore=self.pg_restore,
                                     idle=False)
        finally:  # the loser, or both when cancelled or interrupted
            for job in (self, twin):
                if job is not None and job.proc.returncode is None:
                    job.kill()

    def _answer(self, expected_sha256: str) -> tuple[JobDigests | None, str]:
        """The finished child's digests, checked against `expected_sha256`."""
        try:
            err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
            if self.proc.returncode != 0:
                last = err.splitlines()[-1] if err else f"exit status {self.proc.returncode}"
                return None, f"the artifact's digests could not be computed ({last})"
            self._out.seek(0)
            doc = json.loads(self._out.read().decode())
        finally:
            self._close()
        if doc.get("error"):
            return None, f"the artifact could not be digested ({doc['error']})"
        if doc.get("sha256") != expected_sha256:
            return None, ("the artifact's bytes changed between the verified read and the digest read "
                          f"(sha256 {str(doc.get('sha256'))[:12]}… vs {expected_sha256[:12]}…)")
        tables = {(s, t): TableDigest(rows, ordered, multiset) for s, t, rows, ordered, multiset in doc["tables"]}
        cols = {(s, t): c for s, t, c in doc["copy_columns"]}
        return JobDigests(doc["sha256"], tables, cols, time.monotonic() - self.started), ""

    def with_sums(self, expected_sha256: str, cancel: CancelToken | None = None
                  ) -> Callable[[], tuple[dict[TableKey, TableDigest] | None, str]]:
        """A second read of the same file with the order-independent sums: `ArtifactProof.multisets`."""
        return _sums(self.path, self.compression, self.pg_restore, expected_sha256, cancel)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if not self._out.closed:
            self._out.close()


def _sums(path: Path, compression: str, pg_restore: str | None, expected_sha256: str, cancel: CancelToken | None
          ) -> Callable[[], tuple[dict[TableKey, TableDigest] | None, str]]:
    def read() -> tuple[dict[TableKey, TableDigest] | None, str]:
        # Asked for once the tables are compared, i.e. on the clock: at normal priority.
        got, why = DigestJob(path, compression, multiset=True, pg_restore=pg_restore, idle=False).result(
            expected_sha256, cancel)
        return (got.tables if got is not None else None), why
    return read


class StreamDigests:
    """The artifact's table digests from a block load's data stream (`tap`: each chunk of the COPY
    text pg_restore writes, before it is cut). Same interface as DigestJob; `result()` is ready once
    the load has ended, and says why not when the stream did not end whole."""

    def __init__(self, path: Path, compression: str, pg_restore: str | None) -> None:
        self.path, self.compression, self.pg_restore = path, compression, pg_restore
        self.started = time.monotonic()
        self._digester = DumpDigester(toc_only=False, multiset=False)
        self._error: str | None = None
        self._closed = False

    def tap(self, data: bytes) -> None:
        if self._error is None:
            try:
                self._digester.write(data)
            except DumpFormatError as exc:  # the load goes on; the proof says why it was not made
                self._error = str(exc)

    def result(self, expected_sha256: str, cancel: CancelToken | None = None) -> tuple[JobDigests | None, str]:
        """`expected_sha256` is the verified read's (these bytes are that read's own)."""
        if self._error is None and not self._closed:
            self._closed = True
            try:
                self._digester.close()
            except DumpFormatError as exc:
                self._error = str(exc)
        if self._error is not None:
            return None, f"the artifact could not be digested ({self._error})"
        d = self._digester
        return JobDigests(expected_sha256, dict(d.tables), dict(d.copy_columns), time.monotonic() - self.started,
                          stream=True), ""

    def with_sums(self, expected_sha256: str, cancel: CancelToken | None = None
                  ) -> Callable[[], tuple[dict[TableKey, TableDigest] | None, str]]:
        """A read of the file with the order-independent sums, only if a table needs it."""
        return _sums(self.path, self.compression, self.pg_restore, expected_sha256, cancel)

    def kill(self) -> None:
        """Nothing runs on its own."""


class _Starvation:
    """Whether a child and its own children (its pg_restore) are starved: in each of the last
    `windows` seconds they waited in the run queue for over half of it and ran for under a quarter
    of it (/proc/PID/schedstat, Linux). Two in a row, so that the caller's own short work after a
    load (index checks, the last reads) does not count. Where it cannot be read: never."""

    def __init__(self, pid: int, windows: int = 2) -> None:
        self.pid, self.windows, self.streak = pid, windows, 0
        self.since, self.last = time.monotonic(), self._sample()

    def _sample(self) -> tuple[int, int] | None:
        """(ns run, ns waited in the run queue) of the child and its children, or None."""
        ran = waited = 0
        for pid in _family(self.pid):
            try:
                fields = Path(f"/proc/{pid}/schedstat").read_text().split()
                ran, waited = ran + int(fields[0]), waited + int(fields[1])
            except (OSError, ValueError, IndexError):
                if pid == self.pid:
                    return None  # not Linux, or the child has ended
                # a grandchild that has just exited: the others still count
        return ran, waited

    def starved(self) -> bool:
        now = time.monotonic()
        if now - self.since < 1.0:
            return False
        current, last = self._sample(), self.last
        span = (now - self.since) * 1e9
        self.since, self.last = now, current
        if current is None or last is None:
            return False
        ran, waited = current[0] - last[0], current[1] - last[1]
        self.streak = self.streak + 1 if waited > span / 2 and ran < span / 4 else 0
        return self.streak >= self.windows


def _family(pid: int) -> list[int]:
    """The child and its own children (its pg_restore), where the kernel lists them (CONFIG_PROC_CHILDREN)."""
    try:
        return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    except (OSError, ValueError):
        return [pid]


def _promote(pid: int) -> bool:
    """Every thread of the child and of its children back to SCHED_OTHER; False when not allowed
    (an unprivileged user with the usual RLIMIT_NICE of 0 may not leave SCHED_IDLE) or not Linux."""
    for p in _family(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue  # ended meanwhile
        for tid in tids:
            try:
                os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
            except ProcessLookupError:
                continue
            except (AttributeError, OSError):
                return False
    return True


def _idle() -> str:
    """Lower this process to SCHED_IDLE (runs only when a CPU would otherwise idle), or nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            return "normal"
        return "nice 19"


class _ViaPgRestore:
    """Feeds a custom archive to `pg_restore --data-only --file=-` and the plain SQL it writes
    (the COPY statements and their rows, byte for byte as in the archive) to a DumpDigester."""

    def __init__(self, pg_restore: str, digester: DumpDigester) -> None:
        self.digester = digester
        self.error: str | None = None
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish()
        self.proc = subprocess.Popen([pg_restore, "--data-only", "--file=-"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            _grow_pipe(pipe.fileno())
        self._writing = True
        self._reader = threading.Thread(target=self._read, name="digest-read", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while chunk := out.read1(1 << 20):
            if self.error is None:  # after an error, still drained: pg_restore must not block on us
                try:
                    self.digester.write(chunk)
                except Exception as exc:  # noqa: BLE001 - any failure: reported, and the pipe still drained
                    self.error = str(exc) or type(exc).__name__

    def feed(self, data: memoryview) -> None:
        if not self._writing:
            return
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:  # pg_restore stopped: finish() says why
            self._writing = False

    def finish(self) -> str | None:
        """None when pg_restore read the whole archive and its output digested cleanly; else why not."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # also after a broken pipe: nothing is left to flush at exit
        except OSError:
            pass
        self._reader.join()
        rc = self.proc.wait()
        self._err.seek(0)
        err = self._err.read().decode(errors="replace").strip().splitlines()
        self._err.close()
        if rc != 0:
            return f"pg_restore could not read the archive ({err[-1] if err else f'exit status {rc}'})"
        if self.error is None:
            try:
                self.digester.close()
            except DumpFormatError as exc:
                self.error = str(exc)
        return self.error


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux) instead of 64 KiB: fewer wake-ups per GB between us and pg_restore."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


def _child(path: str, compression: str, multiset: bool = False, pg_restore: str | None = None,
           idle: bool = True) -> int:
    from opstower_core.artifacts.scan import scan_stream
    from opstower_core.memory import keep_heap

    if idle:
        _idle()
    keep_heap()
    digester = DumpDigester(toc_only=False, multiset=multiset)
    error: str | None = None
    via = _ViaPgRestore(pg_restore, digester) if pg_restore else None

    def feed(data: memoryview) -> None:
        nonlocal error
        if error is None:
            try:
                digester.write(data)
            except DumpFormatError as exc:
                error = str(exc)  # the read goes on: its sha256 is still reported

    with open(path, "rb") as raw:
        scan = scan_stream(raw, compression, on_data=via.feed if via is not None else feed)
    if via is not None:
        error = via.finish()
    if scan.error:
        error = scan.error
    elif error is None and via is None:
        try:
            digester.close()
        except DumpFormatError as exc:
            error = str(exc)
    doc = {
        "sha256": scan.sha256, "error": error,
        "tables": [[s, t, d.rows, d.ordered, d.multiset] for (s, t), d in digester.tables.items()],
        "copy_columns": [[s, t, c] for (s, t), c in digester.copy_columns.items()],
    }
    sys.stdout.write(json.dumps(doc))
    sys.stdout.flush()
    return 0


def _main(argv: list[str]) -> int:
    """python -m opstower_core.pg.digest_job PATH COMPRESSION [--sums] [--pg-restore PG_RESTORE] [--normal]"""
    path, compression, rest = argv[0], argv[1], argv[2:]
    pg_restore = rest[rest.index("--pg-restore") + 1] if "--pg-restore" in rest else None
    return _child(path, compression, "--sums" in rest, pg_restore, idle="--normal" not in rest)


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except Exception as exc:  # noqa: BLE001 - one line for the parent, which reports it
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
