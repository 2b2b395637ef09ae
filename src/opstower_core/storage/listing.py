"""S3 reads in a child process: a listing page by page, and one object's HEAD.

botocore parses every ListObjectsV2 page in Python (its timestamp parser is most of it: 2-2.5
CPU-s per 10,000 objects here), holding the interpreter lock the whole time. In the console
that lock is the UI thread's too, so a key pressed while 10,000 backups page in waited for it
(issue 16). A child process has its own interpreter lock: the parent only reads one JSON line
per page. The child gets the store's settings on stdin (they hold no secret: credentials come
from the inherited environment or profile, as for any other command) and writes one line per
page, `{"objects": [[key, size, mtime, storage class], ...]}`, or `{"error": "..."}` once.

Verification's check 7 (one HEAD, and the object's tags where its metadata has no sha256) uses
the same child for another reason: importing boto3 and setting up a client is ~0.5 CPU-s of
Python holding the interpreter lock, which in a thread competed with the read of checks 4-6;
a child does it on the other core (issue 18: verify within 1.5x of `zstd -dc`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from opstower_core.config import S3Settings
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken
from opstower_core.storage.s3 import S3Object


def _start(doc: dict[str, Any]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "opstower_core.storage.listing"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(doc).encode())
    proc.stdin.close()
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def _settings_doc(settings: S3Settings) -> dict[str, Any]:
    return dataclasses.asdict(dataclasses.replace(settings, replica=None))


def pages_in_child(settings: S3Settings, prefix: str | None = None) -> Iterator[list[S3Object]]:
    """The objects under `prefix` (default: the store's backups) a page at a time, listed by a child
    process; OpsError when the listing fails. Closing the iterator stops the child."""
    proc = _start({"settings": _settings_doc(settings), "prefix": prefix})
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            page = json.loads(line)
            if "error" in page:
                raise OpsError(page["error"], "", "")
            yield [S3Object(k, size, mtime, cls) for k, size, mtime, cls in page["objects"]]
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.wait() != 0:
            raise OpsError(f"S3 listing failed ({(err.splitlines() or ['the lister stopped'])[-1]})", "", "")
    finally:
        _stop(proc)


class HeadInChild:
    """`key`'s HEAD (size, storage class, metadata) and its recorded sha256, looked up by a child
    process started at construction; `result()` waits for it, `close()` stops it."""

    def __init__(self, settings: S3Settings, key: str) -> None:
        self.proc = _start({"settings": _settings_doc(settings), "head": key})

    def result(self, cancel: CancelToken | None = None, timeout: float = 300.0) -> tuple[dict[str, Any] | None,
                                                                                       str | None]:
        """(head, recorded sha256): head None when the object does not exist. OpsError when the store
        could not be read, or gave no answer within `timeout` seconds (botocore retries inside that)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    self.proc.wait(timeout=0.05)
                    break
                except subprocess.TimeoutExpired:
                    if cancel is not None:
                        cancel.check()
                    if time.monotonic() > deadline:
                        raise OpsError(f"no answer from S3 in {timeout:.0f} s", "", "") from None
            assert self.proc.stdout is not None and self.proc.stderr is not None
            out, err = self.proc.stdout.read(), self.proc.stderr.read().decode(errors="replace").strip()
        finally:
            _stop(self.proc)
        if self.proc.returncode != 0 or not out:
            raise OpsError(f"S3 look-up failed ({(err.splitlines() or ['the child stopped'])[-1]})", "", "")
        doc = json.loads(out)
        if "error" in doc:
            raise OpsError(doc["error"], "", "")
        return doc["head"], doc["sha256"]

    def close(self) -> None:
        _stop(self.proc)


def _child() -> int:
    from opstower_core.storage.s3 import s3_error_text, store_for

    doc = json.loads(sys.stdin.read())
    settings = S3Settings(**doc["settings"])
    store = store_for(settings)
    out = sys.stdout
    if "head" in doc:
        try:
            head = store.head(doc["head"])
            sha = store.remote_sha256(doc["head"], head) if head is not None else None
        except OpsError as exc:
            out.write(json.dumps({"error": exc.what}))
            return 0
        kept = None if head is None else {"ContentLength": int(head["ContentLength"]),
                                          "StorageClass": head.get("StorageClass", "STANDARD"),
                                          "Metadata": head.get("Metadata", {})}
        out.write(json.dumps({"head": kept, "sha256": sha}))
        return 0
    try:
        paginator = store.client.get_paginator("list_objects_v2")
        prefix = doc["prefix"] if doc["prefix"] is not None else settings.prefix + "database/"
        for page in paginator.paginate(Bucket=settings.bucket, Prefix=prefix):
            objects = [[o["Key"], int(o["Size"]), o["LastModified"].timestamp(), o.get("StorageClass", "STANDARD")]
                       for o in page.get("Contents", [])]
            out.write(json.dumps({"objects": objects}) + "\n")
            out.flush()
    except OpsError as exc:
        out.write(json.dumps({"error": exc.what}) + "\n")
    except Exception as exc:  # noqa: BLE001 - reported to the parent in one line
        out.write(json.dumps({"error": f"S3 listing failed ({s3_error_text(exc)})"}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child())
