"""An S3 listing in a child process, page by page.

botocore parses every ListObjectsV2 page in Python (its timestamp parser is most of it: 2-2.5
CPU-s per 10,000 objects here), holding the interpreter lock the whole time. In the console
that lock is the UI thread's too, so a key pressed while 10,000 backups page in waited for it
(issue 16). A child process has its own interpreter lock: the parent only reads one JSON line
per page. The child gets the store's settings on stdin (they hold no secret: credentials come
from the inherited environment or profile, as for any other command) and writes one line per
page, `{"objects": [[key, size, mtime, storage class], ...]}`, or `{"error": "..."}` once.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator

from opstower_core.config import S3Settings
from opstower_core.errors import OpsError
from opstower_core.storage.s3 import S3Object


def pages_in_child(settings: S3Settings, prefix: str | None = None) -> Iterator[list[S3Object]]:
    """The objects under `prefix` (default: the store's backups) a page at a time, listed by a child
    process; OpsError when the listing fails. Closing the iterator stops the child."""
    doc = {"settings": dataclasses.asdict(dataclasses.replace(settings, replica=None)), "prefix": prefix}
    proc = subprocess.Popen([sys.executable, "-m", "opstower_core.storage.listing"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(doc).encode())
        proc.stdin.close()
        for line in proc.stdout:
            page = json.loads(line)
            if "error" in page:
                raise OpsError(page["error"], "", "")
            yield [S3Object(k, size, mtime, cls) for k, size, mtime, cls in page["objects"]]
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.wait() != 0:
            raise OpsError(f"S3 listing failed ({(err.splitlines() or ['the lister stopped'])[-1]})", "", "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _child() -> int:
    from opstower_core.storage.s3 import s3_error_text, store_for

    doc = json.loads(sys.stdin.read())
    settings = S3Settings(**doc["settings"])
    store = store_for(settings)
    out = sys.stdout
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
