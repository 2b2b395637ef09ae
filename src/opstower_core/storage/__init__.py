"""Where artifacts live: the local backup directory and an S3-compatible bucket."""

from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import S3Store, store_for

__all__ = ["LocalStore", "S3Store", "store_for"]
