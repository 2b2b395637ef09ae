"""The S3 checks of `opstower doctor`: a real round trip under the configured prefix (put a
small object and a two-part multipart upload, read the small one back, list both, delete them
again), so a missing permission shows up here rather than in the night's backup or in a
restore; then what the store applied to the test object (storage class, server-side encryption).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from opstower_core.advice import say
from opstower_core.config import S3Settings
from opstower_core.doctor.finding import Finding
from opstower_core.errors import OpsError
from opstower_core.events import Status

MiB = 1024 * 1024
# Archive classes need a retrieval (minutes to 48 h) before a download can start.
ARCHIVE_CLASSES = {"GLACIER", "DEEP_ARCHIVE"}


class S3Checks:
    """The three S3 checks; run `roundtrip` first, the other two read the HEAD of its test object."""

    def __init__(self, s3: S3Settings) -> None:
        self.s3 = s3
        self.head: dict[str, Any] | None = None  # HEAD of the round trip's small object, once it was put

    def roundtrip(self) -> Finding:
        """Put, multipart upload, get, list and delete under the prefix; FAIL names the step that failed."""
        s3 = self.s3
        if not s3.enabled:
            return Finding(Status.WARN, "S3 not configured: backups stay on this host only (no offsite copy)",
                           "set S3_BUCKET (and AWS_ENDPOINT_URL for an S3-compatible store)")
        from opstower_core.storage.s3 import s3_error_text, store_for

        store = store_for(s3)
        client, bucket = store.client, store.bucket
        base = f"{s3.prefix}opstower-doctor/{uuid.uuid4().hex[:12]}"
        small, big = f"{base}/put.bin", f"{base}/multipart.bin"
        payload = os.urandom(1024)
        done: list[str] = []
        fixes = {
            "bucket check": "check that the store is up, AWS_ENDPOINT_URL, the credentials and the bucket name",
            "put": "allow s3:PutObject on the prefix",
            "multipart upload": "allow s3:PutObject and s3:AbortMultipartUpload on the prefix",
            "get": "allow s3:GetObject on the prefix", "list": "allow s3:ListBucket on the bucket",
        }
        op, upload_id = "bucket check", None
        t0 = time.monotonic()
        try:
            client.head_bucket(Bucket=bucket)
            op = "put"
            client.put_object(Bucket=bucket, Key=small, Body=payload, **store.extra_args())
            self.head = client.head_object(Bucket=bucket, Key=small)
            done.append("put")
            op = "multipart upload"
            upload_id = client.create_multipart_upload(Bucket=bucket, Key=big, **store.extra_args())["UploadId"]
            part = os.urandom(5 * MiB)  # 5 MiB: the smallest part S3 accepts before the last one
            parts = [{"PartNumber": n, "ETag": client.upload_part(Bucket=bucket, Key=big, UploadId=upload_id,
                                                                  PartNumber=n, Body=part)["ETag"]} for n in (1, 2)]
            client.complete_multipart_upload(Bucket=bucket, Key=big, UploadId=upload_id, MultipartUpload={"Parts": parts})
            upload_id = None
            if int(client.head_object(Bucket=bucket, Key=big)["ContentLength"]) != 10 * MiB:
                raise OpsError("the completed multipart object is not 10 MiB")
            done.append("multipart 2x5 MiB")
            op = "get"
            if client.get_object(Bucket=bucket, Key=small)["Body"].read() != payload:
                raise OpsError("the object read back differs from what was written")
            done.append("get")
            op = "list"
            listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=base + "/").get("Contents", [])}
            if listed != {small, big}:
                raise OpsError(f"listing shows {len(listed)} of the 2 scratch objects")
            done.append("list")
        except Exception as exc:  # noqa: BLE001 - any S3 failure is the finding
            reason = exc.what if isinstance(exc, OpsError) else s3_error_text(exc)
            self._cleanup(client, bucket, [small, big], big, upload_id)
            return Finding(Status.FAIL, f"S3 {op} failed on s3://{bucket}/{base}/ ({reason})"
                           + (f" after {', '.join(done)} worked" if done else "")
                           + f": backups are local only and {say('from_s3_restores')} fail", fixes[op])
        left = self._cleanup(client, bucket, [small, big], big, None)
        seconds = time.monotonic() - t0
        if left:
            return Finding(Status.WARN, f"{', '.join(done)} worked, but delete failed ({left}): retention cannot remove "
                           f"old S3 copies (fine with Object Lock or a lifecycle rule); scratch objects left under "
                           f"s3://{bucket}/{base}/", "allow s3:DeleteObject, or expire old backups with a lifecycle rule")
        return Finding(Status.PASS, f"{', '.join(done)}, delete all worked on s3://{bucket}/{s3.prefix} "
                       f"({seconds:.1f} s)", data={"seconds": round(seconds, 2)})

    @staticmethod
    def _cleanup(client: Any, bucket: str, keys: list[str], big: str, upload_id: str | None) -> str:
        """Delete the scratch objects and check they are gone; '' or why not."""
        if upload_id:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=big, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; the store is failing already
                pass
        from opstower_core.storage.s3 import s3_error_text

        problems = []
        for key in keys:
            try:
                client.delete_object(Bucket=bucket, Key=key)
            except Exception as exc:  # noqa: BLE001
                problems.append(s3_error_text(exc))
        return "; ".join(dict.fromkeys(problems))

    def storage_class(self) -> Finding:
        """WARN for a class that delays a restore (archive) or keeps fewer copies."""
        s3 = self.s3
        if not s3.enabled:
            return Finding(Status.SKIP, "S3 not configured")
        applied = (self.head or {}).get("StorageClass") or ("STANDARD" if self.head else None)
        shown = f"{s3.storage_class} (the store reports {applied})" if applied else s3.storage_class
        if s3.storage_class in ARCHIVE_CLASSES:
            return Finding(Status.WARN, f"{shown} is an archive class: a restore from S3 waits for a retrieval "
                           "(minutes to 48 h) before the download can start, far beyond a 4 h RTO",
                           'set [s3] storage_class = "STANDARD_IA" (or GLACIER_IR for instant retrieval)')
        if s3.storage_class in ("ONEZONE_IA", "REDUCED_REDUNDANCY"):
            return Finding(Status.WARN, f"{shown} keeps fewer copies: an availability-zone loss can lose the backup",
                           'set [s3] storage_class = "STANDARD_IA"')
        return Finding(Status.PASS, f"{shown}: retrievable immediately")

    def encryption(self) -> Finding:
        """The requested SSE against what the store reported for the test object."""
        s3 = self.s3
        if not s3.enabled:
            return Finding(Status.SKIP, "S3 not configured")
        applied = (self.head or {}).get("ServerSideEncryption")
        if self.head is None:
            shown = f"s3.sse = {s3.sse}" if s3.sse else "s3.sse not set"
            return Finding(Status.WARN, f"{shown}; not confirmed with the store (the S3 round trip failed)",
                           "fix the S3 round trip first")
        if s3.sse:
            key = f" with key {s3.sse_kms_key_id}" if s3.sse_kms_key_id else ""
            if not applied:
                return Finding(Status.WARN, f"s3.sse = {s3.sse}{key} requested but the store did not confirm "
                               "encryption on the test object", "check the store supports SSE, or encrypt the "
                               "artifacts themselves (age)")
            return Finding(Status.PASS, f"s3.sse = {s3.sse}{key}" + (f"; the store reports {applied}" if applied else ""))
        if applied:
            return Finding(Status.PASS, f"s3.sse not set; the bucket's default encryption applies ({applied})")
        return Finding(Status.WARN, "s3.sse not set and the store reports no encryption on the test object: "
                       "backups of the whole database may sit unencrypted at rest",
                       'set [s3] sse = "AES256" (or "aws:kms" with sse_kms_key_id), or a bucket default encryption')
