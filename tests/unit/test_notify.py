"""Alerts against real local servers: an HTTP server for Slack/webhook, a small SMTP server for e-mail."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opstower_core.alerts import Notification, Notifier, redact_url, scrub
from opstower_core.config import Settings
from opstower_core.errors import ConfigError

SLACK_TOKEN = "XoXbSeCrEtToKeN1234567890"
HOOK_TOKEN = "hookSecretQueryToken987654"
BEARER = "bearer-secret-abcdef123456"
SMTP_PASSWORD = "smtp-Pa55word-never-shown"


# --- real local servers -----------------------------------------------------------------------


@dataclass
class HttpCapture:
    base: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def http_server() -> Iterator[HttpCapture]:
    capture = HttpCapture(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            capture.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(capture.status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if capture.status == 200 else b"invalid_token")

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    capture.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield capture
    server.shutdown()
    server.server_close()


@dataclass
class SmtpCapture:
    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Enough SMTP for smtplib: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    capture: SmtpCapture

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.reply("220 localhost test ESMTP")
        sender, rcpts = "", []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-localhost")
                self.reply("250-AUTH PLAIN")
                self.reply("250 8BITMIME")
            elif verb == "HELO":
                self.reply("250 localhost")
            elif verb == "AUTH":
                parts = line.split()
                token = parts[2] if len(parts) > 2 else ""
                if not token:
                    self.reply("334 ")
                    token = self.rfile.readline().decode().strip()
                _, user, password = base64.b64decode(token).decode().split("\0")
                self.capture.logins.append((user, password))
                self.reply("235 2.7.0 Authentication successful")
            elif verb == "MAIL":
                sender, rcpts = line[10:].strip(), []
                self.reply("250 OK")
            elif verb == "RCPT":
                rcpts.append(line[8:].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = b""
                while True:
                    chunk = self.rfile.readline()
                    if chunk in (b".\r\n", b""):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk  # undo dot-stuffing
                self.capture.messages.append({"from": sender, "to": rcpts, "data": data})
                self.reply("250 OK queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


@pytest.fixture
def smtp_server() -> Iterator[SmtpCapture]:
    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    capture = SmtpCapture(port=0)
    handler = type("Handler", (_SmtpHandler,), {"capture": capture})
    server = Server(("127.0.0.1", 0), handler)
    capture.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield capture
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_with(notify: dict[str, Any], tmp_path: Path) -> Settings:
    return Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", raw={"notify": notify})


def failure(**changes: Any) -> Notification:
    values: dict[str, Any] = dict(
        event="backup", status="failed", title="OpsTower Backup FAILED",
        message="pg_dump exited 1: connection refused. Check that PostgreSQL is up, then rerun opstower backup.",
        database="opstower", details={"artifact": "opstower_20260207_143000.sql.gz", "seconds": 3.2},
    )
    values.update(changes)
    return Notification(**values)


# --- delivery ---------------------------------------------------------------------------------


def test_slack_receives_reference_payload(http_server: HttpCapture, tmp_path: Path) -> None:
    url = f"{http_server.base}/services/T000/B000/{SLACK_TOKEN}"
    notifier = Notifier.from_settings(settings_with({"slack": {"webhook_url_env": "TEST_SLACK"}}, tmp_path),
                                      env={"TEST_SLACK": url})
    results = notifier.notify(failure())

    assert [(r.channel, r.ok) for r in results] == [("slack", True)]
    assert results[0].destination == f"{http_server.base}/…"
    (request,) = http_server.requests
    assert request["path"] == f"/services/T000/B000/{SLACK_TOKEN}"
    assert request["headers"]["Content-Type"].startswith("application/json")
    body = json.loads(request["body"])
    assert body["text"] == "OpsTower Backup FAILED"
    (attachment,) = body["attachments"]
    assert attachment["color"] == "danger"
    assert "connection refused" in attachment["text"]
    assert isinstance(attachment["ts"], int) and abs(attachment["ts"] - time.time()) < 60
    assert {"title": "Database", "value": "opstower", "short": True} in attachment["fields"]


@pytest.mark.parametrize(("status", "color"), [("success", "good"), ("warning", "warning"), ("FAIL", "danger")])
def test_slack_colours(http_server: HttpCapture, tmp_path: Path, status: str, color: str) -> None:
    notifier = Notifier.from_settings(
        settings_with({"on_success": True, "slack": {"webhook_url": f"{http_server.base}/hook"}}, tmp_path), env={}
    )
    notifier.notify(failure(status=status))
    assert json.loads(http_server.requests[0]["body"])["attachments"][0]["color"] == color


def test_slack_webhook_url_from_reference_env(http_server: HttpCapture, tmp_path: Path) -> None:
    # No [notify.slack] table at all: SLACK_WEBHOOK_URL alone enables Slack, as in the reference.
    notifier = Notifier.from_settings(settings_with({}, tmp_path), env={"SLACK_WEBHOOK_URL": f"{http_server.base}/x"})
    assert [r.ok for r in notifier.notify(failure())] == [True]
    assert len(http_server.requests) == 1


def test_webhook_receives_notification_json_with_headers(http_server: HttpCapture, tmp_path: Path) -> None:
    cfg = {"webhook": {"url": f"{http_server.base}/alerts?token={HOOK_TOKEN}", "headers_env": "HOOK_HEADERS"}}
    env = {"HOOK_HEADERS": json.dumps({"Authorization": f"Bearer {BEARER}", "X-Team": "dba"})}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env=env)
    n = failure(event="verify", status="FAIL", title="OpsTower Verify FAILED", details={"failed_tests": ["gzip"]})

    (result,) = notifier.notify(n)

    assert result.ok and result.channel == "webhook"
    (request,) = http_server.requests
    assert request["headers"]["Authorization"] == f"Bearer {BEARER}"
    assert request["headers"]["X-Team"] == "dba"
    body = json.loads(request["body"])
    for key in ("event", "status", "title", "message", "database"):
        assert body[key] == getattr(n, key)
    assert body["details"] == {"failed_tests": ["gzip"]}
    assert body["level"] == "failure" and body["source"] == "opstower" and body["host"]


def test_headers_env_as_lines(http_server: HttpCapture, tmp_path: Path) -> None:
    cfg = {"webhook": {"url_env": "HOOK_URL", "headers_env": "HOOK_HEADERS"}}
    env = {"HOOK_URL": f"{http_server.base}/a", "HOOK_HEADERS": "X-One: 1\nX-Two: two words\nX-Api-Key: k1"}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env=env)
    n = failure(message="exit 1 after 10 s", details={"k1": 1})
    assert notifier.notify(n)[0].ok
    headers = http_server.requests[0]["headers"]
    assert headers["X-One"] == "1" and headers["X-Two"] == "two words" and headers["X-Api-Key"] == "k1"
    body = json.loads(http_server.requests[0]["body"])  # still valid JSON after scrubbing
    # Ordinary header values are not secrets; a credential header's value is, however short.
    assert body["message"] == "exit 1 after 10 s"
    assert body["details"] == {"***": 1}


def test_email_arrives_with_subject_and_body(smtp_server: SmtpCapture, tmp_path: Path) -> None:
    cfg = {
        "email": {
            "host": "127.0.0.1", "port": smtp_server.port, "username": "opstower", "password_env": "SMTP_PW",
            "sender": "opstower@example.test", "to": ["oncall@example.test", "dba@example.test"],
        }
    }
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={"SMTP_PW": SMTP_PASSWORD})
    (result,) = notifier.notify(failure())

    assert result.ok, result.error
    assert smtp_server.logins == [("opstower", SMTP_PASSWORD)]
    (msg,) = smtp_server.messages
    assert msg["to"] == ["<oncall@example.test>", "<dba@example.test>"]
    parsed = email.message_from_bytes(msg["data"], policy=email.policy.default)
    assert parsed["Subject"] == "[OpsTower] OpsTower Backup FAILED"
    assert parsed["From"] == "opstower@example.test"
    body = parsed.get_content()
    assert "pg_dump exited 1: connection refused" in body
    assert "Database: opstower" in body
    assert "artifact: opstower_20260207_143000.sql.gz" in body


def test_alert_email_env_uses_local_mta(smtp_server: SmtpCapture, tmp_path: Path) -> None:
    # ALERT_EMAIL overrides notify.email.to (environment > TOML).
    cfg = {"email": {"host": "127.0.0.1", "port": smtp_server.port, "to": "ignored@example.test"}}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={"ALERT_EMAIL": "a@x.test, b@x.test"})
    assert notifier.notify(failure())[0].ok
    assert smtp_server.messages[0]["to"] == ["<a@x.test>", "<b@x.test>"]


def test_password_file(smtp_server: SmtpCapture, tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(SMTP_PASSWORD + "\n")
    secret.chmod(0o600)
    cfg = {"email": {"host": "localhost", "port": smtp_server.port, "username": "u", "password_file": str(secret),
                     "to": "oncall@example.test"}}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={})
    assert notifier.notify(failure())[0].ok
    assert smtp_server.logins == [("u", SMTP_PASSWORD)]


def test_all_channels_get_the_same_alert(http_server: HttpCapture, smtp_server: SmtpCapture, tmp_path: Path) -> None:
    cfg = {
        "slack": {"webhook_url": f"{http_server.base}/slack"},
        "webhook": {"url": f"{http_server.base}/hook"},
        "email": {"host": "127.0.0.1", "port": smtp_server.port, "to": "oncall@example.test"},
    }
    results = Notifier.from_settings(settings_with(cfg, tmp_path), env={}).notify(failure())
    assert [(r.channel, r.ok) for r in results] == [("slack", True), ("webhook", True), ("email", True)]
    assert sorted(r["path"] for r in http_server.requests) == ["/hook", "/slack"]
    assert len(smtp_server.messages) == 1


# --- failures never raise ---------------------------------------------------------------------


def test_closed_port_fails_fast_without_raising(
    http_server: HttpCapture, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = closed_port()
    cfg = {
        "slack": {"webhook_url": f"http://127.0.0.1:{dead}/services/T0/B0/{SLACK_TOKEN}"},
        "webhook": {"url": f"{http_server.base}/hook"},  # a working channel after the dead one
        "email": {"host": "127.0.0.1", "port": closed_port(), "to": "oncall@example.test"},
    }
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={})
    caplog.set_level(logging.INFO, logger="opstower.notify")

    t0 = time.monotonic()
    results = notifier.notify(failure())
    elapsed = time.monotonic() - t0

    assert elapsed < 3.0  # connection refused is immediate; no 5 s timeout waited
    by_channel = {r.channel: r for r in results}
    assert by_channel["webhook"].ok
    for name in ("slack", "email"):
        result = by_channel[name]
        assert not result.ok
        assert result.error and "\n" not in result.error
        assert "connect" in result.error.lower()
    assert by_channel["slack"].destination == f"http://127.0.0.1:{dead}/…"
    assert SLACK_TOKEN not in json.dumps([r.__dict__ for r in results])
    failures = [r for r in caplog.records if r.name == "opstower.notify" and r.levelno == logging.WARNING]
    assert len(failures) == 2
    assert f"http://127.0.0.1:{dead}/…" in caplog.text
    assert SLACK_TOKEN not in caplog.text


def test_silent_server_times_out(tmp_path: Path) -> None:
    # A listener that never answers (connections wait in the backlog): the timeout bounds the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        cfg = {"timeout_seconds": 1, "webhook": {"url": f"http://127.0.0.1:{port}/h"},
               "email": {"host": "127.0.0.1", "port": port, "to": "oncall@example.test"}}
        notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={})
        t0 = time.monotonic()
        results = notifier.notify(failure())
        elapsed = time.monotonic() - t0
    assert [r.ok for r in results] == [False, False]
    assert all("within 1 s" in r.error for r in results), results
    assert elapsed < 4.0


def test_http_error_status_is_reported(http_server: HttpCapture, tmp_path: Path) -> None:
    http_server.status = 403
    notifier = Notifier.from_settings(settings_with({"slack": {"webhook_url": f"{http_server.base}/s"}}, tmp_path), env={})
    (result,) = notifier.notify(failure())
    assert not result.ok
    assert result.error.startswith("HTTP 403") and "invalid_token" in result.error


def test_missing_env_secret_is_a_delivery_problem_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"slack": {"webhook_url_env": "UNSET_SLACK"},
           "email": {"host": "smtp.example.test", "starttls": True, "username": "u", "password_env": "UNSET_PW",
                     "to": "x@example.test"}}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={})
    problems = notifier.problems()
    assert any("UNSET_SLACK" in p for p in problems) and any("UNSET_PW" in p for p in problems)
    with caplog.at_level(logging.WARNING, logger="opstower.notify"):
        results = notifier.notify(failure())
    assert [r.ok for r in results] == [False, False]
    assert "UNSET_SLACK" in results[0].error and "UNSET_PW" in results[1].error
    assert "UNSET_SLACK" in caplog.text


# --- policy -----------------------------------------------------------------------------------


def test_on_success_false_suppresses_successes(http_server: HttpCapture, tmp_path: Path) -> None:
    notifier = Notifier.from_settings(settings_with({"webhook": {"url": f"{http_server.base}/h"}}, tmp_path), env={})
    assert notifier.on_success is False
    assert notifier.notify(failure(status="success", title="OpsTower Backup SUCCESS")) == []
    assert http_server.requests == []
    assert notifier.should_send("backup", "failed") and notifier.should_send("restore", "warning")
    assert not notifier.should_send("drill", "PASS")
    # force=True: a test alert from the console or doctor goes out regardless.
    assert notifier.notify(failure(status="success"), force=True)[0].ok
    assert len(http_server.requests) == 1


def test_on_success_true_sends_successes(http_server: HttpCapture, tmp_path: Path) -> None:
    cfg = {"on_success": True, "webhook": {"url": f"{http_server.base}/h"}}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env={})
    assert notifier.notify(failure(status="success"))[0].ok
    assert json.loads(http_server.requests[0]["body"])["status"] == "success"


def test_health_alerts_on_state_changes_only(http_server: HttpCapture, tmp_path: Path) -> None:
    settings = settings_with({"webhook": {"url": f"{http_server.base}/h"}}, tmp_path)

    def check(status: str) -> int:
        # A new Notifier each time, as each `opstower health` run is a new process.
        n = Notification("health", status, f"OpsTower health {status}", "backup age", "opstower", {})
        return len(Notifier.from_settings(settings, env={}).notify(n))

    assert check("ok") == 0  # first check, healthy: nothing to say
    assert check("ok") == 0
    assert check("critical") == 1  # change: alert
    assert check("critical") == 0  # unchanged: no page every 15 minutes
    assert check("warning") == 1
    assert check("ok") == 1  # recovery is a change too
    assert check("ok") == 0
    assert [json.loads(r["body"])["status"] for r in http_server.requests] == ["critical", "warning", "ok"]


def test_health_state_not_recorded_when_delivery_failed(tmp_path: Path) -> None:
    settings = settings_with({"webhook": {"url": f"http://127.0.0.1:{closed_port()}/h"}}, tmp_path)
    n = Notification("health", "critical", "OpsTower health CRITICAL", "backup is 5 hours old", "opstower", {})
    assert not Notifier.from_settings(settings, env={}).notify(n)[0].ok
    # Still critical, still unsent: the next check tries again.
    assert Notifier.from_settings(settings, env={}).should_send("health", "critical", "opstower")


def test_unknown_event_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Notification("vacuum", "failed", "t", "m", "db", {})


# --- secrets ----------------------------------------------------------------------------------


def test_scrub_and_redact() -> None:
    assert scrub("token abc123 and abc123xyz", ["abc123", "", "abc123xyz"]) == "token *** and ***"
    assert redact_url(f"https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}") == "https://hooks.slack.com/…"
    assert redact_url("https://user:pw@example.com:8443/x?y=1") == "https://example.com:8443/…"


def test_secrets_never_reach_bodies_or_logs(
    http_server: HttpCapture, smtp_server: SmtpCapture, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slack_url = f"{http_server.base}/services/T000/B000/{SLACK_TOKEN}"
    hook_url = f"{http_server.base}/alerts?token={HOOK_TOKEN}"
    cfg = {
        "on_success": True,
        "slack": {"webhook_url_env": "S"},
        "webhook": {"url_env": "W", "headers_env": "H"},
        "email": {"host": "127.0.0.1", "port": smtp_server.port, "username": "ops", "password_env": "P",
                  "to": "oncall@example.test"},
        "timeout_seconds": 2,
    }
    env = {"S": slack_url, "W": hook_url, "H": f"Authorization: Bearer {BEARER}", "P": SMTP_PASSWORD}
    notifier = Notifier.from_settings(settings_with(cfg, tmp_path), env=env)
    secrets = [SLACK_TOKEN, HOOK_TOKEN, BEARER, SMTP_PASSWORD]
    # A careless caller pastes every secret into the alert (e.g. a command line or an error text).
    leaky = failure(
        title=f"Backup failed {SMTP_PASSWORD}",
        message=f"curl -X POST {slack_url} failed; hook {hook_url}; token {SLACK_TOKEN}; pw={SMTP_PASSWORD}",
        details={"auth": f"Bearer {BEARER}", "nested": {"k": [HOOK_TOKEN]}, SMTP_PASSWORD: "as a key"},
    )
    caplog.set_level(logging.DEBUG, logger="opstower.notify")

    results = notifier.notify(leaky)
    assert all(r.ok for r in results), results

    delivered = [r["body"] for r in http_server.requests] + [m["data"] for m in smtp_server.messages]
    assert len(delivered) == 3
    for blob in delivered:
        text = blob.decode("utf-8")
        assert "***" in text
        for secret in secrets:
            assert secret not in text
    subject = email.message_from_bytes(smtp_server.messages[0]["data"], policy=email.policy.default)["Subject"]
    assert subject == "[OpsTower] Backup failed ***"

    # Now the failure path: every channel down, errors logged.
    http_server.status = 500
    dead = closed_port()
    env_dead = dict(env, S=f"http://127.0.0.1:{dead}/services/T000/B000/{SLACK_TOKEN}")
    Notifier.from_settings(settings_with(cfg, tmp_path), env=env_dead).notify(leaky)
    for secret in secrets:
        assert secret not in caplog.text
    assert "could not send" in caplog.text


# --- configuration errors name the key --------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "key"),
    [
        ({"on_success": "yes"}, "notify.on_success"),
        ({"timeout_seconds": 0}, "notify.timeout_seconds"),
        ({"pager": {}}, "notify.pager"),
        ({"slack": "https://hooks.slack.com/x"}, "notify.slack"),
        ({"slack": {"webhook_url": "ftp://hooks.example/T/B/" + SLACK_TOKEN}}, "notify.slack.webhook_url"),
        ({"slack": {"webhook_url": "https://h/x", "webhook_url_env": "X"}}, "notify.slack.webhook_url_env"),
        ({"webhook": {}}, "notify.webhook.url"),
        ({"webhook": {"url": 42}}, "notify.webhook.url"),
        ({"email": {"to": "a@x", "password": SMTP_PASSWORD}}, "notify.email.password"),
        ({"email": {"to": "a@x", "port": "25"}}, "notify.email.port"),
        ({"email": {"to": "a@x", "starttls": "true"}}, "notify.email.starttls"),
        ({"email": {"to": "a@x", "ssl": True, "starttls": True}}, "notify.email.starttls"),
        ({"email": {"to": 7}}, "notify.email.to"),
        ({"email": {"to": "a@x", "username": "u"}}, "notify.email.password_env"),
        ({"email": {"to": "a@x", "password_env": "P"}}, "notify.email.username"),
        # a password would cross the network in clear text
        ({"email": {"host": "smtp.example.com", "to": "a@x", "username": "u", "password_env": "P"}},
         "notify.email.starttls"),
    ],
)
def test_bad_config_names_the_key(notify: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Notifier.from_settings(settings_with(notify, tmp_path), env={})
    message = str(info.value)
    assert key in message
    assert SLACK_TOKEN not in message and SMTP_PASSWORD not in message
    assert "\n" not in message


def test_notify_section_must_be_a_table(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, raw={"notify": "slack"})
    with pytest.raises(ConfigError, match=r"notify is not a table"):
        Notifier.from_settings(settings, env={})


def test_nothing_configured_sends_nothing(tmp_path: Path) -> None:
    notifier = Notifier.from_settings(settings_with({}, tmp_path), env={})
    assert notifier.channels == [] and notifier.notify(failure()) == []
