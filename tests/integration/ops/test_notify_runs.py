"""Runs notify for real: backup failure/success and verification failure reach a local webhook."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from opstower_core.backup import run_backup
from opstower_core.config import Target
from opstower_core.errors import OpsError
from opstower_core.verify import verify
from support.servers import create_database


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook/secret-token-123", received
    server.shutdown()


def test_backup_and_verify_outcomes_are_notified(make_settings, pg, webhook):
    url, received = webhook
    db = f"ntf_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
    settings = make_settings(db).with_changes(raw={"notify": {"webhook": {"url": url}}})

    ok = run_backup(settings)
    assert received == []  # success is quiet unless on_success

    loud = settings.with_changes(raw={"notify": {"on_success": True, "webhook": {"url": url}}})
    run_backup(loud)
    assert received[-1]["event"] == "backup" and received[-1]["status"] == "success"

    broken = settings.with_changes(targets={db: Target(db, f"{db}_missing", host=pg.host, port=pg.port, user=pg.user)})
    with pytest.raises(OpsError):
        run_backup(broken)
    failure = received[-1]
    assert failure["event"] == "backup" and failure["status"] == "failed"
    assert "does not exist" in failure["message"]

    damaged = ok.path.read_bytes()
    ok.path.write_bytes(damaged[: len(damaged) // 2])
    assert not verify(settings, ok.path).ok
    assert received[-1]["event"] == "verify" and received[-1]["status"] == "failed"
    assert "truncated" in received[-1]["message"]
    assert all("secret-token-123" not in json.dumps(r) for r in received)


def test_a_finished_restore_is_always_notified(make_settings, pg, webhook):
    from opstower_core.restore import RestoreOptions, plan_restore, run_restore

    url, received = webhook
    db = f"ntr_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
    settings = make_settings(db).with_changes(raw={"notify": {"webhook": {"url": url}}})
    backup = run_backup(settings)
    plan = plan_restore(settings, backup.path, options=RestoreOptions(target_db=f"{db}_copy", force=True))
    result = run_restore(settings, plan)
    assert result.ok, result.sentence
    assert received[-1]["event"] == "restore" and received[-1]["status"] == "success"
    assert f"{db}_copy" in received[-1]["title"]
