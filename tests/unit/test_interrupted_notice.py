"""Any command says so when a killed restore left a database in between (restore journal, dead pid)."""

from __future__ import annotations

from opstower_core.cli import main
from support.journal import dead_restore_journal


def test_list_warns_of_an_interrupted_restore_and_schedule_does_not(tmp_path, capsys, monkeypatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("OPSTOWER_STATE_DIR", str(state))
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    main(["list"])
    assert "interrupted" not in capsys.readouterr().err  # nothing to say without a journal
    dead_restore_journal(state, live="shop", target="shop")
    main(["list"])
    err = capsys.readouterr().err
    assert "WARNING: an interrupted restore of shop on db1:5432" in err and "opstower restore --recover" in err
    main(["schedule", "--print", "cron"])
    assert "interrupted" not in capsys.readouterr().err
