"""The second off-site copy: `[s3.replica]`, another bucket, region, account or store.

A backup's artifact, globals file and metadata object are copied to the replica after the
primary upload, in that order (the metadata object last: a copy without it is unfinished,
and retention never counts it). How the bytes travel:

- a server-side copy (`copy_object`, multipart copy above the part size) when both copies
  live on the same endpoint with the same credentials: no byte passes through this host;
- otherwise streamed: from the local artifact when it is here, else from the primary,
  through a multipart upload of bounded memory (a part per thread at most).

Every copy is then checked against what the backup recorded: the bytes streamed are hashed
on the way and must match the metadata's sha256 (a mismatch deletes the copy), the object's
size must match, and its stored sha256 (object metadata) and metadata object must say the
same. `catch_up` copies every backup present locally or on the primary that the replica
lacks, so a failed copy is made good by the next run or by `opstower replicate`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from opstower_core import __version__
from opstower_core.artifacts.names import ArtifactName, parse_name, read_metadata
from opstower_core.config import S3Settings, Settings
from opstower_core.errors import OpsError
from opstower_core.events import Status
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import MiB, S3Store, s3_error_text, store_for

Log = Callable[[str], None]


def replica_settings(settings: Settings) -> S3Settings | None:
    """The `[s3.replica]` settings, or None when no replica is configured."""
    rep = settings.s3.replica
    return rep if rep is not None and rep.enabled else None


def replica_store(settings: Settings) -> S3Store:
    """The replica's store (one client per settings). Raises OpsError when none is configured."""
    rep = replica_settings(settings)
    if rep is None:
        raise OpsError("No replica is configured", "nothing was changed",
                       "add an [s3.replica] table (bucket, endpoint_url, …) to the config file")
    return store_for(rep)


def as_primary(settings: Settings) -> Settings:
    """These settings with the replica standing in for the primary: every step that reads
    S3 (catalog, verification, download) then reads the replica. For `--from replica`."""
    rep = replica_settings(settings)
    if rep is None:
        raise OpsError("--from replica: no replica is configured", "nothing was changed",
                       "add an [s3.replica] table to the config file, or leave out --from")
    return settings.with_changes(s3=replace(rep, replica=None))


def settings_for_copy(settings: Settings, choice: str | None = None) -> tuple[Settings, str | None]:
    """The settings a restore should read S3 with, and a sentence saying which copy and why.

    `choice` "replica": the replica, explicitly; "primary": the primary, whatever its state;
    None: the primary, unless it is unreachable and the replica is reachable.
    """
    if choice == "replica":
        rep = as_primary(settings)
        return rep, f"Using the replica copy (--from replica): s3://{rep.s3.bucket}/{rep.s3.prefix}"
    if choice is not None or not settings.s3.enabled or replica_settings(settings) is None:
        return settings, None
    try:
        store_for(settings.s3).check_reachable()
    except OpsError as exc:
        ok, _why = is_reachable(settings)
        if ok:
            rep = as_primary(settings)
            return rep, (f"{exc.what}; using the replica copy instead (s3://{rep.s3.bucket}/{rep.s3.prefix})")
    return settings, None


def same_account(primary: S3Settings, replica: S3Settings) -> bool:
    """True when a server-side copy can work: one endpoint, one set of credentials."""
    return (primary.endpoint_url == replica.endpoint_url and replica.profile is None
            and replica.access_key_id_env is None and (primary.region or "") == (replica.region or ""))


# -- one backup ----------------------------------------------------------------------------------

@dataclass
class ReplicaCopy:
    """Where a backup's replica copy is and how it got there."""

    artifact: str
    key: str
    bucket: str
    how: str  # "already there", "server-side copy", "streamed from the local file", "streamed from the primary"
    size: int
    seconds: float = 0.0
    locked_until: str | None = None  # Object Lock retention, ISO date
    lock_note: str | None = None  # why a lock asked for was not written

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def as_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "where": self.where, "key": self.key, "how": self.how, "size": self.size,
                "seconds": round(self.seconds, 2), "locked_until": self.locked_until, "lock_note": self.lock_note}


class _Hashing:
    """A read-only stream that hashes what passes through it (what was sent is what was checked)."""

    def __init__(self, raw: IO[bytes] | Any) -> None:
        self.raw = raw
        self.h = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n) if n is not None and n >= 0 else self.raw.read()
        self.h.update(data)
        self.size += len(data)
        return data


_lock_support: dict[tuple[str | None, str], tuple[bool | None, str]] = {}  # by (endpoint, bucket)
_lock_support_guard = threading.Lock()


def lock_support(store: S3Store) -> tuple[bool | None, str]:
    """(supported, sentence) for S3 Object Lock on the store's bucket; None when it could not be read."""
    where = (store.settings.endpoint_url, store.bucket)
    with _lock_support_guard:
        if where in _lock_support:
            return _lock_support[where]
    try:
        conf = store.client.get_object_lock_configuration(Bucket=store.bucket).get("ObjectLockConfiguration", {})
        enabled = conf.get("ObjectLockEnabled") == "Enabled"
        answer = (True, f"Object Lock is enabled on bucket {store.bucket}") if enabled else (
            False, f"Object Lock is not enabled on bucket {store.bucket} (it can only be enabled on a new bucket)")
    except Exception as exc:  # noqa: BLE001
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code == "ObjectLockConfigurationNotFoundError":
            answer = (False, f"Object Lock is not enabled on bucket {store.bucket} (it can only be enabled on a new bucket)")
        elif code in ("NotImplemented", "MethodNotAllowed", "501", "XNotImplemented"):
            answer = (False, "Object Lock is not supported by this store")
        else:
            return None, f"Object Lock support could not be read ({s3_error_text(exc)})"
    with _lock_support_guard:
        _lock_support[where] = answer
    return answer


