"""Backups: pg_dump streamed through zstd (and age), checksummed, stored locally and in S3."""

from .dump import DEFAULT_FLOOR, BackupOptions, BackupResult, required_free_bytes
from .run import run_backup

__all__ = [
    "BackupOptions",
    "BackupResult",
    "DEFAULT_FLOOR",
    "required_free_bytes",
    "run_backup",
]
