"""Security pass (reference issue 2): no secret in argv, logs, metadata, S3, the state file or output.

The embedded PostgreSQL trusts local connections; for these tests one role of our own gets
a pg_hba.conf line requiring scram-sha-256, so its password is really needed and really
comes from the .pgpass file (PGPASSFILE) or PGPASSWORD, never from anything we write.
"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.doctor import run_doctor
from opstower_core.errors import OpsError
from opstower_core.events import Status
from opstower_core.runs.history import StateStore
from support.servers import admin_conn

CLIENTS = {"pg_dump", "pg_restore", "pg_dumpall", "psql"}
SCRUB_ENV = ("PGPASSWORD", "PGPASSFILE", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE", "BACKUP_DIR",
             "OPSTOWER_STATE_DIR", "OPSTOWER_CONFIG", "S3_BUCKET", "S3_PREFIX", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
             "SLACK_WEBHOOK_URL", "ALERT_EMAIL")


@dataclass
class SecureDb:
    role: str
    password: str
    dbname: str
    passfile: Path


@pytest.fixture
def secure_db(pg, tmp_path: Path) -> Iterator[SecureDb]:
    """A role that must give its password (scram-sha-256) and a database it owns."""
    role, db = f"sec_{uuid.uuid4().hex[:8]}", f"secdb_{uuid.uuid4().hex[:8]}"
    password = f"Zq7-{uuid.uuid4().hex}-never-shown"
    hba = pg.pgdata / "pg_hba.conf"
    original = hba.read_text()
    with admin_conn(pg) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{db}" OWNER {role}')
    with admin_conn(pg, db) as conn:
        conn.execute(f"SET ROLE {role}")
        conn.execute("CREATE TABLE payments (id serial PRIMARY KEY, amount numeric, note text);"
                     "INSERT INTO payments (amount, note) SELECT g, md5(g::text) FROM generate_series(1, 3000) g;")
    hba.write_text(f"local all {role} scram-sha-256\n" + original)
    with admin_conn(pg) as conn:
        conn.execute("SELECT pg_reload_conf()")
    passfile = tmp_path / "pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"*:*:*:{role}:{password}\n".encode())
    os.close(fd)
    try:
        yield SecureDb(role, password, db, passfile)
    finally:
        hba.write_text(original)
        with admin_conn(pg) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@dataclass
class ProcWatch:
    """Polls /proc for PostgreSQL client processes and keeps their argv and environment."""

    seen: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _scan(self) -> None:
        mine = str(os.getpid())
        known: set[str] = set()
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == mine or pid in known:
                    continue
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if Path(argv[0].decode(errors="replace")).name not in CLIENTS:
                        continue
                    raw_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except (OSError, IndexError):
                    continue
                known.add(pid)
                env = dict(e.decode(errors="replace").partition("=")[::2] for e in raw_env if b"=" in e)
                self.seen.append(([a.decode(errors="replace") for a in argv if a], env))

    def __enter__(self) -> ProcWatch:
        self._thread = threading.Thread(target=self._scan, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    """A real local HTTP endpoint for alerts: (url, bodies received)."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            bodies.append(self.path.encode() + b"\n" + self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", bodies
    server.shutdown()
    server.server_close()


