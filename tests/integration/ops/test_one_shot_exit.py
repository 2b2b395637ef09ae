"""A sub-command in its own process leaves without the interpreter's teardown (cli._leave, issue 18):
its output, exit status, run log and exit handlers are still whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support.servers import create_database, settings_toml, unique

# The `opstower` command, plus an exit handler that leaves a mark: it must still run.
COMMAND = ("import atexit, os, sys\n"
           "atexit.register(lambda: open(os.environ['EXIT_MARK'], 'w').write('ran'))\n"
           "from opstower_core.cli import main\n"
           "sys.exit(main())\n")


def run(env: dict[str, str], mark, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", COMMAND, *args], env={**env, "EXIT_MARK": str(mark)},
                          capture_output=True, text=True, timeout=120)


def test_a_sub_command_leaves_with_its_output_status_log_and_exit_handlers_whole(pg, make_settings, tmp_path):
    db = unique("exit")
    create_database(pg, db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 500);")
    settings = make_settings(db)
    env = {**os.environ, "OPSTOWER_CONFIG": str(settings_toml(settings, tmp_path / "config.toml"))}

    backup = run(env, tmp_path / "mark1", "backup", "--local-only", "--json")
    assert backup.returncode == 0, backup.stderr
    last = json.loads(backup.stdout.strip().splitlines()[-1])  # the last line reached the pipe
    assert last["kind"] == "summary" and last["ok"] is True
    assert (tmp_path / "mark1").read_text() == "ran"
    log = max((settings.backup_dir / "logs").glob("backup_*.log"), key=os.path.getmtime).read_text()
    assert log.endswith("\n") and "Completed Successfully" in log.splitlines()[-1]

    listed = run(env, tmp_path / "mark2", "list", "--json")
    assert listed.returncode == 0
    assert [json.loads(line)["database"] for line in listed.stdout.splitlines()] == [db]

    missing = run(env, tmp_path / "mark3", "verify", str(tmp_path / "nothing_here.dump.zst"))
    assert missing.returncode == 1
    assert "VERIFICATION FAILED: 0 passed, 1 failed" in missing.stdout  # the verdict, then its advice: all of it
    assert missing.stdout.rstrip().endswith("take a new backup (`opstower backup`).")
    assert (tmp_path / "mark3").read_text() == "ran"
