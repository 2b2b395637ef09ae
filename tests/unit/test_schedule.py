"""Cron lines and systemd units for the backup / verify / health schedule, and `opstower schedule`."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from opstower_core.cli import main
from opstower_core.schedule import JOBS, find_opstower, render_cron, render_systemd

EXE = "/opt/opstower/.venv/bin/opstower"
CONFIG = "/etc/opstower/config.toml"
EXPECTED_CRON = {
    "backup": ("0 * * * *", "backup"),
    "verify": ("0 2 * * 0", "verify latest --full-test"),
    "health": ("*/15 * * * *", "health"),
}
EXPECTED_CALENDAR = {"backup": "hourly", "verify": "Sun *-*-* 02:00:00", "health": "*:0/15"}


def job_lines(crontab: str) -> list[str]:
    return [line for line in crontab.splitlines() if line.strip() and not line.startswith("#")]


def test_cron_has_three_jobs_with_schedules_and_absolute_paths() -> None:
    text = render_cron(EXE, CONFIG, "/var/log/opstower")
    lines = job_lines(text)
    assert len(lines) == 3
    for line, (name, (schedule, args)) in zip(lines, EXPECTED_CRON.items(), strict=True):
        assert line == (
            f"{schedule} OPSTOWER_CONFIG={CONFIG} {EXE} {args} >> /var/log/opstower/{name}.log 2>&1"
        )


def test_cron_makes_relative_paths_absolute_and_omits_missing_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines = job_lines(render_cron("bin/opstower", None, "logs"))
    assert all(f" {tmp_path}/bin/opstower " in line for line in lines)
    assert all(f">> {tmp_path}/logs/" in line for line in lines)
    assert not any("OPSTOWER_CONFIG" in line for line in lines)


def test_cron_lines_run_under_sh_with_awkward_paths(tmp_path: Path) -> None:
    """Spaces, quotes and % survive cron (which turns a bare % into a newline) and the shell."""
    bindir = tmp_path / "my bin"
    bindir.mkdir()
    fake = bindir / "opstower"  # records its arguments and OPSTOWER_CONFIG instead of running a job
    fake.write_text('#!/bin/sh\nprintf "%s|" "$OPSTOWER_CONFIG" "$@"\n')
    fake.chmod(0o755)
    config = tmp_path / "it's 100% config.toml"
    logs = tmp_path / "log dir"
    logs.mkdir()
    for line in job_lines(render_cron(str(fake), str(config), str(logs))):
        command = line.split(" ", 5)[5]
        assert "%" not in command.replace("\\%", "")  # every % escaped for cron
        # What cron hands to /bin/sh: \% becomes %.
        subprocess.run(["/bin/sh", "-c", command.replace("\\%", "%")], check=True, timeout=30)
    for name, (_, args) in EXPECTED_CRON.items():
        assert (logs / f"{name}.log").read_text() == "|".join([str(config), *args.split()]) + "|"


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def test_systemd_units_parse_and_have_the_schedules() -> None:
    units = render_systemd(EXE, CONFIG, user="opstower")
    assert sorted(units) == sorted(f"opstower-{job.name}.{kind}" for job in JOBS for kind in ("service", "timer"))
    for name, calendar in EXPECTED_CALENDAR.items():
        service = parse_unit(units[f"opstower-{name}.service"])
        timer = parse_unit(units[f"opstower-{name}.timer"])
        assert service["Service"]["Type"] == "oneshot"
        assert "postgresql.service" in service["Unit"]["After"].split()
        assert service["Service"]["User"] == "opstower"
        assert service["Service"]["ExecStart"] == f"{EXE} {EXPECTED_CRON[name][1]}"
        assert service["Service"]["Environment"] == f'"OPSTOWER_CONFIG={CONFIG}"'
        assert timer["Timer"]["OnCalendar"] == calendar
        assert timer["Timer"]["Persistent"] == "true"
        assert timer["Timer"]["Unit"] == f"opstower-{name}.service"
        assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_only_environment_is_the_config_path() -> None:
    units = render_systemd(EXE, None)
    for name, text in units.items():
        assert "Environment" not in text, name
        assert "User=" not in text, name


def test_systemd_analyze_accepts_units(tmp_path: Path) -> None:
    """systemd's own parser: calendar expressions and the unit files, with an awkward config path."""
    # Debian's systemd package is on every machine of this project's kind: fail, never skip, without it.
    assert shutil.which("systemd-analyze"), "systemd-analyze (Debian package systemd) is not installed"
    for calendar in EXPECTED_CALENDAR.values():
        subprocess.run(["systemd-analyze", "calendar", calendar], check=True, capture_output=True, timeout=30)
    units = render_systemd(find_opstower(), str(tmp_path / "100% \"odd\" config.toml"))
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(tmp_path / name) for name in units)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "opstower-" not in result.stderr, result.stderr  # no warning about our units


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'backup_dir = "{tmp_path / "backups"}"\n')
    monkeypatch.setenv("OPSTOWER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/envSecretToken123456")
    return path


def test_cli_prints_cron(config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "schedule", "--print", "cron"]) == 0
    out = capsys.readouterr().out
    lines = job_lines(out)
    assert len(lines) == 3
    exe = find_opstower()
    assert os.path.isabs(exe)
    for line, (name, (schedule, args)) in zip(lines, EXPECTED_CRON.items(), strict=True):
        assert line.startswith(f"{schedule} OPSTOWER_CONFIG={config_file} {exe} {args} >> ")
        assert line.endswith(f"{tmp_path / 'state' / 'logs' / name}.log 2>&1")
    assert "envSecretToken123456" not in out


def test_cli_prints_systemd_with_headers(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "schedule", "--print", "systemd", "--user", "backup"]) == 0
    out = capsys.readouterr().out
    for job in JOBS:
        assert f"# ==> opstower-{job.name}.service <==" in out
        assert f"# ==> opstower-{job.name}.timer <==" in out
    assert out.count("OnCalendar=") == 3 and out.count("User=backup") == 3
    assert "envSecretToken123456" not in out


def test_cli_writes_systemd_units(config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "units"
    assert main(["--config", str(config_file), "schedule", "--print", "systemd", "--output-dir", str(out_dir)]) == 0
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted(f"opstower-{job.name}.{kind}" for job in JOBS for kind in ("service", "timer"))
    timer = parse_unit((out_dir / "opstower-verify.timer").read_text())
    assert timer["Timer"]["OnCalendar"] == "Sun *-*-* 02:00:00"
    assert "systemctl enable --now" in capsys.readouterr().out


def test_cli_missing_config_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "schedule", "--print", "cron"]) == 2
    assert "does not exist" in capsys.readouterr().err
