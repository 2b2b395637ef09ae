"""Point-in-time recovery on barman-cloud: WAL archiving, base backups, recovery to a moment.

Engine: barman-cloud (`barman[cloud]`), in its S3 layout
(s3://BUCKET/<s3 prefix><pitr path>/<server_name>/{base,wals}/…), the layout CloudNativePG
writes too. PostgreSQL calls `wal-push` / `wal-fetch` through a launcher script that its own
OS user can run (launcher.py).
"""

from .enable import Check, EnableReport, enable, inspect
from .launcher import archive_command, check_launcher, launcher_path, restore_command, server_os_user
from .wal import wal_fetch, wal_push

__all__ = [
    "Check",
    "EnableReport",
    "archive_command",
    "check_launcher",
    "enable",
    "inspect",
    "launcher_path",
    "restore_command",
    "server_os_user",
    "wal_fetch",
    "wal_push",
]
