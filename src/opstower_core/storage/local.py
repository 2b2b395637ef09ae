"""The local backup directory: listing, deleting and the `<db>_latest` symlink."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from opstower_core.artifacts.names import ArtifactName, parse_name
from opstower_core.errors import OpsError


@dataclass(frozen=True)
class LocalArtifact:
    name: ArtifactName
    path: Path
    size: int
    mtime: float


class LocalStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        """Create the directory 0750 (the reference's checklist) or say why we cannot."""
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
                self.directory.chmod(0o750)  # mkdir's mode is cut by the umask; the checklist says 0750
        except OSError as exc:
            raise OpsError(
                f"Cannot create backup directory {self.directory} ({exc.strerror})",
                "nothing was changed", "create it with write access for this user or set BACKUP_DIR",
            ) from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise OpsError(f"Backup directory {self.directory} is not writable", "nothing was changed",
                           "fix its permissions or set BACKUP_DIR")

    def artifacts(self, database: str | None = None) -> list[LocalArtifact]:
        """Complete artifacts (temp files start with '.' and never match), newest first."""
        out = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith(".") or "_latest." in entry.name or entry.is_symlink():
                continue
            name = parse_name(entry.name)
            if name is None or (database and name.database != database):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if not entry.is_file():
                continue
            out.append(LocalArtifact(name, Path(entry.path), st.st_size, st.st_mtime))
        out.sort(key=lambda a: (a.name.timestamp, a.name.filename), reverse=True)
        return out

    def path(self, name: ArtifactName) -> Path:
        return self.directory / name.filename

    def delete(self, name: ArtifactName) -> list[Path]:
        """Remove an artifact with its metadata and globals sidecars (and a latest link left pointing at it)."""
        removed = []
        for fn in (name.filename, name.meta_filename, name.globals_filename):
            p = self.directory / fn
            if p.exists():
                p.unlink()
                removed.append(p)
        link = self.latest_link(name)
        if link.is_symlink() and os.readlink(link) == name.filename:
            link.unlink()  # a dangling <db>_latest.<ext> would point the operator at nothing
            removed.append(link)
        return removed

    def latest_link(self, name: ArtifactName) -> Path:
        return self.directory / f"{name.database}_latest.{name.ext}{'.age' if name.encrypted else ''}"

    def update_latest(self, name: ArtifactName) -> Path:
        """Point `<db>_latest.<ext>` at `name`, atomically (symlink to temp, rename over)."""
        link = self.latest_link(name)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(name.filename, tmp)
        os.replace(tmp, link)
        return link

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.directory).free