def _lock_args(store: S3Store, note: ReplicaCopy) -> dict[str, Any]:
    """Object Lock arguments for a write when lock_days is set and the bucket supports it (noted in `note`)."""
    days = store.settings.lock_days
    if not days:
        return {}
    ok, sentence = lock_support(store)
    if not ok:
        note.lock_note = f"not locked: {sentence}"
        return {}
    until = datetime.now(UTC) + timedelta(days=days)
    note.locked_until = until.isoformat(timespec="seconds")
    return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}


def _object_metadata(name: ArtifactName) -> dict[str, str]:
    return {"database": name.database, "timestamp": name.timestamp, "format": name.format,
            "opstower-version": __version__}


def _write_args(store: S3Store, meta: dict[str, Any], name: ArtifactName) -> tuple[dict[str, Any], ReplicaCopy]:
    """ExtraArgs for the artifact: storage class, SSE, sha256 in the object metadata, Object Lock."""
    note = ReplicaCopy(name.filename, "", store.bucket, "", int(meta["size_bytes"]))
    args = {**store.extra_args(), **_lock_args(store, note),
            "Metadata": {"sha256": str(meta["sha256"]), **_object_metadata(name)}}
    return args, note


def copy_backup(settings: Settings, name: ArtifactName, meta: dict[str, Any], primary_key: str | None = None,
                log: Log | None = None) -> ReplicaCopy:
    """Copy one backup (artifact, globals file, metadata object) to the replica and check it.

    `meta` is the backup's metadata (its sha256 and size are the proof). Raises OpsError
    when the copy cannot be made or does not check out (nothing unchecked is left).
    """
    log = log or (lambda _line: None)
    store = replica_store(settings)
    if not isinstance(meta.get("sha256"), str) or meta.get("size_bytes") is None:
        raise OpsError(f"{name.filename} has no sha256 or size in its metadata", "it was not copied to the replica",
                       "verify it (`opstower verify`); only checkable backups are replicated")
    key = name.s3_key(store.prefix)
    t0 = time.monotonic()
    store.check_reachable()  # "Replica bucket … is not reachable" says it better than a failed HEAD
    try:
        if check_copy(store, name, meta) is None:
            return ReplicaCopy(name.filename, key, store.bucket, "already there", int(meta["size_bytes"]))
        copy = _copy_artifact(settings, store, name, meta, key, primary_key, log)
        _copy_sidecars(settings, store, name, meta, primary_key)
        problem = check_copy(store, name, meta)
    except OpsError:
        raise
    except Exception as exc:  # noqa: BLE001 - boto3's many exception types
        raise OpsError(f"Copy of {name.filename} to the replica failed ({s3_error_text(exc)})",
                       "the backup itself is good; the replica copy is missing", "the next backup or "
                       "`opstower replicate` retries it") from None
    if problem:
        raise OpsError(f"The replica copy of {name.filename} does not check out ({problem})",
                       "the backup itself is good", "run `opstower replicate` to copy it again")
    copy.seconds = time.monotonic() - t0
    log(f"Copied to the replica ({copy.how}): {copy.where}"
        + (f", locked until {copy.locked_until}" if copy.locked_until else "")
        + (f"; {copy.lock_note}" if copy.lock_note else ""))
    return copy


def _copy_artifact(settings: Settings, store: S3Store, name: ArtifactName, meta: dict[str, Any], key: str,
                   primary_key: str | None, log: Log) -> ReplicaCopy:
    from boto3.s3.transfer import TransferConfig

    rep = store.settings
    cfg = TransferConfig(multipart_threshold=rep.part_size_mb * MiB, multipart_chunksize=rep.part_size_mb * MiB,
                         max_concurrency=rep.multipart_concurrency)
    args, copy = _write_args(store, meta, name)
    copy.key = key
    primary = store_for(settings.s3) if settings.s3.enabled else None
    if primary is not None and primary_key and same_account(settings.s3, rep):
        recorded = primary.remote_sha256(primary_key)
        if recorded == meta["sha256"]:
            store.client.copy({"Bucket": primary.bucket, "Key": primary_key}, store.bucket, key,
                              ExtraArgs={**args, "MetadataDirective": "REPLACE", "ContentType": "application/octet-stream"},
                              Config=cfg)
            copy.how = "server-side copy"
            return copy
        log(f"The primary copy's recorded sha256 is {recorded or 'missing'}; streaming instead")
    local = settings.backup_dir / name.filename
    if local.is_file() and local.stat().st_size == int(meta["size_bytes"]):
        with open(local, "rb") as fh:
            _stream(store, fh, key, args, cfg, meta, name)
        copy.how = "streamed from the local file"
        return copy
    if primary is None or not primary_key:
        raise OpsError(f"{name.filename} is neither here nor on the primary", "it was not copied to the replica",
                       "nothing to copy it from")
    body = primary.client.get_object(Bucket=primary.bucket, Key=primary_key)["Body"]
    try:
        _stream(store, body, key, args, cfg, meta, name)
    finally:
        body.close()
    copy.how = "streamed from the primary"
    return copy


