"""`opstower restore ARTIFACT --tables …` on the command line: --plan, the typed confirmation,
and kill -9 in the middle of a merge (the live table is left as it was)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from opstower_core.cli import main
from support.servers import admin_conn


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def cfg(env, tmp_path):
    s, t = env.settings, env.settings.target()
    path = tmp_path / "opstower.toml"
    path.write_text(
        f'backup_dir = "{s.backup_dir}"\nstate_dir = "{s.state_dir}"\npg_bin = "{s.pg_bin}"\nmin_free_gb = 0\n'
        f'[targets.{t.name}]\nhost = "{t.host}"\nport = {t.port}\nuser = "{t.user}"\nrto_minutes = 30\n')
    return str(path)


def test_plan_shows_the_counts_and_changes_nothing(env, cfg, capsys):
    env.sql("DELETE FROM orders WHERE id <= 40")
    assert main(["--config", cfg, "restore", str(env.artifact), "--tables", "orders", "--plan"]) == 0
    text = capsys.readouterr().out
    assert "public.orders: insert 40 row(s)" in text and "MISSING" in text and "orders_audit" in text
    assert main(["--config", cfg, "restore", str(env.artifact), "--tables", "orders", "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["kind"] == "plan" and plan["tables"][0]["missing"] == 40
    assert env.one("SELECT count(*) FROM orders") == 1960


def test_typed_confirmation_names_tables_and_counts(env, cfg, capsys, monkeypatch):
    env.sql("DELETE FROM orders WHERE id <= 40")
    monkeypatch.setattr(sys, "stdin", FakeTerminal("wrong\n"))
    assert main(["--config", cfg, "restore", str(env.artifact), "--tables", "orders"]) == 1
    captured = capsys.readouterr()
    assert "public.orders: insert 40 row(s)" in captured.out and "nothing was changed" in captured.err
    assert env.one("SELECT count(*) FROM orders") == 1960
    monkeypatch.setattr(sys, "stdin", FakeTerminal(env.db + "\n"))
    assert main(["--config", cfg, "restore", str(env.artifact), "--tables", "orders"]) == 0
    assert "40 inserted" in capsys.readouterr().out
    assert env.one("SELECT count(*) FROM orders") == 2000


def test_kill_9_mid_merge_leaves_live_unchanged(env, cfg, pg):
    env.sql("DELETE FROM orders WHERE id % 2 = 0")
    before = env.sql("SELECT count(*), sum(id) FROM orders")
    holder = admin_conn(pg, env.db)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE orders IN ROW EXCLUSIVE MODE")  # the merge waits here, its rows staged
    proc = subprocess.Popen([sys.executable, "-m", "opstower_core", "--config", cfg, "restore", str(env.artifact),
                             "--tables", "orders", "--force", "--wait-for-locks", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = env.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                              "AND query LIKE 'LOCK TABLE%%'", (env.db,))
            if waiting:
                break
            assert proc.poll() is None, "the recovery ended before it reached the merge"
            time.sleep(0.05)
        else:
            pytest.fail("the recovery never reached the merge")
        # Its TEMP tables are not committed, so invisible in pg_class; their locks are not.
        staged = env.one("SELECT count(*) FROM pg_locks l WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted "
                         "AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = l.relation)", (waiting[0][0],))
        assert staged >= 1  # killed with the backup rows loaded into its temp table, the transaction open
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        holder.execute("ROLLBACK")
        holder.close()
    time.sleep(0.5)
    assert env.sql("SELECT count(*), sum(id) FROM orders") == before
    # the killed run's scratch database is dropped by the next run
    left = env.sql("SELECT datname FROM pg_database WHERE datname LIKE %s", (env.db + "\\_recover\\_%",))
    assert len(left) == 1
    from opstower_core.recover import RecoverOptions, preview_recovery

    preview_recovery(env.settings, str(env.artifact), RecoverOptions(tables=["orders"]))
    assert not env.sql("SELECT datname FROM pg_database WHERE datname LIKE %s", (env.db + "\\_recover\\_%",))
