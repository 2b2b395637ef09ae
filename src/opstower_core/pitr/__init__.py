"""Point-in-time recovery on barman-cloud: WAL archiving, base backups, recovery to a moment.

Engine: barman-cloud (`barman[cloud]`), in its S3 layout
(s3://BUCKET/<s3 prefix><pitr path>/<server_name>/{base,wals}/…), the layout CloudNativePG
writes too. PostgreSQL calls `wal-push` / `wal-fetch` through a launcher script that its own
OS user can run (launcher.py).
"""

from .accident import Accident, find_accidents
from .base import BaseBackup, base_backup_bytes, list_base_backups, take_base_backup
from .enable import Check, EnableReport, enable, inspect
from .heartbeat import beat, read_heartbeat
from .launcher import archive_command, check_launcher, launcher_path, restore_command, server_os_user
from .recover import PitrSource, RecoveryTarget, ScratchCluster, choose_backup, discard_leftovers, recover_to
from .retention import PitrPruneReport, prune_base_backups
from .status import PitrStatus, pitr_status
from .wal import wal_fetch, wal_push

__all__ = [
    "Accident",
    "BaseBackup",
    "PitrSource",
    "PitrStatus",
    "PitrPruneReport",
    "prune_base_backups",
    "RecoveryTarget",
    "ScratchCluster",
    "base_backup_bytes",
    "beat",
    "find_accidents",
    "list_base_backups",
    "pitr_status",
    "read_heartbeat",
    "recover_to",
    "choose_backup",
    "discard_leftovers",
    "take_base_backup",
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
