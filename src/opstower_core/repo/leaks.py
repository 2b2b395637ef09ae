"""Leftovers of killed runs on the repository side: temp files and open multipart uploads.

A run that ends normally removes its own temp file and aborts its own upload; a run killed
by SIGKILL, a power cut or a dropped session cannot. What it leaves is never listed as a
backup, but fills the disk (and the bucket's bill) one killed run at a time. Only what
can be proven abandoned is removed:

| leftover                                  | made by               | abandoned when                          |
|-------------------------------------------|-----------------------|-----------------------------------------|
| `.<artifact>.tmp`, `.<sidecar>.tmp`       | backup, metadata write | untouched for N minutes, open by no one |
| `.<artifact>.part`                        | S3 download           | untouched for N minutes, open by no one |
| `.restore_<stem>_<pid>.dump`              | restore (via a file)  | its pid is gone and open by no one      |
| multipart upload under `<prefix>database/`| backup's S3 stream    | started more than 24 h ago              |

"Open by no one" is read from /proc (every process's open files this user may see); where
that cannot be read, the file is kept: when unsure, keep.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opstower_core import fmt
from opstower_core.artifacts.names import parse_name
from opstower_core.repo.holds import process_alive

TEMP_MIN_AGE = timedelta(minutes=60)
UPLOAD_MIN_AGE = timedelta(hours=24)

_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.(?P<kind>tmp|part)$")
_RESTORE_RE = re.compile(r"^\.restore_(?P<stem>.+)_(?P<pid>\d+)\.dump$")


@dataclass
class Leftover:
    where: str  # "local" or "s3"
    what: str  # path, or S3 key
    age_seconds: float
    remove: bool
    reason: str
    upload_id: str | None = None
    size: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "what": self.what, "action": "remove" if self.remove else "keep",
                "reason": self.reason, "age_seconds": round(self.age_seconds), "size_bytes": self.size,
                "upload_id": self.upload_id}


def _ours(base: str) -> bool:
    """A temp name of something this tool writes in the backup directory."""
    if parse_name(base) is not None:
        return True
    return base.endswith((".meta.json", ".globals.sql")) or "_latest." in base


def open_files() -> dict[tuple[int, int], int] | None:
    """(device, inode) -> pid of every file open by a process we can see; None if /proc is not there."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    out: dict[tuple[int, int], int] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue  # another user's process, or gone
        with fds:
            for fd in fds:
                try:
                    st = os.stat(fd.path)
                except OSError:
                    continue
                out[(st.st_dev, st.st_ino)] = int(entry.name)
    return out


def local_leftovers(directory: Path, now: float | None = None, min_age: timedelta = TEMP_MIN_AGE) -> list[Leftover]:
    """Temp files of killed runs in the backup directory, each with a remove/keep verdict."""
    now = time.time() if now is None else now
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    found: list[tuple[os.DirEntry[str], re.Match[str]]] = []
    for e in entries:
        m = _RESTORE_RE.match(e.name) or _TEMP_RE.match(e.name)
        if m and ("pid" in m.groupdict() or _ours(m["base"])):
            found.append((e, m))
    if not found:
        return []
    opened = open_files()
    out = []
    for e, m in found:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile by its own run
        age = now - st.st_mtime
        holder = opened.get((st.st_dev, st.st_ino)) if opened is not None else None
        pid = int(m["pid"]) if "pid" in m.groupdict() else None
        if opened is None:
            remove, why = False, "cannot see which processes have it open (no /proc): kept"
        elif holder is not None:
            remove, why = False, f"open by running pid {holder}"
        elif pid is not None and process_alive(pid):
            remove, why = False, f"its restore (pid {pid}) is still running"
        elif pid is None and age < min_age.total_seconds():
            remove, why = False, (f"written {fmt.duration(age)} ago (under {fmt.duration(min_age.total_seconds())}): "
                                  "may belong to a run that is still starting")
        else:
            who = f"its restore (pid {pid}) is gone" if pid is not None else f"untouched for {fmt.duration(age)}"
            remove, why = True, f"left by a killed run: {who} and no process has it open"
        out.append(Leftover("local", str(Path(e.path)), age, remove, why, size=st.st_size))
    return out


def s3_leftovers(store: Any, now: datetime, min_age: timedelta = UPLOAD_MIN_AGE) -> list[Leftover]:
    """Open multipart uploads of artifacts under the prefix; those older than `min_age` are abandoned.

    A backup streams its upload while pg_dump runs: a young upload may be a backup in
    progress, so only one older than any backup could take is aborted.
    """
    out = []
    paginator = store.client.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=store.bucket, Prefix=store.prefix + "database/"):
        for up in page.get("Uploads", []) or []:
            key = up["Key"]
            if parse_name(key.rsplit("/", 1)[-1]) is None:
                continue  # not an artifact of ours: someone else's upload, left alone
            age = max((now - up["Initiated"]).total_seconds(), 0.0)  # the store's clock may be a little ahead
            if age >= min_age.total_seconds():
                out.append(Leftover("s3", key, age, True,
                                    f"multipart upload started {fmt.duration(age)} ago and never completed: a killed backup's",
                                    upload_id=up["UploadId"]))
            else:
                out.append(Leftover("s3", key, age, False,
                                    f"multipart upload started {fmt.duration(age)} ago (under {fmt.duration(min_age.total_seconds())}):"
                                    " may be a backup in progress", upload_id=up["UploadId"]))
    return out


def remove_leftover(item: Leftover, store: Any = None) -> None:
    """Remove one leftover found above (a local file, or abort an upload)."""
    if item.where == "local":
        Path(item.what).unlink(missing_ok=True)
    else:
        store.client.abort_multipart_upload(Bucket=store.bucket, Key=item.what, UploadId=item.upload_id)

