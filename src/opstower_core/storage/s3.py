"""S3 (or any S3-compatible store) through boto3.

Layout as in the reference: `<prefix>database/YYYYMMDD/<artifact>` with its `.meta.json`
beside it. Uploads stream as multipart while the dump is still running, so local + S3
takes little longer than local alone; the object only appears when the upload is
completed, after the local artifact was read back and found good.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opstower_core.advice import say
from opstower_core.config import S3Settings
from opstower_core.errors import OpsError

MiB = 1024 * 1024
# Stores kept by store_for(); a console session sees a handful of settings, tests a few hundred.
_CACHE_SIZE = 32
_stores: dict[tuple[Any, ...], S3Store] = {}
_stores_lock = threading.Lock()


def store_for(settings: S3Settings) -> S3Store:
    """The one S3Store (and boto3 client) for these settings: every step of a run shares it.

    A boto3 client is thread-safe, costs tens of milliseconds to build and holds the
    connection pool, so building one per step only re-paid the set-up and the TLS
    handshakes. The AWS_* environment is part of the key: the credential chain is read
    when the client is built. Raises OpsError when S3 is not configured.
    """
    named = tuple(os.environ.get(n or "") for n in (settings.access_key_id_env, settings.secret_access_key_env))
    key = (settings, named, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = S3Store(settings)
            if len(_stores) >= _CACHE_SIZE:
                _stores.pop(next(iter(_stores)))  # oldest first: dicts keep insertion order
            _stores[key] = store
        return store


def s3_error_text(exc: BaseException) -> str:
    """A short reason from a boto3/botocore exception, without credentials or URLs with tokens."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    if code:
        msg = exc.response.get("Error", {}).get("Message") or ""  # type: ignore[attr-defined]
        return f"{code}{': ' + msg if msg else ''}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    last_modified: float
    storage_class: str