def _stream(store: S3Store, raw: Any, key: str, args: dict[str, Any], cfg: Any, meta: dict[str, Any],
            name: ArtifactName) -> None:
    """Multipart upload from a stream, hashing on the way; a copy whose bytes differ is deleted."""
    reader = _Hashing(raw)
    store.client.upload_fileobj(reader, store.bucket, key, ExtraArgs={**args, "ContentType": "application/octet-stream"},
                                Config=cfg)
    if reader.h.hexdigest() != meta["sha256"] or reader.size != int(meta["size_bytes"]):
        try:
            store.delete(key)
        except Exception:  # noqa: BLE001 - a locked copy stays; check_copy and verify name it
            pass
        raise OpsError(f"The bytes copied for {name.filename} do not match its recorded sha256",
                       "the replica copy was removed", "verify the source copy (`opstower verify`)")


def _copy_sidecars(settings: Settings, store: S3Store, name: ArtifactName, meta: dict[str, Any],
                   primary_key: str | None) -> None:
    """The globals file (when the backup has one), then the metadata object, last."""
    folder = name.s3_key(store.prefix).rsplit("/", 1)[0]
    globals_file = meta.get("globals_file")
    if globals_file and meta.get("globals_dumped", True):
        local = settings.backup_dir / str(globals_file)
        data: bytes | None = local.read_bytes() if local.is_file() else None
        if data is None and primary_key and settings.s3.enabled:
            try:
                data = store_for(settings.s3).get_bytes(primary_key.rsplit("/", 1)[0] + "/" + str(globals_file))
            except Exception:  # noqa: BLE001 - verification names a missing globals file
                data = None
        if data is not None:
            store.put_bytes(f"{folder}/{globals_file}", data, content_type="application/sql")
    store.put_bytes(f"{folder}/{name.meta_filename}", (json.dumps(meta, indent=2) + "\n").encode())


def check_copy(store: S3Store, name: ArtifactName, meta: dict[str, Any]) -> str | None:
    """None when the store's copy of `name` matches `meta` (size, recorded sha256, metadata object);
    else what is wrong ("missing" when absent)."""
    key = name.s3_key(store.prefix)
    head = store.head(key)
    if head is None:
        return "missing"
    if int(head["ContentLength"]) != int(meta["size_bytes"]):
        return f"size {int(head['ContentLength']):,} bytes, {int(meta['size_bytes']):,} recorded"
    recorded = store.remote_sha256(key, head)
    if recorded != meta["sha256"]:
        return "its recorded sha256 differs" if recorded else "no sha256 recorded with it"
    try:
        stored = json.loads(store.get_bytes(name.s3_meta_key(store.prefix)))
    except Exception:  # noqa: BLE001
        return "its metadata object is missing or unreadable"
    if not isinstance(stored, dict) or stored.get("sha256") != meta["sha256"]:
        return "its metadata object differs"
    return None


# -- the copy overlapped with the dump ------------------------------------------------------------

# How long, in all, the dump may wait for the replica's overlapped upload (its queue of parts
# full) before that copy is given up for this run: a slow or hung replica never holds a backup
# back longer than this. The next run's catch-up or `opstower replicate` copies it then.
FEED_WAIT_BUDGET = 20.0
# After the dump, finishing the overlapped upload gives up when no part completes for this long.
FEED_STALL = 60.0
FEED_ABORT_WAIT = 5.0  # an abort is best effort: the next run's ledger check or lifecycle rules end it


