"""A restore journal left by a killed run (its pid is gone), as `restore/journal.py` writes it."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from opstower_core.restore.journal import DIRNAME, Journal


def dead_restore_journal(state_dir: Path, live: str, target: str, server: str = "db1:5432",
                         step: str = "restore") -> Path:
    journal = Journal(live=live, work=f"{live}_restore_20261130_010000", old=f"{live}_pre_restore_20261130_010000",
                      mode="swap", step=step, target=target, server=server, pid=2**22 - 3, pid_start="0",
                      host=socket.gethostname(), started=time.time() - 60, updated=time.time() - 30,
                      artifact=f"{live}_20261130_000000Z.dump.zst")
    (state_dir / DIRNAME).mkdir(parents=True, exist_ok=True)
    path = state_dir / DIRNAME / f"{live}.json"
    path.write_text(json.dumps(journal.as_dict()))
    return path
