"""Any command says so when a killed restore left a database in between (restore journal, dead pid)."""

from __future__ import annotations

import json
import socket
import time

from opstower_core.cli import main
from opstower_core.restore.journal import DIRNAME, Journal


def _dead_restore_journal(state_dir) -> None:
    journal = Journal(live="shop", work="shop_restore_20261130_010000", old="shop_pre_restore_20261130_010000",
                      mode="swap", step="swap", target="shop", server="db1:5432", pid=2**22 - 3, pid_start="0",
                      host=socket.gethostname(), started=time.time() - 60, updated=time.time() - 30,
                      artifact="shop_20261130_000000Z.dump.zst")
    (state_dir / DIRNAME).mkdir(parents=True)
    (state_dir / DIRNAME / "shop.json").write_text(json.dumps(journal.as_dict()))


def test_list_warns_of_an_interrupted_restore_and_schedule_does_not(tmp_path, capsys, monkeypatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("OPSTOWER_STATE_DIR", str(state))
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    main(["list"])
    assert "interrupted" not in capsys.readouterr().err  # nothing to say without a journal
    _dead_restore_journal(state)
    main(["list"])
    err = capsys.readouterr().err
    assert "WARNING: an interrupted restore of shop on db1:5432" in err and "opstower restore --recover" in err
    main(["schedule", "--print", "cron"])
    assert "interrupted" not in capsys.readouterr().err