class ReplicaFeed:
    """The replica's multipart upload, fed the same compressed bytes as the primary's, as they come.

    For a streamed copy (another endpoint or account): the replica gets its bytes while the
    dump runs instead of after it. Everything that talks to the replica runs on daemon threads
    of its own, so the dump only ever hands bytes over: `write` never raises, and waits for a
    free slot (a full queue: the replica slower than the dump) FEED_WAIT_BUDGET seconds in all
    before it gives this copy up. Memory is bounded: at most `concurrency` parts queued and
    `concurrency` parts being sent, each part_size_mb.

    The bytes sent are hashed on the way; `finish` completes the upload only when their size
    and sha256 are the backup's (a wrong copy never appears), records the sha256 as an object
    tag (unknown when the upload started), copies the sidecars and checks the copy.
    """

    def __init__(self, settings: Settings, name: ArtifactName,
                 on_open: Callable[[str, str], None] | None = None,
                 on_close: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.store = replica_store(settings)
        self.name = name
        self.key = name.s3_key(self.store.prefix)
        self.note = ReplicaCopy(name.filename, self.key, self.store.bucket, "streamed with the dump", 0)
        self.part_size = self.store.settings.part_size_mb * MiB
        self.concurrency = max(1, self.store.settings.multipart_concurrency)
        self.sha = hashlib.sha256()
        self.size = 0
        self.upload_id: str | None = None
        self.problem: str | None = None  # why this copy was given up (None: still going)
        self.waited = 0.0  # seconds the dump spent waiting for a free slot
        self.stalled = False  # given up because the replica was too slow (not because it refused)
        self._on_open, self._on_close = on_open, on_close
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._next_part = 1
        self._etags: dict[int, str] = {}
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(self.concurrency)
        self._opened = threading.Event()
        self._last_progress = time.monotonic()
        self._guard = threading.Lock()
        self._t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._open, name="replica-open", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"replica-part-{i}", daemon=True)
                          for i in range(self.concurrency)]
        for t in self._threads:
            t.start()

    @property
    def failed(self) -> bool:
        return self.problem is not None

    @property
    def retryable(self) -> bool:
        """Worth one more try from the local file: the replica answered (the upload started) and kept up."""
        return self.upload_id is not None and not self.stalled

    # -- the dump's side: hand bytes over --------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.problem is not None:
            self._chunks, self._buffered = [], 0  # free the memory at once
            return
        if not data:
            return
        self.sha.update(data)
        self.size += len(data)
        self._chunks.append(bytes(data))
        self._buffered += len(data)
        while self._buffered >= self.part_size and self.problem is None:
            buf = b"".join(self._chunks)
            self._put(buf[: self.part_size])
            rest = buf[self.part_size:]
            self._chunks = [rest] if rest else []
            self._buffered = len(rest)

    def _put(self, part: bytes) -> None:
        number, self._next_part = self._next_part, self._next_part + 1
        t0 = time.monotonic()
        try:
            self._queue.put((number, part), timeout=max(0.0, FEED_WAIT_BUDGET - self.waited))
        except queue.Full:
            self.stalled = True
            self._give_up(f"The replica fell behind the dump ({FEED_WAIT_BUDGET:g} s of waiting in all)")
        finally:
            self.waited += time.monotonic() - t0

    def _give_up(self, why: str) -> None:
        with self._guard:
            if self.problem is None:
                self.problem = why

    # -- the replica's side: daemon threads -------------------------------------------------
    def _open(self) -> None:
        try:
            args = {**self.store.extra_args(), **_lock_args(self.store, self.note)}
            resp = self.store.client.create_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, Metadata=_object_metadata(self.name),
                ContentType="application/octet-stream", **args)
            self.upload_id = resp["UploadId"]
            if self._on_open is not None:
                self._on_open(self.upload_id, self.key)
        except Exception as exc:  # noqa: BLE001 - reported by finish(); the dump goes on
            self._give_up(exc.what if isinstance(exc, OpsError) else
                          f"Replica bucket {self.store.bucket} is not reachable ({s3_error_text(exc)})")
        finally:
            self._last_progress = time.monotonic()
            self._opened.set()

    def _work(self) -> None:
        self._opened.wait()
        while (item := self._queue.get()) is not None:
            if self.problem is not None or self.upload_id is None:
                continue  # keep taking: the dump never waits on a dead copy
            number, part = item
            # A write under an Object Lock retention must carry its MD5 (AWS refuses it otherwise).
            md5 = ({"ContentMD5": base64.b64encode(hashlib.md5(part, usedforsecurity=False).digest()).decode()}
                   if self.note.locked_until else {})
            try:
                resp = self.store.client.upload_part(Bucket=self.store.bucket, Key=self.key,
                                                     UploadId=self.upload_id, PartNumber=number, Body=part, **md5)
                with self._guard:
                    self._etags[number] = resp["ETag"]
                self._last_progress = time.monotonic()
            except Exception as exc:  # noqa: BLE001
                self._give_up(f"A part of the replica upload failed ({s3_error_text(exc)})")

    # -- after the dump ----------------------------------------------------------------
    def finish(self, meta: dict[str, Any], log: Log | None = None) -> ReplicaCopy:
        """Send the rest, complete the upload when its bytes are the backup's, add the sidecars, check.

        Raises OpsError (the upload aborted) when the copy was given up or does not check out."""
        log = log or (lambda _line: None)
        if self.problem is None:
            if self._chunks or self._next_part == 1:  # S3 wants one part at least, even an empty one
                self._put(b"".join(self._chunks))
                self._chunks, self._buffered = [], 0
            self._drain()
        if self.problem is None and (self.size != int(meta["size_bytes"]) or self.sha.hexdigest() != meta["sha256"]):
            self._give_up(f"The bytes streamed to the replica ({self.size:,}) do not match the recorded size and sha256")
        if self.problem is not None:
            self.abort()
            raise OpsError(self.problem, "the backup itself is good; the replica copy is missing",
                           "the next backup or `opstower replicate` retries it")
        assert self.upload_id is not None
        try:
            parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
            self.store.client.complete_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                        UploadId=self.upload_id, MultipartUpload={"Parts": parts})
            self._closed()
            self.store.set_tags(self.key, {"sha256": str(meta["sha256"]), "database": self.name.database,
                                           "timestamp": self.name.timestamp})
            _copy_sidecars(self.settings, self.store, self.name, meta, None)
            problem = check_copy(self.store, self.name, meta)
        except Exception as exc:  # noqa: BLE001 - boto3's many exception types
            self.abort()
            raise OpsError(f"Copy of {self.name.filename} to the replica failed ({s3_error_text(exc)})",
                           "the backup itself is good; the replica copy is missing or unfinished",
                           "the next backup or `opstower replicate` copies it again") from None
        if problem:
            raise OpsError(f"The replica copy of {self.name.filename} does not check out ({problem})",
                           "the backup itself is good", "run `opstower replicate` to copy it again")
        copy = replace(self.note, size=self.size, seconds=time.monotonic() - self._t0)
        log(f"Copied to the replica ({copy.how}): {copy.where}"
            + (f", locked until {copy.locked_until}" if copy.locked_until else "")
            + (f"; {copy.lock_note}" if copy.lock_note else ""))
        return copy

    def _drain(self) -> None:
        """Wait until every part is sent; give up when none completes for FEED_STALL seconds."""
        pending = [None] * self.concurrency
        self._last_progress = time.monotonic()
        while self.problem is None:
            if pending:
                try:
                    self._queue.put(pending[0], timeout=0.2)
                    pending.pop()
                except queue.Full:
                    pass
            elif not any(t.is_alive() for t in self._threads):
                return
            else:
                for t in self._threads:
                    t.join(0.2 / len(self._threads))
            if time.monotonic() - self._last_progress > FEED_STALL:
                self.stalled = True
                self._give_up(f"No part of the replica upload completed for {FEED_STALL:g} s")

    def _closed(self) -> None:
        if self.upload_id is not None and self._on_close is not None:
            self._on_close(self.upload_id)

    def abort(self) -> None:
        """Give the copy up and abort its multipart upload (best effort, bounded: FEED_ABORT_WAIT)."""
        self._give_up(self.problem or "aborted")
        for _ in self._threads[1:]:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break  # workers blocked on a hung replica: they are daemons and end with the process

        def abort() -> None:
            if self.upload_id is None:
                return
            try:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                         UploadId=self.upload_id)
                self._closed()
            except Exception:  # noqa: BLE001 - the ledger lets the next run abort it
                pass

        if self._threads[0].is_alive():
            self._threads[0].join(FEED_ABORT_WAIT)
        t = threading.Thread(target=abort, name="replica-abort", daemon=True)
        t.start()
        t.join(FEED_ABORT_WAIT)


