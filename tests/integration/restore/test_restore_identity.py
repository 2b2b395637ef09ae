"""Issue 12, the restore side: the right backup into the right database on the right server,
roles asked for rather than silently dropped, and the proof of the restored contents."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import uuid

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import Target
from opstower_core.errors import OpsError, UsageError
from opstower_core.events import Status
from opstower_core.restore import RestoreOptions, plan_restore, render_incident_report, run_restore
from support.restore import SCHEMA, databases
from support.servers import admin_conn, create_database


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class CtrlCTerminal(FakeTerminal):
    """A terminal on which the operator presses Ctrl-C at the prompt."""

    def readline(self, *args) -> str:
        raise KeyboardInterrupt


def _second_target(live, dbname: str, **changes) -> object:
    """live.settings with one more configured target (database `dbname` on the same server unless changed)."""
    t = dataclasses.replace(live.settings.target(), name=dbname, dbname=dbname, **changes)
    return live.settings.with_changes(targets={**live.settings.targets, dbname: t})


def _config(tmp_path, settings) -> str:
    lines = [f'backup_dir = "{settings.backup_dir}"', f'state_dir = "{settings.state_dir}"',
             f'pg_bin = "{settings.pg_bin}"', "min_free_gb = 0", f'default_target = "{settings.default_target}"']
    for t in settings.targets.values():
        lines += [f"[targets.{t.name}]", f'dbname = "{t.dbname}"', f'host = "{t.host}"', f"port = {t.port}",
                  f'user = "{t.user}"']
    path = tmp_path / "opstower.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- a. identity --------------------------------------------------------------------------------

def test_latest_and_names_resolve_within_the_database_restored(live, pg):
    other = f"{live.db}_other"
    create_database(pg, other, "CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
    settings = _second_target(live, other)
    theirs = run_backup(settings, other, BackupOptions(local_only=True))  # the newest backup in the directory
    plan = plan_restore(settings, "latest", live.db, RestoreOptions(force=True))
    assert plan.entry.filename == live.backup.name.filename and plan.live_db == live.db
    assert plan.artifact_database == live.db and plan.identity_source == "archive header"
    assert plan_restore(settings, "latest", other).entry.filename == theirs.name.filename
    # <db>_latest names that database's backup: into another one only when asked.
    with pytest.raises(OpsError, match=f"is a backup of database {other}, not of {live.db}"):
        plan_restore(settings, f"{other}_latest", live.db, RestoreOptions(force=True))
    # A bare name of another database's backup is not found among this database's backups.
    with pytest.raises(OpsError, match=f"among the backups of {live.db}"):
        plan_restore(settings, theirs.name.filename, live.db)


def test_a_dump_of_another_database_under_this_ones_name_and_metadata_is_refused(live, pg, make_settings):
    other = f"rs_{uuid.uuid4().hex[:8]}"
    create_database(pg, other, "CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
    theirs = run_backup(make_settings(other), options=BackupOptions(local_only=True))
    # Their bytes, our file name, our metadata made consistent with the bytes (size, sha256).
    fake = live.settings.backup_dir / f"{live.db}_20250101_000000.dump.zst"
    shutil.copyfile(theirs.path, fake)
    meta = json.loads(live.backup.path.with_name(live.backup.name.meta_filename).read_text())
    data = fake.read_bytes()
    meta.update(backup_file=fake.name, size_bytes=len(data), backup_size=str(len(data)),
                sha256=hashlib.sha256(data).hexdigest(), timestamp="20250101_000000")
    fake.with_name(f"{live.db}_20250101_000000.meta.json").write_text(json.dumps(meta))
    with pytest.raises(OpsError) as refused:
        plan_restore(live.settings, str(fake), options=RestoreOptions(force=True))
    assert f"holds a dump of database {other}" in refused.value.what and live.db in refused.value.what
    assert "nothing was changed" in refused.value.sentence
    assert live.now() == live.damaged


def test_a_backup_of_a_into_b_only_with_target_db_and_the_prompt_shows_both(live, pg, tmp_path, capsys, monkeypatch):
    b = f"{live.db}_b"
    create_database(pg, b, "CREATE TABLE t (x int);")
    settings = _second_target(live, b)
    with pytest.raises(OpsError, match=f"--target-db {b}"):
        plan_restore(settings, str(live.backup.path), b)
    plan = plan_restore(settings, str(live.backup.path), b, RestoreOptions(target_db=b))
    assert plan.live_db == b and plan.mode == "swap" and plan.artifact_database == live.db
    assert any(f"backup is of database {live.db}; it will become {b}" in n for n in plan.notes)
    cfg = _config(tmp_path, settings)
    monkeypatch.setattr("sys.stdin", FakeTerminal("no\n"))
    assert main(["--config", cfg, "restore", str(live.backup.path), "-d", b, "--target-db", b]) == 1
    out = capsys.readouterr().out
    t = settings.target(b)
    assert f"Backup of database: {live.db}  ->  restored as: {b} on {t.display_host}:{t.display_port}" in out


# -- b. the server is the target's ----------------------------------------------------------------

def test_the_server_is_the_configured_targets_never_guessed_from_the_artifact(live):
    elsewhere = _second_target(live, "elsewhere", host="127.0.0.1", port=1)  # nothing listens there
    with pytest.raises(OpsError) as refused:
        plan_restore(elsewhere, str(live.backup.path), "elsewhere", RestoreOptions(target_db=live.db))
    assert "127.0.0.1:1" in refused.value.what and "'elsewhere'" not in refused.value.what
    assert live.db in refused.value.what  # names the database restored, not template1 / postgres
    with pytest.raises(UsageError, match="--in-place replaces an existing database"):
        plan_restore(live.settings, str(live.backup.path),
                     options=RestoreOptions(target_db=f"{live.db}_nope", in_place=True))


# -- c. roles ----------------------------------------------------------------------------------------

def test_missing_roles_are_refused_without_a_choice_and_no_acl_says_what_it_left_out(pg, make_settings):
    tag = uuid.uuid4().hex[:6]
    owner, reader = f"Own_{tag}", f"Ops Reader {tag}"  # quoted, mixed case
    db = f"rs_{uuid.uuid4().hex[:8]}"
    with admin_conn(pg) as c:
        c.execute(f'CREATE ROLE "{owner}" NOLOGIN')
        c.execute(f'CREATE ROLE "{reader}" NOLOGIN')
    create_database(pg, db, SCHEMA + f"""ALTER TABLE customers OWNER TO "{owner}";
        GRANT SELECT ON orders TO "{reader}"; INSERT INTO audit.events (what) VALUES ('Grüße, 東京');""")
    settings = make_settings(db)
    backup = run_backup(settings, options=BackupOptions(local_only=True))
    with admin_conn(pg, db) as c:
        c.execute(f'DROP OWNED BY "{reader}"')
        c.execute(f'REASSIGN OWNED BY "{owner}" TO postgres')
        c.execute(f'DROP OWNED BY "{owner}"')
    with admin_conn(pg) as c:
        c.execute(f'DROP ROLE "{owner}"')
        c.execute(f'DROP ROLE "{reader}"')
    with pytest.raises(OpsError) as refused:
        plan_restore(settings, str(backup.path), options=RestoreOptions(force=True))
    assert owner in refused.value.what and reader in refused.value.what
    assert "--create-roles" in refused.value.sentence and "--no-acl" in refused.value.sentence
    plan = plan_restore(settings, str(backup.path), options=RestoreOptions(force=True, no_acl=True))
    assert plan.no_owner and sorted(plan.missing_roles) == sorted([owner, reader])
    result = run_restore(settings, plan)
    assert result.ok, result.sentence
    assert result.left_out and "ownership and grants were not restored" in result.left_out
    assert "--no-acl" in result.sentence and result.left_out in render_incident_report(result)
    with admin_conn(pg, db) as c:
        assert c.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'customers'").fetchone()[0] == "postgres"
        assert c.execute("SELECT count(*) FROM audit.events WHERE what = 'Grüße, 東京'").fetchone()[0] == 1
        assert not {r[0] for r in c.execute("SELECT rolname FROM pg_roles")} & {owner, reader}  # nothing created


# -- d. small ones --------------------------------------------------------------------------------------

def test_a_directory_or_a_missing_local_path_is_one_line(live, tmp_path, capsys):
    cfg = _config(tmp_path, live.settings)
    assert main(["--config", cfg, "restore", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a directory, not a backup file" in err[0]
    s3 = dataclasses.replace(live.settings.s3, bucket="never-asked", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(OpsError, match="No backup file at /tmp/nope") as missing:
        plan_restore(live.settings.with_changes(s3=s3), "/tmp/nope_20250101_000000.dump.zst")
    assert "s3://" not in missing.value.sentence


def test_a_refused_login_shows_libpqs_reason_naming_the_target(live, pg, tmp_path, capsys):
    role = f"nologin_{uuid.uuid4().hex[:6]}"
    with admin_conn(pg) as c:
        c.execute(f"CREATE ROLE {role} NOLOGIN")
    settings = live.settings.with_changes(
        targets={live.db: dataclasses.replace(live.settings.target(), user=role)})
    assert isinstance(settings.target(), Target)
    assert main(["--config", _config(tmp_path, settings), "restore", str(live.backup.path), "--plan"]) == 1
    err = capsys.readouterr().err
    assert f'role "{role}" is not permitted to log in' in err  # the server's own reason
    assert live.db in err and "template1" not in err and "check the user and password" in err


def test_ctrl_c_at_the_typed_confirmation_is_an_interruption(live, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", CtrlCTerminal())
    assert main(["--config", _config(tmp_path, live.settings), "restore", str(live.backup.path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "nothing was changed" in err and "did not match" not in err
    assert live.now() == live.damaged and databases(live.pg, live.db) == {live.db}


# -- e. the proof ------------------------------------------------------------------------------------------

def test_the_restore_ends_with_a_proof_in_the_result_and_the_report(live):
    result = run_restore(live.settings, plan_restore(live.settings, str(live.backup.path),
                                                     options=RestoreOptions(force=True)))
    assert result.ok, result.sentence
    assert result.proof is not None and result.proof.status != Status.FAIL, result.proof.sentence
    assert "digests equal" in result.proof.sentence
    step = next(s for s in result.steps if s.step == "verify_restored")
    assert result.proof.sentence in step.detail
    assert result.proof.sentence in render_incident_report(result)
    assert result.as_dict()["proof"]["sentence"] == result.proof.sentence
