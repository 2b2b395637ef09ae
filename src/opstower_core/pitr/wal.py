"""wal-push / wal-fetch: PostgreSQL's archive and restore commands, on barman-cloud.

Exit codes follow PostgreSQL's contract: 0 only when the segment is safely archived
(or restored); non-zero makes the archiver retry, and makes recovery treat the segment
as absent (barman-cloud-wal-restore exits 1 for "not found", which ends archive recovery
normally at the end of the archive, never a crash: codes above 125 would be fatal).

With a replica ([s3.replica]), a segment archived on the primary is then put on the
replica under the same relative key, within REPLICA_WAL_TIMEOUT seconds. Its outcome never
changes the exit code: PostgreSQL's contract is about the primary archive, and a replica
down must not stop archiving (WAL piling up in pg_wal). A segment whose copy failed is
named in the server log and copied by the next `base-backup` or `replicate`;
`storage.replica.pitr_replica_lag` measures what is missing meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.pitr.barman import (
    call_in_process,
    cloud_env,
    cloud_options,
    destination_url,
    key_root,
    upload_options,
)
from opstower_core.storage.replica import put_pitr_object, replica_settings
from opstower_core.storage.s3 import s3_error_text, store_for

# How long wal-push gives the replica's copy of a segment (PostgreSQL waits for archive_command).
REPLICA_WAL_TIMEOUT = 10.0


def wal_rel(name: str) -> str:
    """A WAL file's key under the server's root, as barman-cloud writes it uncompressed:
    wals/<timeline+log>/<name>, history files directly under wals/."""
    from barman.xlog import hash_dir

    folder = hash_dir(name)
    return f"wals/{folder}/{name}" if folder else f"wals/{name}"


def wal_key(settings: Settings, name: str) -> str:
    """barman-cloud's key of an uncompressed WAL file in the primary bucket."""
    return key_root(settings) + wal_rel(name)


def archived_copy(settings: Settings, name: str) -> tuple[str, bytes] | None:
    """The archived object of segment `name` (any compression suffix barman-cloud writes) and its plain
    bytes, or None. The same decompressors as status: another system's archive (e.g. CloudNativePG's
    wal.compression) may use any of them."""
    from barman.cloud import ALLOWED_COMPRESSIONS

    from opstower_core.pitr.status import plain_bytes

    store = store_for(settings.s3)
    key = wal_key(settings, name)
    page = store.client.list_objects_v2(Bucket=store.bucket, Prefix=key)
    for obj in page.get("Contents", []):
        suffix = obj["Key"][len(key):]
        if suffix and suffix not in ALLOWED_COMPRESSIONS:
            continue  # another file sharing the prefix (e.g. a .partial)
        data = store.get_bytes(obj["Key"])
        return obj["Key"], plain_bytes(obj["Key"], data)
    return None


def wal_push(settings: Settings, path: str | Path, *, err: TextIO = sys.stderr) -> int:
    """Archive one WAL file (PostgreSQL's %p). Refuses to replace an archived copy with different bytes.

    Then, with a replica, copies it there (bounded; never changes the exit code).
    Refused (1, the archiver retries) when the archive is another system's ([pitr] read_only)."""
    if settings.pitr.read_only:
        print(f"opstower wal-push: REFUSED: s3://{settings.s3.bucket}/{key_root(settings)} is another system's "
              f"archive ([pitr] read_only); nothing was changed ({Path(path).name} stays in pg_wal): set this "
              "server's archive_command back to the owner's, or give it its own [pitr] without read_only", file=err)
        return 1
    warm = None
    if replica_settings(settings) is not None:
        os.environ.update(cloud_env(settings))  # as barman-cloud gets it, before the client reads the chain
        warm = _ReplicaClient(settings)
    rc = _archive(settings, Path(path), err)
    if rc == 0 and warm is not None:
        copy_to_replica(settings, Path(path), err, client=warm)
    return rc


class _ReplicaClient:
    """The replica's client, built on a thread while the primary archive runs (building one costs
    about as much as sending a segment). One attempt and short timeouts: a replica down costs a
    refused connection, not retries with backoff, on every segment."""

    def __init__(self, settings: Settings) -> None:
        self.client: object | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._build, args=(settings,), name="wal-replica-client", daemon=True)
        self._thread.start()

    def _build(self, settings: Settings) -> None:
        try:
            rep = replica_settings(settings)
            assert rep is not None
            self.client = store_for(rep).new_client(retries={"max_attempts": 1, "mode": "standard"},
                                                    connect_timeout=2, read_timeout=REPLICA_WAL_TIMEOUT)
        except OpsError as exc:
            self.error = exc.what
        except Exception as exc:  # noqa: BLE001 - said in the server log by copy_to_replica
            self.error = s3_error_text(exc)

    def get(self) -> object:
        self._thread.join()
        if self.client is None:
            raise OpsError(f"The replica client could not be made ({self.error})", "", "")
        return self.client


