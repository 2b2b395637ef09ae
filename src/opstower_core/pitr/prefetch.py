"""WAL prefetch for a scratch cluster's recovery: a spool private to the cluster, filled ahead of replay.

PostgreSQL runs restore_command once per segment, and each slow call (a Python start, barman and
boto3 imported, an S3 client built) costs seconds. So, as `barman-wal-restore --parallel` does:

- the launcher's wal-fetch first looks for the exact name in the spool (SPOOL_DIR/<name>) and moves
  it into place, importing nothing (launcher.launcher_text; take_from_spool here for the CLI);
- on a miss, wal_fetch fetches as before, makes sure one detached prefetcher runs for the spool
  (an flock on SPOOL/.lock: calls never start several) and tells it the segment just fetched
  (SPOOL/.want, with the segment size read from the fetched file);
- the prefetcher keeps the next K segments of that timeline in the spool (at most K files, spooled
  plus in flight: the spool is bounded to K segments), downloading concurrently, each to a temp name
  renamed when complete and of the segment's size, so a partial file is never delivered.

A spool entry is valid for its exact name only: names carry the timeline, and the archive never
holds two contents for one name (wal-push refuses). Only plain segment names are ever spooled:
no .history, .partial or .backup file (barman's own --parallel renames a .partial to the segment
name; we never do). A name the archive lacks is not spooled (the end of the archive: PostgreSQL then
asks for it, gets the not-found exit code from the slow path and ends recovery there).

This module's top imports only the standard library: the CLI fast path imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PREFETCH = 8
MAX_PREFETCH = 64
SPOOL_NAME = "wal-spool"
IDLE_EXIT_S = 120.0  # nothing consumed nor asked for that long: recovery is over (or stuck); exit
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_LOCK, _WANT, _PID, _LOG = ".lock", ".want", ".prefetch.pid", ".prefetch.log"


def is_segment(name: str) -> bool:
    """A plain WAL segment name (timeline + segment): never a .history/.partial/.backup file."""
    return bool(_SEGMENT.match(name))


def take_from_spool(spool: str | Path, name: str, dest: str | Path) -> bool:
    """Move segment `name` from the spool to `dest` if it is there; True when delivered."""
    if not is_segment(name):
        return False
    try:
        os.replace(os.path.join(spool, name), dest)
    except OSError:
        return False  # not spooled (or another filesystem): the slow path fetches it from the archive
    return True


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def next_segment(name: str, segment_size: int, step: int = 1) -> str:
    """The name `step` segments after `name` on the same timeline."""
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    per = segments_per_xlogid(segment_size)
    n = log * per + seg + step
    return f"{tli:08X}{n // per:08X}{n % per:08X}"


def segment_number(name: str, segment_size: int) -> int:
    return int(name[8:16], 16) * segments_per_xlogid(segment_size) + int(name[16:], 16)


def spooled(spool: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(spool) if is_segment(n))
    except FileNotFoundError:
        return []


def running(spool: Path) -> bool:
    """Whether a prefetcher holds the spool's lock."""
    try:
        fd = os.open(spool / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def ensure_running(spool: str | Path, k: int, config_path: str | Path | None) -> bool:
    """Start the spool's prefetcher, detached, unless one runs; True when one was started."""
    spool = Path(spool)
    spool.mkdir(mode=0o700, exist_ok=True)
    if running(spool):
        return False
    # A new interpreter (not a fork: the caller may have threads) with the caller's sys.path (the
    # launcher builds it with site.addsitedir) and environment (config path, credentials file).
    boot = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
            "from opstower_core.pitr.prefetch import main; sys.exit(main(sys.argv[2:]))")
    argv = [sys.executable, "-c", boot, json.dumps(sys.path), str(spool), str(k)]
    if config_path:
        argv.append(str(config_path))
    with open(spool / _LOG, "ab") as log:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",  # noqa: S603
                         start_new_session=True, close_fds=True)
    return True


def want(spool: str | Path, name: str, segment_size: int) -> None:
    """Tell the prefetcher that PostgreSQL just got `name` from the archive: prefetch what follows it."""
    spool = Path(spool)
    tmp = spool / f"{_WANT}.{os.getpid()}"
    tmp.write_text(json.dumps({"name": name, "size": segment_size}))
    os.replace(tmp, spool / _WANT)


