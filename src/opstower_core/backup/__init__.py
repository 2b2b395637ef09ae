"""Backups: pg_dump streamed through zstd (and age), checksummed, stored locally and in S3."""

from .model import (
    DEFAULT_FLOOR,
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
    "DumpResult",
    "required_free_bytes",
    "run_backup",
]