# -- catching up -----------------------------------------------------------------------------------

@dataclass
class CatchUpReport:
    copied: list[ReplicaCopy] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already on the replica, checked
    failed: list[tuple[str, str]] = field(default_factory=list)  # (artifact, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (artifact, why): e.g. no metadata
    primary_error: str | None = None  # the primary could not be listed: only local backups were looked at

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def summary(self) -> str:
        text = f"{len(self.copied)} copied to the replica, {len(self.present)} already there"
        if self.failed:
            text += f", {len(self.failed)} failed ({self.failed[0][0]}: {self.failed[0][1]})"
        if self.skipped:
            text += f", {len(self.skipped)} not copyable ({self.skipped[0][0]}: {self.skipped[0][1]})"
        if self.primary_error:
            text += f"; primary not listed ({self.primary_error})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "copied": [c.as_dict() for c in self.copied], "present": self.present,
                "failed": [{"artifact": a, "error": e} for a, e in self.failed],
                "skipped": [{"artifact": a, "why": e} for a, e in self.skipped], "primary_error": self.primary_error}


def catch_up(settings: Settings, database: str | None = None, log: Log | None = None,
             cancel: Callable[[], bool] | None = None, skip: set[str] | None = None) -> CatchUpReport:
    """Copy every backup (of `database`, or all) found locally or on the primary that the
    replica lacks or holds with another size. Raises OpsError when the replica is unreachable."""
    log = log or (lambda _line: None)
    store = replica_store(settings)
    store.check_reachable()
    report = CatchUpReport()
    on_replica: dict[str, int] = {}
    metas: set[str] = set()
    for obj in store.iter_objects():
        base = obj.key.rsplit("/", 1)[-1]
        if base.endswith(".meta.json"):
            metas.add(base)
        else:
            on_replica[base] = obj.size
    sources: dict[str, tuple[ArtifactName, dict[str, Any] | None, str | None]] = {}
    for art in LocalStore(settings.backup_dir).artifacts(database):
        if art.name.pre_restore or not art.name.conventional:
            continue  # pre-restore copies are local by design
        meta, _problem = read_metadata(settings.backup_dir / art.name.meta_filename)
        sources[art.name.filename] = (art.name, meta, None)
    primary = store_for(settings.s3) if settings.s3.enabled else None
    if primary is not None:
        try:
            for obj in primary.iter_objects():
                name = parse_name(obj.key.rsplit("/", 1)[-1])
                if name is None or name.pre_restore or (database and name.database != database):
                    continue
                known = sources.get(name.filename)
                sources[name.filename] = (name, known[1] if known else None, obj.key)
        except Exception as exc:  # noqa: BLE001 - the primary down is why a replica exists
            report.primary_error = exc.what if isinstance(exc, OpsError) else s3_error_text(exc)
    for filename, (name, meta, primary_key) in sorted(sources.items(), key=lambda kv: kv[1][0].created, reverse=True):
        if cancel and cancel():
            break
        if filename in (skip or set()):
            continue
        if meta is None and primary_key:
            meta = _primary_meta(primary, primary_key, name)
        if meta is None or meta.get("sha256") is None or meta.get("size_bytes") is None:
            report.skipped.append((filename, "no metadata with a sha256 to check a copy against"))
            continue
        if on_replica.get(filename) == int(meta["size_bytes"]) and name.meta_filename in metas:
            report.present.append(filename)
            continue
        try:
            report.copied.append(copy_backup(settings, name, meta, primary_key, log))
        except OpsError as exc:
            report.failed.append((filename, exc.what))
            log(f"Not copied to the replica: {exc.what}")
    return report


def _primary_meta(primary: S3Store | None, key: str, name: ArtifactName) -> dict[str, Any] | None:
    if primary is None:
        return None
    try:
        data = json.loads(primary.get_bytes(key.rsplit("/", 1)[0] + "/" + name.meta_filename))
    except Exception:  # noqa: BLE001
        return None
    return data if isinstance(data, dict) else None