def stop(spool: str | Path, timeout: float = 10.0) -> None:
    """Stop the spool's prefetcher (if one runs) and wait for it, so the spool can be removed."""
    spool = Path(spool)
    if not running(spool):
        return
    try:
        pid = int((spool / _PID).read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(spool):
        time.sleep(0.05)


def spool_use(spool: str | Path) -> tuple[int, int]:
    """(segments the prefetcher spooled, of them taken by PostgreSQL): from its log, before removal."""
    spool = Path(spool)
    try:
        lines = (spool / _LOG).read_text(errors="replace").splitlines()
    except OSError:
        return 0, 0
    done = {ln.split()[1] for ln in lines if ln.startswith("spooled ")}
    dropped = {ln.split()[1] for ln in lines if ln.startswith("dropped ")}
    left = set(spooled(spool))
    return len(done), len(done - dropped - left)


def _read_want(spool: Path) -> tuple[str, int] | None:
    try:
        data = json.loads((spool / _WANT).read_text())
        size = int(data["size"])
        name = str(data["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # A segment size PostgreSQL allows (a power of two, 1 MB..1 GB); anything else: no prefetch.
    if not is_segment(name) or size < 1 << 20 or size > 1 << 30 or size & (size - 1):
        return None
    return name, size


def main(argv: list[str]) -> int:
    """The prefetcher process: `SPOOL K [CONFIG]`. Exits when the spool goes, or after IDLE_EXIT_S idle."""
    spool = Path(argv[0])
    k = max(1, min(MAX_PREFETCH, int(argv[1])))
    config = argv[2] if len(argv) > 2 else None
    lock = os.open(spool / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another call started one first
    (spool / _PID).write_text(str(os.getpid()))
    # stop() waits for the lock to go, then the spool is removed: exit at once, downloads and all
    # (a temp name left behind goes with the spool; sys.exit would wait for the pool's threads).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _Prefetcher(spool, k, config).run()
    return 0


class _Prefetcher:
    def __init__(self, spool: Path, k: int, config: str | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from opstower_core.config import load_settings
        from opstower_core.pitr.barman import cloud_env

        self.spool, self.k = spool, k
        self.settings = load_settings(config)
        os.environ.update(cloud_env(self.settings))
        self.cloud = _cloud_interface(self.settings)
        self.pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="wal-prefetch")
        self.inflight: dict[str, Any] = {}
        self.anchor: tuple[str, int] | None = None  # the last segment fetched by the slow path, its size
        self.next: str | None = None
        self.end: str | None = None  # first name found missing: nothing is prefetched past it

    def run(self) -> None:
        last_change = time.monotonic()
        seen: tuple[object, ...] = ()
        while self.spool.is_dir():
            wanted = _read_want(self.spool)
            if wanted is not None and wanted != self.anchor:
                self._reanchor(*wanted)
            self.inflight = {n: f for n, f in self.inflight.items() if not f.done()}
            files = spooled(self.spool)
            state = (self.anchor, tuple(files), tuple(sorted(self.inflight)))
            if state != seen:
                seen, last_change = state, time.monotonic()
            elif not self.inflight and time.monotonic() - last_change > IDLE_EXIT_S:
                break
            self._fill(len(files))
            time.sleep(0.05)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _reanchor(self, name: str, size: int) -> None:
        """PostgreSQL fetched `name` itself: prefetch from the segment after it, on its timeline."""
        self.anchor = (name, size)
        nxt = next_segment(name, size)
        keep_from = segment_number(nxt, size)
        same_run = (self.next is not None and self.next[:8] == name[:8]
                    and segment_number(self.next, size) >= keep_from)
        if not same_run:
            self.next, self.end = nxt, None
        elif self.end is not None and segment_number(self.end, size) <= segment_number(name, size):
            self.end = None  # the archive grew past what was missing
            self.next = nxt
        # Entries PostgreSQL will not ask for (another timeline, or behind it) only take room.
        for old in spooled(self.spool):
            if old[:8] != name[:8] or segment_number(old, size) < keep_from:
                with contextlib.suppress(OSError):
                    os.unlink(self.spool / old)
                    print(f"dropped {old}", file=sys.stderr, flush=True)

    def _fill(self, in_spool: int) -> None:
        """Start downloads until spooled + in flight reach K (the spool's bound) or the archive's end."""
        if self.anchor is None or self.next is None:
            return
        size = self.anchor[1]
        while in_spool + len(self.inflight) < self.k:
            if self.end is not None and segment_number(self.next, size) >= segment_number(self.end, size):
                return
            name, self.next = self.next, next_segment(self.next, size)
            if (self.spool / name).exists():
                continue  # spooled already (counted in in_spool)
            self.inflight[name] = self.pool.submit(self._download, name, size)

    def _download(self, name: str, size: int) -> None:
        from barman.cloud import ALLOWED_COMPRESSIONS
        from barman.xlog import hash_dir

        # As barman-cloud-wal-restore looks: the exact name, plain or with a compression suffix
        # (never name.partial nor name.<offset>.backup).
        prefix = os.path.join(self.cloud.path, self.settings.pitr.server_name, "wals", hash_dir(name), name)
        source = compression = None
        for path in sorted(self.cloud.list_bucket(prefix)):
            suffix = os.path.basename(path)[len(name):]
            if os.path.basename(path).startswith(name) and (suffix == "" or suffix in ALLOWED_COMPRESSIONS):
                source, compression = path, ALLOWED_COMPRESSIONS.get(suffix)
                break
        if source is None:
            self._missing(name, size)
            return
        tmp = self.spool / f".tmp-{name}-{os.getpid()}"
        try:
            self.cloud.download_file(source, str(tmp), compression)
            if tmp.stat().st_size != size:
                raise OSError(f"{name}: {tmp.stat().st_size} bytes, not {size}")
            os.replace(tmp, self.spool / name)
            print(f"spooled {name}", file=sys.stderr, flush=True)
        except BaseException as exc:  # a failed prefetch is only a miss: the slow path fetches it
            with contextlib.suppress(OSError):
                tmp.unlink()
            print(f"prefetch {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def _missing(self, name: str, size: int) -> None:
        if self.end is None or segment_number(name, size) < segment_number(self.end, size):
            self.end = name


def _cloud_interface(settings: Any) -> Any:
    """barman-cloud's own client, built from the options the slow path passes (one for all downloads)."""
    from barman.clients.cloud_walrestore import parse_arguments
    from barman.cloud_providers import get_cloud_interface

    from opstower_core.pitr.barman import cloud_options, destination_url

    config = parse_arguments([*cloud_options(settings), destination_url(settings), settings.pitr.server_name,
                              "000000010000000000000001", "/dev/null"])
    return get_cloud_interface(config)
