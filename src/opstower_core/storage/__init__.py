"""Where artifacts live: the local backup directory and an S3-compatible bucket."""

from .local import LocalStore
from .s3 import S3Store

__all__ = ["LocalStore", "S3Store"]