def test_password_reaches_no_argv_file_object_or_output(pg, s3, secure_db: SecureDb, webhook, tmp_path: Path) -> None:
    # Without the password file the role cannot connect: the password is really needed.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=pg.host, port=pg.port, user=secure_db.role, dbname=secure_db.dbname, passfile="/dev/null")

    backups, state = tmp_path / "backups", tmp_path / "state"
    prefix = f"sec{uuid.uuid4().hex[:6]}/"
    config = tmp_path / "opstower.toml"
    config.write_text(f"""backup_dir = "{backups}"
state_dir = "{state}"
pg_bin = "{pg.bin_dir}"
min_free_gb = 0
default_target = "{secure_db.dbname}"
[s3]
bucket = "{s3.bucket}"
prefix = "{prefix}"
endpoint_url = "{s3.endpoint_url}"
region = "us-east-1"
part_size_mb = 5
[targets.{secure_db.dbname}]
host = "{pg.host}"
port = {pg.port}
user = "{secure_db.role}"
passfile = "{secure_db.passfile}"
""")
    token = f"hookTok{uuid.uuid4().hex}"
    config.write_text(config.read_text() + f'[notify]\non_success = true\n[notify.webhook]\nurl = "{webhook[0]}?token={token}"\n')
    config.chmod(0o600)
    # The last health run was CRITICAL: this one (OK) is a change, so an alert goes out for real.
    StateStore(state).put("health.last", {"*": {"state": "CRITICAL", "summary": "seeded", "at": 0}})
    base_env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV}
    base_env.update(s3.env())
    mark = uuid.uuid4().hex
    base_env["OPSTOWER_TEST_MARK"] = mark  # inherited by every child: tells our processes from others'
    with_pgpassword = {**base_env, "PGPASSWORD": secure_db.password}
    runs = [
        (["backup"], base_env),
        (["backup", "--format", "plain"], with_pgpassword),  # the reference's way, once
        (["verify", "latest", "--full-test"], base_env),
        (["restore", "latest", "--plan"], base_env),
        (["list", "--json"], base_env),
        (["health"], base_env),
        (["doctor"], with_pgpassword),
    ]
    outputs: dict[str, bytes] = {}
    timings = {}
    with ProcWatch() as watch:
        for args, env in runs:
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "opstower_core", "--config", str(config), *args],
                                  capture_output=True, env=env, timeout=120)
            outputs[" ".join(args)] = proc.stdout + proc.stderr
            timings[" ".join(args)] = round(time.monotonic() - t0, 2)
            assert proc.returncode in (0, 1), (args, proc.stdout.decode()[-2000:], proc.stderr.decode()[-2000:])
            if args[0] in ("backup", "verify", "restore"):
                assert proc.returncode == 0, (args, proc.stdout.decode()[-2000:], proc.stderr.decode()[-2000:])

    secret = secure_db.password.encode()
    for name, out in outputs.items():
        assert secret not in out, f"password in the output of `opstower {name}`"
        assert token.encode() not in out, f"webhook token in the output of `opstower {name}`"
    assert webhook[1], "no alert was delivered"
    for body in webhook[1]:
        assert secret not in body.split(b"\n", 1)[1]
    assert b"PGPASSWORD is set" in outputs["doctor"]  # reference issue 2, reported without the value

    # No client process ever had the password on its command line; all read it via PGPASSFILE.
    ours = [(argv, env) for argv, env in watch.seen if env.get("OPSTOWER_TEST_MARK") == mark and "--version" not in argv]
    dumps = [argv for argv, _env in ours if Path(argv[0]).name == "pg_dump"]
    assert len(dumps) >= 2, f"pg_dump was not observed ({len(watch.seen)} client processes seen)"
    for argv, env in ours:
        assert not any(secure_db.password in a for a in argv), argv
        assert env.get("PGPASSFILE") == str(secure_db.passfile), (argv[0], env.get("PGPASSFILE"))

    # No file we wrote holds it: artifacts (also decompressed), metadata, globals, logs, state (SQLite bytes).
    files = [p for p in [*backups.rglob("*"), *state.rglob("*")] if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".sqlite3" for p in files) and any(p.parent.name == "logs" for p in files)
    for path in files:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data += gzip.decompress(data)
        assert secret not in data, f"password in {path}"
        assert token.encode() not in data, f"webhook token in {path}"

    # Nor any S3 object, its user metadata or its tags.
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
    assert any(k.endswith(".meta.json") for k in keys) and any(k.endswith(".dump.zst") for k in keys)
    for key in keys:
        body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        head = client.head_object(Bucket=s3.bucket, Key=key)
        tags = client.get_object_tagging(Bucket=s3.bucket, Key=key).get("TagSet", [])
        assert secret not in body and secure_db.password not in str(head.get("Metadata")) + str(tags), key

    # Permissions: artifacts, metadata and logs 0600; directories 0750.
    for path in files:
        if path.is_relative_to(backups) or path.suffix == ".sqlite3":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is {stat.S_IMODE(path.stat().st_mode):04o}"
    for directory in (backups, backups / "logs", state):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750, directory


def test_target_passfile_is_what_authenticates(pg, secure_db: SecureDb, tmp_path: Path, monkeypatch) -> None:
    for key in SCRUB_ENV:
        monkeypatch.delenv(key, raising=False)
    target = Target(secure_db.dbname, secure_db.dbname, host=pg.host, port=pg.port, user=secure_db.role)
    settings = Settings(backup_dir=tmp_path / "b", state_dir=tmp_path / "s", pg_bin=pg.bin_dir, min_free_gb=0.0,
                        s3=S3Settings(), targets={target.name: target}, default_target=target.name)
    # No passfile anywhere: libpq has no password to give, the backup fails and says so.
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "missing"))
    with pytest.raises(OpsError, match="password"):
        run_backup(settings, options=BackupOptions(local_only=True))
    # The target's passfile (→ PGPASSFILE for pg_dump, passfile for psycopg) is enough.
    with_file = settings.with_changes(targets={target.name: Target(**{**target.__dict__, "passfile": str(secure_db.passfile)})})
    result = run_backup(with_file, options=BackupOptions(local_only=True))
    assert result.meta["table_count"] == 1 and result.meta["row_counts"]["public.payments"] == 3000
    steps = {r.step: r for r in run_doctor(with_file)}
    assert steps["connection"].status == Status.PASS
    assert steps["credentials"].status == Status.PASS and str(secure_db.passfile) in steps["credentials"].detail
    assert secure_db.password not in repr([r.detail for r in steps.values()])

    # A password file libpq would ignore (group/other access) is a doctor warning.
    secure_db.passfile.chmod(0o640)
    steps = {r.step: r for r in run_doctor(with_file)}
    assert steps["credentials"].status == Status.WARN and "libpq ignores it" in steps["credentials"].detail


def test_secret_files_readable_by_others_warn(pg, tmp_path: Path, monkeypatch) -> None:
    for key in SCRUB_ENV:
        monkeypatch.delenv(key, raising=False)
    identity, passphrase = tmp_path / "age.key", tmp_path / "age.pass"
    identity.write_text("AGE-SECRET-KEY-1TESTONLY\n")
    passphrase.write_text("not-a-real-passphrase\n")
    identity.chmod(0o644)
    passphrase.chmod(0o600)
    target = Target("postgres", "postgres", host=pg.host, port=pg.port, user=pg.user)
    settings = Settings(backup_dir=tmp_path / "b", state_dir=tmp_path / "s", pg_bin=pg.bin_dir, min_free_gb=0.0,
                        targets={"postgres": target}, default_target="postgres",
                        raw={"encryption": {"identity_file": str(identity), "passphrase_file": str(passphrase)}})
    step = {r.step: r for r in run_doctor(settings)}["secret_files"]
    assert step.status == Status.WARN and str(identity) in step.detail and f"chmod 600 {identity}" in step.detail
    assert str(passphrase) not in step.detail.split("fix:")[0].replace(str(identity), "")
    assert "TESTONLY" not in step.detail
    identity.chmod(0o600)
    step = {r.step: r for r in run_doctor(settings)}["secret_files"]
    assert step.status == Status.PASS and "encryption.passphrase_file" in step.detail
