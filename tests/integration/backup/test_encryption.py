"""Encryption at rest (age): backups, verification and the standard `age` CLI, for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pyrage
import pytest

from opstower_core.artifacts.crypto import encryption_settings
from opstower_core.backup import run_backup
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.errors import ConfigError
from opstower_core.events import Status
from opstower_core.storage.s3 import S3Store
from opstower_core.verify import verify
from support.servers import admin_conn, create_database

SCHEMA = """
CREATE TABLE secrets (id int PRIMARY KEY, payload text);
INSERT INTO secrets SELECT g, 'top secret ' || md5(g::text) FROM generate_series(1, 5000) g;
"""


def status(result, step: str) -> tuple[Status, str]:
    r = next(r for r in result.results if r.step == step)
    return r.status, r.detail


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    ident = pyrage.x25519.Identity.generate()
    key = d / "key.txt"
    key.write_text(f"# created for tests\n{ident}\n")
    key.chmod(0o600)
    other = d / "other.txt"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    return {"recipient": str(ident.to_public()), "identity": key, "wrong": other, "dir": d}


@pytest.fixture(scope="module")
def encrypted(pg, s3, keys, tmp_path_factory):
    db = f"enc_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, SCHEMA)
    root = tmp_path_factory.mktemp("enc")
    base = Settings(
        backup_dir=root / "backups", state_dir=root / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
        s3=S3Settings(bucket=s3.bucket, prefix=f"e{uuid.uuid4().hex[:6]}/", endpoint_url=s3.endpoint_url,
                      region="us-east-1", part_size_mb=5, sse="AES256"),
        targets={db: Target(db, db, host=pg.host, port=pg.port, user=pg.user)}, default_target=db,
    )
    # The backup host knows only the public key.
    writer = base.with_changes(raw={"encryption": {"recipients": [keys["recipient"]]}})
    result = run_backup(writer)
    reader = base.with_changes(raw={"encryption": {"recipients": [keys["recipient"]],
                                                   "identity_file": str(keys["identity"])}})
    return base, writer, reader, result, db


def test_backup_is_age_encrypted_and_metadata_names_no_key(encrypted, keys):
    _base, _w, _r, result, _db = encrypted
    assert result.ok and result.path.name.endswith(".dump.zst.age")
    assert result.path.read_bytes().startswith(b"age-encryption.org/v1")
    meta_text = result.path.with_name(result.name.meta_filename).read_text()
    meta = json.loads(meta_text)
    assert meta["encryption"]["format"] == "age"
    assert meta["encryption"]["recipients"][0].startswith("sha256:")
    assert keys["recipient"] not in meta_text and "AGE-SECRET-KEY" not in meta_text
    assert b"top secret" not in result.path.read_bytes()


def test_s3_upload_carries_server_side_encryption(encrypted):
    base, _w, _r, result, _db = encrypted
    head = S3Store(base.s3).head(result.s3_key)
    assert head is not None and head.get("ServerSideEncryption") == "AES256"


def test_verify_without_identity_says_what_it_could_not_check(encrypted):
    _base, writer, _r, result, _db = encrypted
    v = verify(writer, result.path, full_test=True)
    assert v.ok
    for step in ("compression", "content"):
        st, detail = status(v, step)
        assert st == Status.SKIP and "identity" in detail
    assert status(v, "full_restore")[0] == Status.SKIP
    assert status(v, "metadata")[0] == Status.PASS  # size and sha256 of the stored bytes still match
    assert status(v, "s3")[0] == Status.PASS


def test_verify_with_identity_decrypts_on_the_fly_including_full_restore(encrypted):
    _base, _w, reader, result, _db = encrypted
    v = verify(reader, result.path, full_test=True)
    assert {r.step: r.status for r in v.results} == {r.step: Status.PASS for r in v.results}, \
        [r.detail for r in v.results]
    assert "5,000 rows" in status(v, "full_restore")[1]


def test_passphrase_protected_identity(encrypted, keys, tmp_path):
    _base, _w, reader, result, _db = encrypted
    protected = tmp_path / "key.age"
    protected.write_bytes(pyrage.passphrase.encrypt(keys["identity"].read_bytes(), "correct horse"))
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    enc = {"recipients": [keys["recipient"]], "identity_file": str(protected), "passphrase_file": str(pw)}
    v = verify(reader.with_changes(raw={"encryption": enc}), result.path)
    assert status(v, "compression")[0] == Status.PASS
    pw.write_text("wrong\n")
    v = verify(reader.with_changes(raw={"encryption": enc}), result.path)
    st, detail = status(v, "compression")
    assert st == Status.SKIP and "passphrase does not unlock" in detail


def test_wrong_identity_fails(encrypted, keys):
    _base, _w, reader, result, _db = encrypted
    enc = {"recipients": [keys["recipient"]], "identity_file": str(keys["wrong"])}
    v = verify(reader.with_changes(raw={"encryption": enc}), result.path, full_test=True)
    st, detail = status(v, "compression")
    assert st == Status.FAIL and "not a recipient" in detail
    assert status(v, "full_restore")[0] == Status.SKIP and not v.ok


def _copy(result, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    art = dest / result.path.name
    shutil.copyfile(result.path, art)
    shutil.copyfile(result.path.with_name(result.name.meta_filename), dest / result.name.meta_filename)
    return art


def test_flipped_byte_and_truncation_in_ciphertext_fail(encrypted, tmp_path):
    base, _w, reader, result, _db = encrypted
    local = reader.with_changes(s3=S3Settings())
    art = _copy(result, tmp_path / "flip")
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0x01
    art.write_bytes(bytes(data))
    v = verify(local, art, full_test=True)
    assert status(v, "compression")[0] == Status.FAIL and "damaged" in status(v, "compression")[1]
    assert status(v, "metadata")[0] == Status.FAIL and not v.ok

    art = _copy(result, tmp_path / "trunc")
    art.write_bytes(art.read_bytes()[: art.stat().st_size * 2 // 3])
    v = verify(local, art)
    assert status(v, "compression")[0] == Status.FAIL and not v.ok


def test_encrypted_artifact_whose_metadata_claims_it_is_not(encrypted, tmp_path):
    _base, _w, reader, result, _db = encrypted
    art = _copy(result, tmp_path)
    meta_path = tmp_path / result.name.meta_filename
    meta = json.loads(meta_path.read_text())
    meta["encryption"] = None
    meta_path.write_text(json.dumps(meta))
    v = verify(reader.with_changes(s3=S3Settings()), art)
    st, detail = status(v, "metadata")
    assert st == Status.FAIL and "claims it is not" in detail


def test_standard_age_cli_decrypts_our_artifact(encrypted, keys, pg):
    """The README's by-hand recovery: age -d -i KEY FILE | zstd -d | pg_restore."""
    _base, _w, _r, result, db = encrypted
    assert shutil.which("age") and shutil.which("zstd"), "make test installs Debian's age and zstd"
    restored = f"{db}_byhand"
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{restored}"')
        conn.execute(f'CREATE DATABASE "{restored}"')
    cmd = (f"age -d -i {keys['identity']} {result.path} | zstd -d | "
           f"{pg.bin_dir / 'pg_restore'} --no-owner --dbname={restored}")
    env = {"PATH": "/usr/bin:/bin", **pg.libpq_env()}
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with admin_conn(pg, restored) as conn:
        assert conn.execute("SELECT count(*) FROM secrets").fetchone()[0] == 5000
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{restored}"')


def test_bad_recipient_is_a_config_error(encrypted):
    base, *_ = encrypted
    with pytest.raises(ConfigError) as exc:
        encryption_settings(base.with_changes(raw={"encryption": {"recipients": ["age1notakey"]}}))
    assert "encryption.recipients" in str(exc.value)
    with pytest.raises(ConfigError):
        encryption_settings(base.with_changes(raw={"encryption": {"passphrase": "x"}}))
