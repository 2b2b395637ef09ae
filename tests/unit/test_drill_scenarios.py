"""Drill scenarios: the built-in ones match the reference; user files override and extend; a
malformed file is refused naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.drill import (
    ScenarioError,
    builtin_scenarios,
    find_scenario,
    load_scenarios,
    parse_scenarios,
)
from opstower_core.errors import ConfigError

REFERENCE = {
    "Database Corruption": [("Assessment", 15), ("Containment", 15), ("Recovery", 45), ("Service Restoration", 30),
                            ("Verification", 15)],
    "Complete Server Failure": [("Assessment", 10), ("New Server Provisioning", 60), ("Database Restoration", 45),
                                ("Application Configuration", 30), ("DNS Cutover", 15), ("Verification", 20)],
    "Accidental Data Deletion": [("Assess Damage", 10), ("Point-in-Time Recovery", 45), ("Verification", 5)],
}


def test_builtin_scenarios_follow_the_reference():
    scenarios = {s.name: s for s in builtin_scenarios().values()}
    for name, phases in REFERENCE.items():
        assert [(p.name, p.target_minutes) for p in scenarios[name].phases] == phases
    # Totals as the reference states them: 2 h, 3 h, 1 h, and under 30 min.
    assert [scenarios[n].target_minutes for n in REFERENCE] == [120, 180, 60]
    assert scenarios["Performance Degradation"].target_minutes <= 30
    kinds = {s.name: [p.kind for p in s.phases] for s in scenarios.values()}
    assert kinds["Database Corruption"] == ["manual", "manual", "restore", "manual", "verify"]
    assert kinds["Accidental Data Deletion"] == ["manual", "selective_restore", "verify"]
    assert scenarios["Complete Server Failure"].phases[4].activities == "Update DNS, verify routing"
    # The measured-RPO scenario: its recovery is the pitr_latest kind, the rest done by hand.
    pitr = scenarios["Point-in-time recovery to latest (measured RPO)"]
    assert [(p.name, p.target_minutes, p.kind) for p in pitr.phases] == [
        ("Assessment", 10, "manual"), ("Recovery to latest", 45, "pitr_latest"),
        ("Application configuration", 30, "manual"), ("DNS cutover", 15, "manual")]
    assert pitr.id == "pitr_latest" and pitr.target_minutes == 100
    assert len(scenarios) == 5


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\nbackup_dir = "{tmp_path / "b"}"\n{extra}')
    return cfg


OVERRIDE = """
[scenarios.database_corruption]
name = "Database Corruption (our runbook)"
[[scenarios.database_corruption.phases]]
name = "Triage"
target_minutes = 5
[[scenarios.database_corruption.phases]]
name = "Restore"
target_minutes = 20.5
kind = "restore"

[scenarios.replica_lag]
name = "Replica Lag"
[[scenarios.replica_lag.phases]]
name = "Check"
target_minutes = 10
"""


def test_user_files_override_by_id_and_add_new_ids(tmp_path):
    (tmp_path / "scenarios.toml").write_text(OVERRIDE)
    (tmp_path / "more.toml").write_text(
        '[scenarios.replica_lag]\nname = "Replica Lag v2"\n[[scenarios.replica_lag.phases]]\n'
        'name = "Fail over"\ntarget_minutes = 3\nkind = "manual"\n')
    settings = load_settings(write_config(tmp_path, '[drills]\nscenarios_file = "more.toml"\n'), env={})
    scenarios = load_scenarios(settings)
    assert set(scenarios) == set(builtin_scenarios()) | {"replica_lag"}
    own = scenarios["database_corruption"]
    assert own.name == "Database Corruption (our runbook)" and own.target_minutes == 25.5
    assert own.source == str(tmp_path / "scenarios.toml")
    assert scenarios["replica_lag"].name == "Replica Lag v2"  # the [drills] file applies last
    assert scenarios["server_failure"].source == "built-in"
    assert find_scenario(scenarios, "replica lag v2").id == "replica_lag"
    assert find_scenario(scenarios, "Complete").id == "server_failure"
    with pytest.raises(ConfigError, match="several"):
        find_scenario(scenarios, "data")  # database_corruption and data_deletion


def test_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "scenarios.toml"
    bad.write_text('[scenarios.x]\nname = "X"\n\n[[scenarios.x.phases]]\nname = "A"\ntarget_minutes = = 5\n')
    settings = load_settings(write_config(tmp_path), env={})
    with pytest.raises(ScenarioError) as err:
        load_scenarios(settings)
    assert err.value.path == str(bad) and err.value.line == 6
    assert f"{bad} line 6" in err.value.sentence and "column" in err.value.sentence
    # The CLI says the same on one line, exit 2, no traceback.
    assert main(["--config", str(tmp_path / "config.toml"), "drill", "scenarios"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("ERROR: Scenario file") and f"{bad} line 6" in stderr and "Traceback" not in stderr


SCHEMA_CASES = [
    # (text, line, words in the message)
    ('[scenarios.x]\nname = "X"\n[[scenarios.x.phases]]\nname = "A"\ntarget_minutes = 5\nkind = "automatic"\n',
     6, "kind = 'automatic' must be one of manual, restore, selective_restore, verify"),
    ('[scenarios.x]\nname = "X"\n[[scenarios.x.phases]]\nname = "A"\ntarget_minutes = 5\n'
     '[[scenarios.x.phases]]\nname = "B"\n\ntarget_minutes = -1\n', 9, "phases[2].target_minutes = -1"),
    ('[scenarios.x]\nname = "X"\n[[scenarios.x.phases]]\nname = "A"\n', 3, "phases[1] (A) has no target_minutes"),
    ('[scenarios.x]\nname = "X"\n[[scenarios.x.phases]]\nname = "A"\ntarget_minutes = 5\nowner = "me"\n',
     6, "phases[1].owner is not a known key"),
    ('# comment\n[scenarios.x]\ndescription = "no name"\n[[scenarios.x.phases]]\nname = "A"\ntarget_minutes = 1\n',
     2, "scenarios.x.name is missing"),
    ('[scenarios.x]\nname = "X"\n', 1, "has no phases"),
    ('version = 2\n[scenarios.x]\nname = "X"\n', 1, "unknown top-level key 'version'"),
    ('[scenarios."x y"]\nname = "X"\n', 1, "may hold only letters"),
    ('[scenarios.x]\nname = "X"\nphases = [{name = "A", target_minutes = true}]\n', 3,
     "target_minutes = True must be a number"),
]


@pytest.mark.parametrize(("text", "line", "words"), SCHEMA_CASES)
def test_schema_errors_name_the_line_of_the_offending_key(tmp_path, text, line, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    settings = load_settings(write_config(tmp_path, f'[drills]\nscenarios_file = "{path}"\n'), env={})
    with pytest.raises(ScenarioError) as err:
        load_scenarios(settings)
    assert (err.value.path, err.value.line) == (str(path), line), err.value.sentence
    assert words in err.value.sentence
    assert f"{path} line {line}:" in err.value.sentence


def test_missing_scenarios_file_and_bad_setting(tmp_path):
    settings = load_settings(write_config(tmp_path, '[drills]\nscenarios_file = "nope.toml"\n'), env={})
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios(settings)
    settings = load_settings(write_config(tmp_path, "[drills]\nscenarios_file = 3\n"), env={})
    with pytest.raises(ConfigError, match="drills.scenarios_file"):
        load_scenarios(settings)
    with pytest.raises(ScenarioError):
        parse_scenarios("[scenarios]\nx = 1\n", "inline")