# -- point-in-time recovery: barman-cloud's base backups and WAL -----------------------------------

@dataclass
class PitrCopyReport:
    """`catch_up_pitr`'s outcome: objects under the PITR root copied, already there, failed."""

    root: str = ""  # the replica's key root ("<prefix><pitr.path>/<server_name>/")
    copied: list[str] = field(default_factory=list)  # keys relative to the root
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative key, why)
    bytes_copied: int = 0
    md5_checked: int = 0  # copies whose MD5 ETag matched the primary's (the rest: size only)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def summary(self) -> str:
        text = (f"PITR: {len(self.copied)} object(s) copied to the replica ({self.bytes_copied:,} bytes), "
                f"{self.present} already there")
        if self.copied:
            text += f" ({self.md5_checked} checked by size and MD5, the rest by size: multipart ETags are not MD5s)"
        if self.failed:
            text += f", {len(self.failed)} failed ({self.failed[0][0]}: {self.failed[0][1]})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "root": self.root, "copied": self.copied, "present": self.present,
                "bytes_copied": self.bytes_copied, "md5_checked": self.md5_checked,
                "failed": [{"key": k, "error": e} for k, e in self.failed]}


def pitr_root(s3: S3Settings, settings: Settings) -> str:
    """The key root of this server's base backups and WAL in a store: pitr/barman.py's key_root for
    that store's prefix (storage sits below pitr in the layers, so the formula is pitr's, restated).
    An empty pitr path (a CloudNativePG destinationPath at the bucket or prefix root) adds no "/"."""
    parts = [s3.prefix.strip("/"), settings.pitr.path.strip("/"), settings.pitr.server_name]
    return "/".join(p for p in parts if p) + "/"