class S3Store:
    def __init__(self, settings: S3Settings) -> None:
        if not settings.enabled:
            raise OpsError("S3 is not configured", "", "set S3_BUCKET or [s3] bucket in the config file")
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.new_client()
            return self._client

    def new_client(self, **overrides: Any) -> Any:
        """A boto3 client of its own for this store, with these botocore Config settings changed
        (wal-push's replica copy: one attempt, short timeouts, so a replica down costs little)."""
        from botocore.config import Config

        # "when_required": S3-compatible stores reject the checksums boto3 ≥ 1.36 adds.
        cfg = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5, read_timeout=60,
            max_pool_connections=max(10, self.settings.multipart_concurrency + 2),
        )
        if self.settings.role == "replica":
            # The AWS_ENDPOINT_URL of the environment points at the primary, not here.
            cfg = cfg.merge(Config(ignore_configured_endpoint_urls=True))
        if overrides:
            cfg = cfg.merge(Config(**overrides))
        return self._session().client("s3", endpoint_url=self.settings.endpoint_url, region_name=self.settings.region,
                                      config=cfg)

    def _session(self) -> Any:
        """A boto3 session with this store's credentials: a profile, the named environment
        variables (read now, never stored in the config), or the default chain."""
        import boto3

        s = self.settings
        if s.profile:
            try:
                return boto3.session.Session(profile_name=s.profile)
            except Exception as exc:  # noqa: BLE001 - ProfileNotFound and friends
                raise OpsError(f"AWS profile {s.profile!r} for the {s.label} cannot be used ({exc})",
                               "nothing was changed", "check ~/.aws/config or the profile in the config file") from None
        if s.access_key_id_env and s.secret_access_key_env:
            key_id, secret = os.environ.get(s.access_key_id_env), os.environ.get(s.secret_access_key_env)
            missing = [n for n, v in ((s.access_key_id_env, key_id), (s.secret_access_key_env, secret)) if not v]
            if missing:
                raise OpsError(f"The {s.label} credentials are not set: {', '.join(missing)} empty or missing",
                               "nothing was changed", "export them in the environment that runs opstower")
            return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
        return boto3.session.Session()

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _fail(self, what: str, exc: BaseException, state: str, next_step: str) -> OpsError:
        return OpsError(f"{what} ({s3_error_text(exc)})", state, next_step)

    def check_reachable(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            if self.settings.role == "replica":
                raise self._fail(f"Replica bucket {self.bucket} is not reachable", exc, "nothing was changed",
                                 f"check the [s3.replica] endpoint, credentials and bucket ({say('doctor_aside')})") from None
            raise self._fail(f"S3 bucket {self.bucket} is not reachable", exc, "nothing was changed",
                             f"check AWS credentials, AWS_ENDPOINT_URL and the bucket ({say('doctor_aside')})") from None

    def extra_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"StorageClass": self.settings.storage_class}
        if self.settings.sse:
            args["ServerSideEncryption"] = self.settings.sse
            if self.settings.sse == "aws:kms" and self.settings.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        return args

    # -- listing -----------------------------------------------------------------------
    def iter_objects(self, prefix: str | None = None) -> Iterator[S3Object]:
        """Every object under our prefix, paginated (thousands of objects)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "database/" if prefix is None else prefix):
            for obj in page.get("Contents", []):
                yield S3Object(obj["Key"], int(obj["Size"]), obj["LastModified"].timestamp(),
                               obj.get("StorageClass", "STANDARD"))

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"Cannot read s3://{self.bucket}/{key}", exc, "nothing was changed",
                             "check S3 credentials and endpoint") from None

    def remote_sha256(self, key: str, head: dict[str, Any] | None = None) -> str | None:
        """sha256 recorded for an object: in its metadata, else in its tags."""
        head = head if head is not None else self.head(key)
        if head and head.get("Metadata", {}).get("sha256"):
            return head["Metadata"]["sha256"]
        try:
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=key).get("TagSet", [])
        except Exception:  # noqa: BLE001 - tags are optional
            return None
        return next((t["Value"] for t in tags if t["Key"] == "sha256"), None)

    # -- writing -----------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                   **self.extra_args())
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"Upload of s3://{self.bucket}/{key} failed", exc, "", "") from None

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def upload_file(self, path: Path, key: str, metadata: dict[str, str] | None = None,
                    progress: Callable[[int], None] | None = None) -> None:
        """Upload an existing file (multipart above the part size), with sha256 in metadata."""
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=self.settings.part_size_mb * MiB,
                             multipart_chunksize=self.settings.part_size_mb * MiB,
                             max_concurrency=self.settings.multipart_concurrency)
        extra = self.extra_args()
        if metadata:
            extra["Metadata"] = metadata
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=cfg,
                                    Callback=progress)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"Upload of {path.name} to s3://{self.bucket}/{key} failed", exc, "", "") from None

    def start_stream(self, key: str, metadata: dict[str, str]) -> StreamingUpload:
        return StreamingUpload(self, key, metadata)

    def abort_upload(self, key: str, upload_id: str) -> bool:
        """Abort one multipart upload; True when it was open (and is now gone)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("NoSuchUpload", "404"):
                return False
            raise self._fail(f"Cannot abort the upload of s3://{self.bucket}/{key}", exc, "", "") from None
        return True

    def set_tags(self, key: str, tags: dict[str, str]) -> None:
        self.client.put_object_tagging(
            Bucket=self.bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def download(self, key: str, dest: Path, progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        """Download to a temp name beside `dest`, then rename: no half file under the real name."""
        head = self.head(key)
        if head is None:
            raise OpsError(f"s3://{self.bucket}/{key} does not exist", "nothing was downloaded",
                           say("check_key"))
        total = int(head["ContentLength"])
        tmp = dest.with_name(f".{dest.name}.part")
        done = 0
        h = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                for chunk in body.iter_chunks(chunk_size=MiB):
                    if cancel and cancel():
                        raise OpsError("Download cancelled", "the partial file was removed", "")
                    fh.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                fh.flush()
                os.fsync(fh.fileno())
            if done != total:
                raise OpsError(f"Download of {key} stopped at {done} of {total} bytes",
                               "the partial file was removed", "retry the download")
            expected = self.remote_sha256(key, head)
            if expected and expected != h.hexdigest():
                raise OpsError(f"Downloaded {key} does not match its recorded sha256",
                               "the file was removed", "the S3 copy may be damaged; try another backup")
            os.replace(tmp, dest)
        except OpsError:
            tmp.unlink(missing_ok=True)
            raise
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise self._fail(f"Download of s3://{self.bucket}/{key} failed", exc, "the partial file was removed",
                             "check S3 connectivity and retry") from None


class StreamingUpload:
    """Multipart upload fed while the artifact is being written.

    Parts go out on a small thread pool; at most `concurrency + 1` parts are held in memory,
    so memory stays flat whatever the database size.
    """

    def __init__(self, store: S3Store, key: str, metadata: dict[str, str]) -> None:
        self.store = store
        self.key = key
        self.part_size = store.settings.part_size_mb * MiB
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._parts: list[Future[dict[str, Any]]] = []
        # At most `concurrency` parts exist at once (queued or sending): flat memory.
        self._slots = threading.BoundedSemaphore(store.settings.multipart_concurrency)
        self._pool = ThreadPoolExecutor(max_workers=store.settings.multipart_concurrency,
                                        thread_name_prefix="s3-part")
        self.error: BaseException | None = None
        self.bytes_sent = 0
        try:
            resp = store.client.create_multipart_upload(
                Bucket=store.bucket, Key=key, Metadata=metadata, ContentType="application/octet-stream",
                **store.extra_args(),
            )
        except Exception as exc:  # noqa: BLE001
            self._pool.shutdown(wait=False)
            raise store._fail(f"Cannot start the S3 upload to s3://{store.bucket}/{key}", exc, "", "") from None
        self.upload_id = resp["UploadId"]

    def write(self, data: bytes) -> None:
        if self.error is not None or not data:
            return  # a failure is reported at complete(); the local backup carries on
        self._chunks.append(bytes(data))
        self._buffered += len(data)
        while self._buffered >= self.part_size:
            # Cut parts of exactly part_size: multi-threaded zstd emits whole jobs (8 MiB and more,
            # or everything at the final flush), which must not become one oversized part.
            buf = b"".join(self._chunks)
            self._submit(buf[: self.part_size])
            rest = buf[self.part_size:]
            self._chunks = [rest] if rest else []
            self._buffered = len(rest)

    def _submit(self, chunk: bytes) -> None:
        number = len(self._parts) + 1
        self._slots.acquire()
        self._parts.append(self._pool.submit(self._upload_part, number, chunk))

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        try:
            resp = self.store.client.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                                 PartNumber=number, Body=chunk)
            self.bytes_sent += len(chunk)
            return {"PartNumber": number, "ETag": resp["ETag"]}
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._slots.release()

    def complete(self) -> None:
        """Send the last part and complete; raise OpsError (and abort) on any failure."""
        try:
            if self.error is None and (self._chunks or not self._parts):
                self._submit(b"".join(self._chunks))
                self._chunks.clear()
            parts = [f.result() for f in self._parts]
            self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception as exc:  # noqa: BLE001
            self.abort()
            raise self.store._fail(f"Upload to s3://{self.store.bucket}/{self.key} failed", exc, "", "") from None
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # noqa: BLE001 - best effort; lifecycle rules clean up stray uploads
            pass
