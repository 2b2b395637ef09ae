"""What killed backups leave behind, found and removed by the next backup of the same database.

A backup that ends in any other way removes its temp file and aborts its multipart upload
itself. SIGKILL, a power cut or an OOM kill leave both. The next backup of the database
holds the database's run lock, so no live backup of it (on this host) can own them:

- `.<artifact>.tmp` files of the database are removed;
- multipart uploads this host started for the database are recorded in the state
  directory while open (`uploads/<db>.json`) and aborted from that record, at once
  (repo.leaks, run by retention, catches the rest: uploads open for more than a day).

Also here, once per run: a config file holding secrets and readable by others is named.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

from opstower_core.artifacts.names import parse_name
from opstower_core.config import Settings, secret_keys
from opstower_core.errors import OpsError
from opstower_core.events import Reporter
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import S3Store


def remove_stale_temp(local: LocalStore, database: str, r: Reporter) -> None:
    """Delete temp artifacts of `database` left by a killed run (SIGKILL, power loss).

    We hold the database's lock, so no live run is writing them; they are never listed,
    but would otherwise fill the disk one failed run at a time.
    """
    for path in local.directory.glob(".*.tmp"):
        name = parse_name(path.name[1:-len(".tmp")])
        if name is not None and name.database == database:
            path.unlink(missing_ok=True)
            r.log("prerequisites", f"Removed {path.name}, left by an interrupted run", "WARN")


class UploadLedger:
    """The multipart uploads of one database this host has open: `<state>/uploads/<db>.json`.

    Written when an upload starts, cleared when it completes or is aborted: what is still
    in it when the next backup (holding the lock) starts belongs to a killed run.
    """

    def __init__(self, state_dir: Path, database: str, copy: str = "primary") -> None:
        # The replica's uploads ([s3.replica]) have a ledger of their own: they live in another store.
        self.path = Path(state_dir) / "uploads" / (f"{database}.json" if copy == "primary" else f"{database}@{copy}.json")
        self._lock = threading.Lock()

    def entries(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict[str, dict]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def opened(self, upload_id: str, key: str) -> None:
        with self._lock:
            entries = self.entries()
            entries[upload_id] = {"key": key, "pid": os.getpid(), "since": time.time()}
            self._write(entries)

    def closed(self, upload_id: str) -> None:
        with self._lock:
            entries = self.entries()
            if entries.pop(upload_id, None) is not None:
                self._write(entries)


def abort_stale_uploads(s3: S3Store, ledger: UploadLedger, r: Reporter, step: str = "prerequisites") -> None:
    """Abort the uploads killed backups of the ledger's database left open (call holding the run lock)."""
    for upload_id, entry in ledger.entries().items():
        try:
            was_open = s3.abort_upload(entry.get("key", ""), upload_id)
        except OpsError as exc:
            r.log(step, f"{exc.what}; it stays recorded for the next run", "WARN")
            continue
        ledger.closed(upload_id)
        if was_open:
            r.log(step, f"Aborted the {s3.settings.label} upload of {entry.get('key')} left open by an interrupted "
                  f"run (pid {entry.get('pid', '?')})", "WARN")


def warn_readable_config(settings: Settings, r: Reporter) -> None:
    """Once per run: the config file holds literal secrets and others (or its group) may read it."""
    path = settings.config_path
    if path is None:
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    secrets = secret_keys(settings.raw)
    if mode & 0o044 and secrets:
        who = "others" if mode & 0o004 else "its group"
        r.log("prerequisites", f"{path} (mode {mode:04o}) is readable by {who} and holds secrets "
              f"({', '.join(secrets)}): chmod 600 {path}, or move the secrets to *_env / *_file keys", "WARN")
