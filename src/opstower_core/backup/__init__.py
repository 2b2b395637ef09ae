"""Backups: pg_dump streamed through zstd (and age), checksummed, stored locally and in S3."""

from .model import (
    DEFAULT_FLOOR,
    DEFAULT_LOCK_WAIT,
    BackupOptions,
    BackupResult,
    DumpResult,
    required_free_bytes,
)
from .run import BackupRun, run_backup

__all__ = [
    "BackupOptions",
    "BackupResult",
    "BackupRun",
    "DEFAULT_FLOOR",
    "DEFAULT_LOCK_WAIT",
    "DumpResult",
    "required_free_bytes",
    "run_backup",
]