def _listing(store: S3Store, prefix: str) -> dict[str, tuple[int, str]]:
    """{key relative to prefix: (size, ETag)} for every object under prefix."""
    out: dict[str, tuple[int, str]] = {}
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix):]] = (int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
    return out


def _md5_etag(etag: str, s3: S3Settings) -> str | None:
    """The ETag when it is the object's MD5: single-part upload, no SSE-KMS (whose ETags are not MD5s)."""
    return etag.lower() if etag and "-" not in etag and s3.sse != "aws:kms" and len(etag) == 32 else None


def _same(src: tuple[int, str], dst: tuple[int, str] | None, primary: S3Settings, replica: S3Settings) -> bool:
    if dst is None or dst[0] != src[0]:
        return False
    a, b = _md5_etag(src[1], primary), _md5_etag(dst[1], replica)
    return a is None or b is None or a == b


def catch_up_pitr(settings: Settings, log: Log | None = None, cancel: Callable[[], bool] | None = None,
                  workers: int = 4) -> PitrCopyReport | None:
    """Copy the objects under the primary's PITR root (barman-cloud's base backups and WAL) that the
    replica lacks or holds with another size (or another MD5 ETag, where both are MD5s). None when
    no replica or no [pitr] is configured. Raises OpsError when either store cannot be listed."""
    from concurrent.futures import ThreadPoolExecutor

    rep = replica_settings(settings)
    if rep is None or not settings.pitr.enabled or not settings.s3.enabled:
        return None
    log = log or (lambda _line: None)
    primary, store = store_for(settings.s3), store_for(rep)
    src_root, dst_root = pitr_root(settings.s3, settings), pitr_root(rep, settings)
    report = PitrCopyReport(root=f"s3://{store.bucket}/{dst_root}")
    try:
        source, have = _listing(primary, src_root), _listing(store, dst_root)
    except Exception as exc:  # noqa: BLE001
        raise OpsError(f"The PITR objects could not be listed ({s3_error_text(exc)})",
                       "nothing was copied to the replica", "check both buckets' endpoints and credentials") from None
    todo = []
    for rel, src in sorted(source.items()):
        if _same(src, have.get(rel), settings.s3, rep):
            report.present += 1
        else:
            todo.append((rel, src))

    def one(item: tuple[str, tuple[int, str]]) -> tuple[str, int, str | None, bool]:
        rel, src = item
        if cancel and cancel():
            return rel, 0, "cancelled", False
        try:
            return (rel, src[0], *_copy_pitr_object(settings, primary, store, src_root + rel, dst_root + rel, src))
        except Exception as exc:  # noqa: BLE001 - one object's failure is reported, the others go on
            return rel, 0, exc.what if isinstance(exc, OpsError) else s3_error_text(exc), False

    # Many small WAL objects: a few at a time, each bounded in memory by boto3's multipart chunks.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rel, size, problem, md5 in pool.map(one, todo):
            if problem:
                report.failed.append((rel, problem))
                log(f"PITR object not copied to the replica: {rel} ({problem})")
            else:
                report.copied.append(rel)
                report.bytes_copied += size
                report.md5_checked += md5
    if report.copied or report.failed:
        log(report.summary)
    return report


def _copy_pitr_object(settings: Settings, primary: S3Store, store: S3Store, src_key: str, dst_key: str,
                      src: tuple[int, str]) -> tuple[str | None, bool]:
    """Copy one object (server-side on the same account, else streamed) and check it:
    (problem or None, whether the MD5 was compared)."""
    from boto3.s3.transfer import TransferConfig

    rep = store.settings
    cfg = TransferConfig(multipart_threshold=rep.part_size_mb * MiB, multipart_chunksize=rep.part_size_mb * MiB,
                         max_concurrency=2)
    args = {**store.extra_args(), "ContentType": "application/octet-stream"}
    want = _md5_etag(src[1], settings.s3)
    streamed_md5 = None
    if same_account(settings.s3, rep):
        store.client.copy({"Bucket": primary.bucket, "Key": src_key}, store.bucket, dst_key, ExtraArgs=args, Config=cfg)
    else:
        body = primary.client.get_object(Bucket=primary.bucket, Key=src_key)["Body"]
        reader = _Md5Reader(body)
        try:
            store.client.upload_fileobj(reader, store.bucket, dst_key, ExtraArgs=args, Config=cfg)
        finally:
            body.close()
        streamed_md5 = reader.h.hexdigest()
        if reader.size != src[0]:
            return f"{reader.size:,} bytes read, {src[0]:,} listed on the primary", False
    head = store.head(dst_key)
    if head is None or int(head["ContentLength"]) != src[0]:
        got = "missing" if head is None else f"{int(head['ContentLength']):,} bytes"
        return f"the replica copy is {got}, {src[0]:,} bytes on the primary", False
    if want is None:
        return None, False
    # The bytes sent (streamed) or the copy's own ETag (server-side) against the primary's MD5.
    got_md5 = streamed_md5 or _md5_etag(str(head.get("ETag", "")).strip('"'), rep)
    if got_md5 is None:
        return None, False
    if got_md5 != want:
        return f"MD5 {got_md5} copied, {want} on the primary", False
    return None, True


def put_pitr_object(settings: Settings, rel: str, data: bytes, client: Any = None) -> str:
    """Put one PITR object (a WAL segment as barman-cloud archived it) under the replica's PITR root,
    checked by the store against its MD5 (Content-MD5) and by the ETag it answers. Returns its URL;
    raises OpsError. Not locked (lock_days): prune's barman-cloud-backup-delete must remove old WAL.
    `client`: a replica client of the caller's (`S3Store.new_client`), else the store's."""
    rep = replica_settings(settings)
    if rep is None:
        raise OpsError("No replica is configured", "nothing was copied", "add an [s3.replica] table")
    store = store_for(rep)
    key = pitr_root(rep, settings) + rel
    digest = hashlib.md5(data, usedforsecurity=False)
    try:
        resp = (client or store.client).put_object(Bucket=store.bucket, Key=key, Body=data, ContentType="application/octet-stream",
                                       ContentMD5=base64.b64encode(digest.digest()).decode(), **store.extra_args())
    except Exception as exc:  # noqa: BLE001
        raise OpsError(f"Copy of {rel} to the replica failed ({s3_error_text(exc)})",
                       "it is archived on the primary only", "the next base-backup or `opstower replicate` copies it") from None
    etag = _md5_etag(str(resp.get("ETag", "")).strip('"'), rep)
    if etag is not None and etag != digest.hexdigest():
        raise OpsError(f"The replica's copy of {rel} has MD5 {etag}, {digest.hexdigest()} was sent",
                       "it is archived on the primary only", "run `opstower replicate` to copy it again")
    return f"s3://{store.bucket}/{key}"


@dataclass
class PitrLag:
    """How far the replica's PITR objects are behind the primary's (`pitr_replica_lag`)."""

    missing: int = 0  # objects on the primary the replica lacks (or holds with another size)
    missing_bytes: int = 0
    oldest_missing_age: float = 0.0  # seconds since the oldest missing object was written on the primary
    newest_missing: str | None = None  # its key relative to the root

    @property
    def sentence(self) -> str:
        if not self.missing:
            return "the replica holds every base backup and WAL object of the primary"
        return (f"{self.missing} PITR object(s) ({self.missing_bytes:,} bytes) not on the replica, the oldest "
                f"written {self.oldest_missing_age / 60:.0f} min ago (newest: {self.newest_missing}); "
                "run `opstower replicate`")

    def as_dict(self) -> dict[str, Any]:
        return {"missing": self.missing, "missing_bytes": self.missing_bytes,
                "oldest_missing_age_seconds": round(self.oldest_missing_age), "newest_missing": self.newest_missing}


def pitr_replica_lag(settings: Settings, now: float | None = None) -> PitrLag | None:
    """Compare the PITR roots of both stores (one listing each): what a WAL segment whose replica copy
    failed (wal-push never fails for it) leaves until the next base-backup or `replicate`.
    None without a replica or [pitr]. Raises OpsError when either store cannot be listed."""
    rep = replica_settings(settings)
    if rep is None or not settings.pitr.enabled or not settings.s3.enabled:
        return None
    primary, store = store_for(settings.s3), store_for(rep)
    src_root, dst_root = pitr_root(settings.s3, settings), pitr_root(rep, settings)
    try:
        have = _listing(store, dst_root)
        lag = PitrLag()
        now = time.time() if now is None else now
        newest = 0.0
        for page in primary.client.get_paginator("list_objects_v2").paginate(Bucket=primary.bucket, Prefix=src_root):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(src_root):]
                src = (int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
                if _same(src, have.get(rel), settings.s3, rep):
                    continue
                written = obj["LastModified"].timestamp()
                lag.missing += 1
                lag.missing_bytes += src[0]
                lag.oldest_missing_age = max(lag.oldest_missing_age, now - written)
                if written >= newest:
                    newest, lag.newest_missing = written, rel
    except Exception as exc:  # noqa: BLE001
        raise OpsError(f"The PITR objects could not be listed ({s3_error_text(exc)})", "nothing was changed",
                       "check both buckets' endpoints and credentials (opstower doctor)") from None
    return lag


class _Md5Reader(_Hashing):
    """A `_Hashing` stream with MD5: what S3 reports as the ETag of a single-part object."""

    def __init__(self, raw: IO[bytes] | Any) -> None:
        super().__init__(raw)
        self.h = hashlib.md5(usedforsecurity=False)


_RANK = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


def replica_verdict(settings: Settings, name: ArtifactName, meta: dict[str, Any] | None, size: int | None,
                    sha256: str | None) -> tuple[Status, str] | None:
    """Verification check 7's verdict on the replica copy of a backup (None: no replica configured).

    `size` and `sha256` are what the verification found in the artifact (or its metadata records)."""
    if replica_settings(settings) is None:
        return None
    if (meta or {}).get("s3_planned") is False:
        return Status.SKIP, "replica: local-only backup, no copy expected"
    if not name.conventional:
        return Status.SKIP, "replica: the name does not follow the convention, its copy cannot be located"
    store = replica_store(settings)
    key = name.s3_key(store.prefix)
    try:
        head = store.head(key)
        recorded = store.remote_sha256(key, head) if head is not None else None
    except OpsError as exc:
        return Status.WARN, f"replica not reachable, its copy not confirmed ({exc.what})"
    if head is None:
        if (meta or {}).get("tool") != "opstower":
            return Status.SKIP, f"replica: no copy of this legacy artifact (s3://{store.bucket}/{key})"
        return Status.FAIL, f"replica copy missing: s3://{store.bucket}/{key} (run `opstower replicate`)"
    remote = int(head["ContentLength"])
    if size is not None and remote != size:
        return Status.FAIL, f"replica copy size differs: {remote:,} bytes on the replica, {size:,} here"
    if sha256 and recorded and recorded != sha256:
        return Status.FAIL, f"replica copy sha256 differs ({recorded[:12]}… on the replica, {sha256[:12]}… here)"
    if not recorded:
        return Status.WARN, f"replica copy present ({remote:,} bytes) but no sha256 recorded with it"
    return Status.PASS, f"replica copy matches (s3://{store.bucket}/{key}, size and sha256)"


def every_copy(settings: Settings, name: ArtifactName, meta: dict[str, Any] | None, size: int | None,
               sha256: str | None, status: Status, detail: str) -> tuple[Status, str]:
    """The primary's check 7 verdict joined with the replica's: the worse status, both sentences."""
    verdict = replica_verdict(settings, name, meta, size, sha256)
    if verdict is None:
        return status, detail
    rstatus, rdetail = verdict
    return max(status, rstatus, key=_RANK.__getitem__), f"{detail}; {rdetail}"


def doctor_replica(settings: Settings) -> tuple[Status, str, str]:
    """(status, what was found, fix) for `opstower doctor`: the replica reachable, a write/read/delete
    round trip under its prefix, and, when lock_days is set, whether its bucket supports Object Lock."""
    rep = replica_settings(settings)
    if rep is None:
        return Status.SKIP, "No replica configured ([s3.replica]): one off-site copy", ""
    store = store_for(rep)
    try:
        store.check_reachable()
        probe = f"{store.prefix}opstower-doctor-{int(time.time())}.probe"
        store.put_bytes(probe, b"opstower doctor probe\n", content_type="text/plain")
        ok = store.get_bytes(probe) == b"opstower doctor probe\n"
        store.delete(probe)
    except OpsError as exc:
        return Status.FAIL, exc.what, exc.next or "check the [s3.replica] endpoint, credentials and bucket"
    except Exception as exc:  # noqa: BLE001
        return (Status.FAIL, f"Replica round trip failed ({s3_error_text(exc)})",
                "grant s3:PutObject, GetObject, DeleteObject and ListBucket on the replica bucket")
    if not ok:
        return Status.FAIL, "Replica read back other bytes than were written", "check the replica store"
    where = f"s3://{store.bucket}/{store.prefix}"
    how = "server-side copies" if same_account(settings.s3, rep) else "streamed copies"
    supported, sentence = lock_support(store)
    if rep.lock_days:
        if supported:
            return Status.PASS, f"Replica {where} reachable ({how}); {sentence}: copies locked {rep.lock_days} days", ""
        return (Status.WARN, f"Replica {where} reachable ({how}); lock_days = {rep.lock_days} but {sentence}: "
                "copies are written without a lock",
                "use a bucket created with Object Lock enabled, or remove lock_days")
    note = "Object Lock available (set lock_days to use it)" if supported else sentence
    return Status.PASS, f"Replica {where} reachable ({how}); {note}", ""


def is_reachable(settings: Settings) -> tuple[bool, str]:
    """(reachable, sentence) for the replica bucket."""
    try:
        replica_store(settings).check_reachable()
    except OpsError as exc:
        return False, exc.what
    return True, f"replica bucket {settings.s3.replica.bucket} reachable"  # type: ignore[union-attr]


__all__ = ["CatchUpReport", "PitrCopyReport", "PitrLag", "ReplicaCopy", "ReplicaFeed", "as_primary", "catch_up", "catch_up_pitr", "check_copy", "copy_backup", "is_reachable",
           "doctor_replica", "every_copy", "lock_support", "pitr_replica_lag", "put_pitr_object", "replica_settings", "replica_store", "replica_verdict", "same_account", "settings_for_copy"]

