"""Settings: bad values name their key, the environment wins over the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.errors import ConfigError

BASE = """
backup_dir = "/srv/toml-backups"
retention_days = 14
keep_last = 2

[s3]
bucket = "toml-bucket"
prefix = "prod"
storage_class = "glacier_ir"
part_size_mb = 8

[targets.main]
dbname = "opstower"
host = "db.internal"
port = 6432
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "opstower.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_values_are_read(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, BASE), env={})
    assert s.backup_dir == Path("/srv/toml-backups")
    assert (s.retention_days, s.keep_last) == (14, 2)
    assert s.s3.bucket == "toml-bucket" and s.s3.prefix == "prod/"  # a trailing slash is added
    assert s.s3.storage_class == "GLACIER_IR" and s.s3.part_size_mb == 8
    t = s.target()
    assert (t.name, t.dbname, t.host, t.port) == ("main", "opstower", "db.internal", 6432)
    assert "password" not in str(t.conninfo())


def test_environment_wins_over_toml(tmp_path: Path) -> None:
    env = {"BACKUP_DIR": str(tmp_path / "env-backups"), "BACKUP_RETENTION_DAYS": "3", "S3_BUCKET": "env-bucket",
           "S3_PREFIX": "envprefix/", "OPSTOWER_STATE_DIR": str(tmp_path / "state")}
    s = load_settings(write(tmp_path, BASE), env=env)
    assert s.backup_dir == tmp_path / "env-backups"
    assert s.retention_days == 3
    assert s.s3.bucket == "env-bucket" and s.s3.prefix == "envprefix/"
    assert s.state_dir == tmp_path / "state"
    # Untouched keys still come from the file.
    assert s.keep_last == 2 and s.s3.storage_class == "GLACIER_IR"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings(None, env={"XDG_CONFIG_HOME": str(tmp_path / "empty"), "PGDATABASE": "shop"})
    assert s.retention_days == 30 and s.keep_last == 3 and s.pre_restore_retention_days == 7
    assert s.s3.enabled is False and s.s3.storage_class == "STANDARD_IA"
    assert s.target().dbname == "shop"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ('retention_days = "abc"', {}, "retention_days"),
        ("retention_days = 7.5", {}, "retention_days"),  # not silently 7
        ("retention_days = 0", {}, "retention_days"),
        ("retention_days = true", {}, "retention_days"),
        ("", {"BACKUP_RETENTION_DAYS": "abc"}, "BACKUP_RETENTION_DAYS"),
        ("keep_last = -1", {}, "keep_last"),
        ('min_free_gb = "lots"', {}, "min_free_gb"),
        ('[s3]\nbucket = "b"\nstorage_class = "FOO"', {}, "s3.storage_class"),
        ('[s3]\nbucket = "b"\npart_size_mb = 1', {}, "s3.part_size_mb"),  # S3's minimum part is 5 MiB
        ('[s3]\nsse = "rot13"', {}, "s3.sse"),
        ("[s3]\nbucket = 5", {}, "s3.bucket"),
        ("s3 = 5", {}, "s3"),
        ('[targets.main]\ndbname = "x"\nbogus = 1', {}, "targets.main.bogus"),
        ('[targets.main]\nport = "five"', {}, "targets.main.port"),
        ('[targets.main]\npassword = "hunter2"', {}, "targets.main.password"),
        ('[objectives]\nrto_minutes = "soon"', {}, "objectives.rto_minutes"),
        ("objectives = 5", {}, "objectives"),
        ("health = 5", {}, "health"),
        ("backup_dir = 5", {}, "backup_dir"),
        ("retention_days = [", {}, "not valid TOML"),
        ("retension_days = 7", {}, "retension_days"),  # a typo is refused, not ignored
        ('[s3]\nbucket = "b"\nstorage_clas = "STANDARD"', {}, "s3.storage_clas"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), env=env)
    assert key in err.value.sentence
    assert "hunter2" not in err.value.sentence


def test_unknown_target_name_lists_the_known_ones(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, BASE), env={})
    with pytest.raises(ConfigError) as err:
        s.target("nope")
    assert "'nope'" in err.value.sentence and "main" in err.value.sentence
    assert s.target("opstower").name == "main"  # the database name is accepted too


def test_cli_reports_a_bad_config_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, '[s3]\nbucket = "b"\nstorage_class = "FOO"')
    rc = main(["--config", str(cfg), "list"])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR:") and "s3.storage_class" in lines[0]
    assert "Traceback" not in out + err

    rc = main(["--config", str(tmp_path / "missing.toml"), "list"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("ERROR:") and "does not exist" in err


def test_the_readme_example_config_loads(tmp_path: Path) -> None:
    """The configuration shown to users in the README is valid, section by section."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = tmp_path / "readme.toml"
    cfg.write_text(example + '\n[keys]\n"backups.verify" = "V"\n')
    s = load_settings(cfg, env={})
    assert s.target("opstower").host == "db1.internal" and s.s3.bucket == "opstower-backups"
    assert s.section("keys") == {"backups.verify": "V"}


def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    """OPSTOWER_CONFIG with a typo in a cron line must not run on defaults."""
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"OPSTOWER_CONFIG": str(tmp_path / "absent.toml")})
    assert "absent.toml" in err.value.sentence and "does not exist" in err.value.sentence