def copy_to_replica(settings: Settings, path: Path, err: TextIO = sys.stderr, timeout: float | None = None,
                    client: _ReplicaClient | None = None) -> str | None:
    """Put an archived WAL file on the replica within `timeout` seconds (REPLICA_WAL_TIMEOUT);
    its URL, or None with a WARNING line in the server log. Runs on a daemon thread: a hung
    replica is left behind when the archive command exits, never waited for."""
    name = path.name
    limit = REPLICA_WAL_TIMEOUT if timeout is None else timeout
    outcome: dict[str, str] = {}

    def run() -> None:
        try:
            outcome["where"] = put_pitr_object(settings, wal_rel(name), path.read_bytes(),
                                               client.get() if client is not None else None)
        except OpsError as exc:
            outcome["error"] = exc.what
        except Exception as exc:  # noqa: BLE001 - credentials, a file gone: said in the log, never raised
            outcome["error"] = s3_error_text(exc)

    t0 = time.monotonic()
    worker = threading.Thread(target=run, name="wal-replica", daemon=True)
    worker.start()
    worker.join(limit)
    if "where" in outcome:
        return outcome["where"]
    why = outcome.get("error") or f"no answer within {limit:g} s"
    print(f"opstower wal-push: WARNING: {name} is archived on the primary but not copied to the replica ({why}, "
          f"{time.monotonic() - t0:.1f} s); the next `opstower base-backup` or `opstower replicate` copies it",
          file=err)
    return None


def _archive(settings: Settings, path: Path, err: TextIO) -> int:
    name = path.name
    try:
        existing = archived_copy(settings, name)
    except Exception as exc:  # noqa: BLE001 - any failure: non-zero, the archiver retries
        print(f"opstower wal-push: cannot check s3 for {name}: {exc}", file=err)
        return 1
    if existing is not None:
        key, data = existing
        local = path.read_bytes()
        if data == local:
            # Archiving twice (a retry after a lost acknowledgement) must succeed.
            print(f"opstower wal-push: {name} is already archived with identical content", file=err)
            return 0
        print(f"opstower wal-push: REFUSED: s3://{settings.s3.bucket}/{key} already holds {name} with different "
              f"content (sha256 {hashlib.sha256(data).hexdigest()[:12]} archived, "
              f"{hashlib.sha256(local).hexdigest()[:12]} here): two servers archive into the same place, or "
              "the archive belongs to an older cluster; give this server its own [pitr] server_name", file=err)
        return 1
    from barman.clients.cloud_walarchive import main

    args = [*cloud_options(settings), *upload_options(settings), destination_url(settings),
            settings.pitr.server_name, str(path)]
    return call_in_process(settings, main, args)


def wal_fetch(settings: Settings, name: str, dest: str | Path, spool: str | Path | None = None,
              prefetch: int = 0) -> int:
    """Restore one WAL file (PostgreSQL's %f %p): 0 when written, 1 when the archive does not have it.

    With a spool (a scratch cluster's, prefetch.py): the spooled segment when there, else fetched
    as ever while a prefetcher (started if none runs) downloads the `prefetch` segments after it."""
    from opstower_core.pitr import prefetch as pf

    if spool is not None:
        if pf.take_from_spool(spool, name, dest):
            return 0
        if prefetch > 0 and pf.is_segment(name):
            # Started before this fetch, so its own start-up overlaps it; it waits for `want`.
            try:
                pf.ensure_running(spool, prefetch, settings.config_path)
            except OSError as exc:  # prefetching is an optimisation: the fetch goes on without it
                print(f"opstower wal-fetch: prefetch not started: {exc}", file=sys.stderr)
    from barman.clients.cloud_walrestore import main

    args = [*cloud_options(settings), destination_url(settings), settings.pitr.server_name, name, str(dest)]
    rc = call_in_process(settings, main, args)
    if rc == 0 and spool is not None and prefetch > 0 and pf.is_segment(name):
        with contextlib.suppress(OSError):
            pf.want(spool, name, os.path.getsize(dest))
    return rc


def check_archive_access(settings: Settings) -> str:
    """One sentence proving the bucket is reachable with the settings and credentials in force."""
    store = store_for(settings.s3)
    store.client.list_objects_v2(Bucket=store.bucket, Prefix=key_root(settings), MaxKeys=1)
    who = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "the AWS environment"
    return f"OK: s3://{store.bucket}/{key_root(settings)} reachable (credentials from {who})"
