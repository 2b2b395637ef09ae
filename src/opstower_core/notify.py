"""Alerts for backups, verifications, health checks, restores and drills: Slack, a webhook, e-mail.

Configured in the `[notify]` table of the config file::

    [notify]
    on_success = false            # failures always alert; successes only when true
    timeout_seconds = 5

    [notify.slack]                # or just export SLACK_WEBHOOK_URL, as the reference scripts did
    webhook_url_env = "OPSTOWER_SLACK_URL"  # or webhook_url = "https://hooks.slack.com/services/…"
                                            # (SLACK_WEBHOOK_URL, when set, overrides webhook_url)

    [notify.webhook]              # any endpoint that accepts the Notification as JSON
    url_env = "OPSTOWER_WEBHOOK_URL"        # or url = "https://…"
    headers_env = "OPSTOWER_WEBHOOK_HEADERS"  # JSON object or "Name: value" lines

    [notify.email]                # or just export ALERT_EMAIL to use the local MTA on port 25
    host = "smtp.example.com"
    port = 587
    starttls = true
    ssl = false
    username = "opstower"
    password_env = "OPSTOWER_SMTP_PASSWORD"  # or password_file = "/etc/opstower/smtp-password"
    sender = "opstower@example.com"
    to = ["oncall@example.com"]

Two kinds of problem, handled differently on purpose:

* a bad TOML value (wrong type, unknown key, a literal password) raises ConfigError naming the key;
* a value missing from the environment or an unreadable password file does *not* raise, because
  cron and systemd often run with a thinner environment than the shell that was tested, and a
  missing alert secret must never stop a backup. That channel reports the problem on every
  delivery (ok=False, logged) and in `Notifier.problems()`, which `opstower doctor` can show.

No secret (webhook URL, header value, SMTP password) ever reaches a message body, a log line or
an exception: every text goes through `scrub`, and URLs are shown as `scheme://host/…`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Settings

LOG = logging.getLogger("opstower.notify")

EVENTS = ("backup", "verify", "health", "restore", "drill")
DEFAULT_TIMEOUT = 5.0

# Status words callers use, folded into three levels; anything unknown counts as a failure so an
# unexpected status alerts rather than disappears.
_SUCCESS = {"success", "succeeded", "ok", "pass", "passed", "healthy", "good"}
_WARNING = {"warning", "warn", "degraded", "cancelled", "canceled", "skip", "skipped"}
SLACK_COLORS = {"success": "good", "warning": "warning", "failure": "danger"}


def status_level(status: str) -> str:
    """Fold a status word into "success", "warning" or "failure"."""
    word = str(status).strip().lower()
    if word in _SUCCESS:
        return "success"
    if word in _WARNING:
        return "warning"
    return "failure"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in `text` with "***"."""
    # Longest first, so a URL is replaced whole before its token part would be.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: enough to tell endpoints apart, never the token in the path."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}/…"


def _url_secrets(url: str) -> list[str]:
    """The URL and the parts of it that carry a token (path, long path segments, query, password)."""
    out = [url]
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return out
    # Tokens are long: a Slack path carries one as a segment, while short paths and segments
    # ("/a", "services", "hooks") are not secret and scrubbing them would garble every message.
    if len(parts.path.strip("/")) >= 12:
        out += [parts.path, parts.path.strip("/")]
        out += [seg for seg in parts.path.split("/") if len(seg) >= 12]
    if parts.query:
        out.append(parts.query)
        # "?token=abc…": the value alone is the secret; very short values ("1") are not worth
        # garbling every message for.
        out += [value for _, value in urllib.parse.parse_qsl(parts.query) if len(value) >= 6]
    if parts.password:
        out.append(parts.password)
    return out


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class Notification:
    """One thing worth telling a human about."""

    event: str  # one of EVENTS
    status: str  # e.g. "success" / "failed" / "warning"; health: "ok" / "warning" / "critical"
    title: str  # one line, e.g. "OpsTower Backup FAILED"
    message: str  # what happened and what to do next
    database: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"Notification.event must be one of {', '.join(EVENTS)}, not {self.event!r}")

    @property
    def level(self) -> str:
        """"success", "warning" or "failure"."""
        return status_level(self.status)


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one channel's delivery; `error` is one line and holds no secret."""

    channel: str  # "slack", "webhook" or "email"
    ok: bool
    destination: str = ""  # redacted: scheme://host/… or the recipients
    error: str = ""
    seconds: float = 0.0


class DeliveryError(Exception):
    """A channel could not deliver; the message is one line for the operator."""


# --- channels ---------------------------------------------------------------------------------


class Channel:
    """One place alerts go. `problem` is set when a value it needs was missing at start-up."""

    name = "channel"

    def __init__(self, problem: str = "") -> None:
        self.problem = problem

    @property
    def destination(self) -> str:
        """Where alerts go, safe to show: a redacted URL or the recipients."""
        return ""

    def secrets(self) -> list[str]:
        """Secret values this channel holds, for `scrub`."""
        return []

    def send(self, n: Notification, clean: _Cleaner, timeout: float) -> None:
        """Deliver `n` or raise DeliveryError (one line, no secret)."""
        raise NotImplementedError


class _Cleaner:
    """Applies `scrub` to strings and to every string inside a JSON-like value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        return scrub(text, self.secrets)

    def deep(self, value: Any) -> Any:
        """A copy of `value` with every string (keys too) scrubbed."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.deep(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))  # Path, datetime, …: as text, scrubbed


def _post_json(url: str, payload: Any, headers: Mapping[str, str], timeout: float, clean: _Cleaner) -> None:
    # Scrub each string before encoding: a scrub of the JSON text would miss an escaped secret
    # and could break the JSON (a secret that is also a number in it).
    body = json.dumps(clean.deep(payload), ensure_ascii=False, default=str).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": f"opstower/{__version__}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(4096)
    except urllib.error.HTTPError as exc:
        try:
            answer = exc.read(200).decode("utf-8", "replace")
        except OSError:
            answer = ""
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}" + (f": {answer}" if answer.strip() else "")) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise DeliveryError(f"no answer within {timeout:g} s") from None
        raise DeliveryError(f"cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise DeliveryError(f"connection failed ({exc.strerror or exc})") from None


class SlackChannel(Channel):
    """A Slack incoming webhook, with the reference's payload: text + one coloured attachment."""

    name = "slack"

    def __init__(self, url: str, problem: str = "") -> None:
        super().__init__(problem)
        self.url = url

    @property
    def destination(self) -> str:
        return redact_url(self.url) if self.url else ""

    def secrets(self) -> list[str]:
        return _url_secrets(self.url) if self.url else []

    def payload(self, n: Notification) -> dict[str, Any]:
        """The JSON body Slack receives (before scrubbing)."""
        fields = [
            {"title": "Database", "value": n.database, "short": True},
            {"title": "Status", "value": n.status, "short": True},
        ]
        fields += [{"title": str(k), "value": str(v), "short": len(str(v)) < 40} for k, v in n.details.items()]
        return {
            "text": n.title,
            "attachments": [
                {
                    "color": SLACK_COLORS[n.level],
                    "fallback": f"{n.title}: {n.message}",
                    "text": n.message,
                    "fields": fields,
                    "footer": f"opstower {n.event} on {socket.gethostname()}",
                    "ts": int(time.time()),
                }
            ],
        }

    def send(self, n: Notification, clean: _Cleaner, timeout: float) -> None:
        _post_json(self.url, self.payload(n), {}, timeout, clean)


_SENSITIVE_HEADER = re.compile(r"auth|token|key|secret|signature|cookie|pass|session", re.IGNORECASE)


class WebhookChannel(Channel):
    """Any HTTP endpoint: POSTs the Notification as JSON, plus host, timestamp and level."""

    name = "webhook"

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, problem: str = "") -> None:
        super().__init__(problem)
        self.url = url
        self.headers = dict(headers or {})

    @property
    def destination(self) -> str:
        return redact_url(self.url) if self.url else ""

    def secrets(self) -> list[str]:
        out = _url_secrets(self.url) if self.url else []
        for name, value in self.headers.items():
            # Credential headers are secret whatever their length; other values only when they
            # look like a token, so "X-Team: dba" does not turn every "dba" into "***".
            if _SENSITIVE_HEADER.search(name) or len(value) >= 16:
                out.append(value)
                # "Bearer abc…": the token alone may show up in a message too.
                out += [part for part in value.split() if len(part) >= 8]
        return out

    def payload(self, n: Notification) -> dict[str, Any]:
        """The JSON body the endpoint receives (before scrubbing)."""
        body = asdict(n)
        body.update(level=n.level, host=socket.gethostname(), timestamp=int(time.time()), source="opstower")
        return body

    def send(self, n: Notification, clean: _Cleaner, timeout: float) -> None:
        _post_json(self.url, self.payload(n), self.headers, timeout, clean)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmailChannel(Channel):
    """SMTP (optionally STARTTLS or implicit TLS, optionally authenticated), plain-text body."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        to: list[str],
        sender: str,
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        problem: str = "",
    ) -> None:
        super().__init__(problem)
        self.host = host
        self.port = port
        self.to = to
        self.sender = sender
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.username = username
        self.password = password

    @property
    def destination(self) -> str:
        return f"{', '.join(self.to) or '(no recipient)'} via {self.host}:{self.port}"

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def message(self, n: Notification, clean: _Cleaner) -> EmailMessage:
        """The e-mail as it is sent (scrubbed)."""
        host = socket.gethostname()
        lines = [
            n.title,
            "",
            n.message,
            "",
            f"Event:    {n.event}",
            f"Status:   {n.status}",
            f"Database: {n.database}",
            f"Host:     {host}",
            f"Time:     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        ]
        if n.details:
            lines += ["", "Details:"] + [f"  {k}: {v}" for k, v in n.details.items()]
        lines += ["", f"-- opstower {__version__}"]
        msg = EmailMessage()
        # One line: a newline in a header would be refused (or, worse, inject headers).
        msg["Subject"] = clean(_one_line(f"[OpsTower] {n.title}", 200))
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=host)  # explicit domain: make_msgid's getfqdn() can stall on DNS
        msg.set_content(clean("\n".join(lines)) + "\n")
        return msg

    def send(self, n: Notification, clean: _Cleaner, timeout: float) -> None:
        msg = self.message(n, clean)
        context = ssl.create_default_context()
        local = socket.gethostname()  # smtplib's default getfqdn() can stall on a broken resolver
        try:
            if self.use_ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, local_hostname=local, timeout=timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=local, timeout=timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(msg)
            if refused:
                raise DeliveryError(f"server refused {', '.join(sorted(refused))}")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP login as {self.username} refused ({exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"server refused recipients {', '.join(sorted(exc.recipients))}") from None
        except smtplib.SMTPResponseException as exc:
            reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise DeliveryError(f"SMTP error {exc.smtp_code} {reply}") from None
        except TimeoutError:
            raise DeliveryError(f"no answer from {self.host}:{self.port} within {timeout:g} s") from None
        except smtplib.SMTPServerDisconnected as exc:
            if "timed out" in str(exc):  # smtplib turns a read timeout into a disconnect
                raise DeliveryError(f"no answer from {self.host}:{self.port} within {timeout:g} s") from None
            raise DeliveryError(f"SMTP server {self.host}:{self.port} hung up ({exc})") from None
        except smtplib.SMTPException as exc:
            raise DeliveryError(f"SMTP failed ({exc})") from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS failed ({exc.reason or exc})") from None
        except OSError as exc:
            raise DeliveryError(f"cannot connect to {self.host}:{self.port} ({exc.strerror or exc})") from None


# --- configuration ----------------------------------------------------------------------------

_NOTIFY_KEYS = {"on_success", "timeout_seconds", "slack", "webhook", "email"}
_SLACK_KEYS = {"webhook_url", "webhook_url_env"}
_WEBHOOK_KEYS = {"url", "url_env", "headers_env"}
_EMAIL_KEYS = {"host", "port", "starttls", "ssl", "username", "password_env", "password_file", "sender", "to"}


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"Config {key} is not a table", "nothing was run", f"write it as [{key}]")
    return dict(value)


def _check_keys(key: str, table: Mapping[str, Any], known: set[str]) -> None:
    for name in table:
        if name == "password":
            raise ConfigError(
                f"Config {key}.password is not allowed (no literal passwords in the config file)",
                "nothing was run",
                f"use {key}.password_env or {key}.password_file",
            )
        if name not in known:
            raise ConfigError(
                f"Config {key}.{name} is not a known key", "nothing was run", f"use one of: {', '.join(sorted(known))}"
            )


def _opt_str(key: str, table: Mapping[str, Any], name: str, secret: bool = False) -> str | None:
    if name not in table:
        return None
    value = table[name]
    if not isinstance(value, str) or not value.strip():
        shown = "" if secret else f" = {value!r}"
        raise ConfigError(f"Config {key}.{name}{shown} is not a non-empty string", "nothing was run", f'quote it: {name} = "..."')
    return value.strip()


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"Config {key} = {value!r} is not true or false", "nothing was run", f"set {key} = true or false")
    return value


def _check_url(key: str, url: str, secret_source: bool) -> str:
    """'' when fine, else a problem sentence; never includes the URL's token."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{key} is not an http(s) URL" + ("" if secret_source else f" ({redact_url(url)})")
    return ""


def _parse_headers(text: str) -> dict[str, str]:
    """A JSON object, or "Name: value" lines (also accepted separated by ';')."""
    text = text.strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return {str(k): str(v) for k, v in data.items()}
    headers: dict[str, str] = {}
    for line in text.replace(";", "\n").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError("a line is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _slack(raw: Mapping[str, Any] | None, env: Mapping[str, str]) -> SlackChannel | None:
    key = "notify.slack"
    table = _table(key, raw) if raw is not None else {}
    _check_keys(key, table, _SLACK_KEYS)
    literal = _opt_str(key, table, "webhook_url", secret=True)
    env_name = _opt_str(key, table, "webhook_url_env")
    if raw is None and not env.get("SLACK_WEBHOOK_URL"):
        return None  # not configured at all
    if literal and env_name:
        raise ConfigError(
            f"Config {key}.webhook_url and {key}.webhook_url_env are both set", "nothing was run", "keep only one"
        )
    url, problem = "", ""
    if env_name:
        url = env.get(env_name, "").strip()
        source = f"{key}.webhook_url_env ({env_name})"
        if not url:
            problem = f"{source} names an environment variable that is not set"
    elif env.get("SLACK_WEBHOOK_URL", "").strip():  # environment > TOML, as everywhere in the config
        url, source = env["SLACK_WEBHOOK_URL"].strip(), "SLACK_WEBHOOK_URL"
    elif literal:
        url, source = literal, f"{key}.webhook_url"
        if _check_url(source, url, True):
            raise ConfigError(f"Config {source} is not an http(s) URL", "nothing was run", "paste the full webhook URL")
    else:
        problem = f"{key} has no webhook_url and SLACK_WEBHOOK_URL is not set"
    if url and not problem:
        problem = _check_url(source, url, True)
        if problem:
            url = ""
    return SlackChannel(url, problem)


def _webhook(raw: Mapping[str, Any], env: Mapping[str, str]) -> WebhookChannel:
    key = "notify.webhook"
    table = _table(key, raw)
    _check_keys(key, table, _WEBHOOK_KEYS)
    literal = _opt_str(key, table, "url", secret=True)
    env_name = _opt_str(key, table, "url_env")
    headers_env = _opt_str(key, table, "headers_env")
    if literal and env_name:
        raise ConfigError(f"Config {key}.url and {key}.url_env are both set", "nothing was run", "keep only one")
    if not literal and not env_name:
        raise ConfigError(f"Config {key}.url is missing", "nothing was run", f"set {key}.url or {key}.url_env")
    problems: list[str] = []
    url = ""
    if literal:
        if _check_url(f"{key}.url", literal, True):
            raise ConfigError(f"Config {key}.url is not an http(s) URL", "nothing was run", "write the full https:// URL")
        url = literal
    else:
        url = env.get(str(env_name), "").strip()
        source = f"{key}.url_env ({env_name})"
        if not url:
            problems.append(f"{source} names an environment variable that is not set")
        elif problem := _check_url(source, url, True):
            problems.append(problem)
            url = ""
    headers: dict[str, str] = {}
    if headers_env:
        text = env.get(headers_env, "")
        source = f"{key}.headers_env ({headers_env})"
        if not text.strip():
            problems.append(f"{source} names an environment variable that is not set")
        else:
            try:
                headers = _parse_headers(text)
            except ValueError:  # the value is secret: say what is wrong, never what it is
                problems.append(f"{source} is neither a JSON object nor 'Name: value' lines")
    return WebhookChannel(url, headers, "; ".join(problems))


def _recipients(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        items = value.replace(";", ",").split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise ConfigError(
            f"Config {key} = {value!r} is not an address or a list of addresses",
            "nothing was run",
            f'write {key} = ["oncall@example.com"]',
        )
    return [item.strip() for item in items if item.strip()]


def _email(raw: Mapping[str, Any] | None, env: Mapping[str, str]) -> EmailChannel | None:
    key = "notify.email"
    alert_email = env.get("ALERT_EMAIL", "").strip()
    if raw is None and not alert_email:
        return None
    # ALERT_EMAIL alone means what the reference's `mail` did: hand it to the local MTA.
    table = _table(key, raw) if raw is not None else {}
    _check_keys(key, table, _EMAIL_KEYS)
    host = _opt_str(key, table, "host") or "localhost"
    starttls = _bool(f"{key}.starttls", table.get("starttls", False))
    use_ssl = _bool(f"{key}.ssl", table.get("ssl", False))
    if starttls and use_ssl:
        raise ConfigError(
            f"Config {key}.starttls and {key}.ssl are both true", "nothing was run",
            "use ssl = true for port 465 or starttls = true for port 587, not both",
        )
    port_raw = table.get("port", 465 if use_ssl else 587 if starttls else 25)
    if isinstance(port_raw, bool) or not isinstance(port_raw, int) or not 0 < port_raw < 65536:
        raise ConfigError(f"Config {key}.port = {port_raw!r} is not a TCP port", "nothing was run", "use a number 1-65535")
    username = _opt_str(key, table, "username")
    password_env = _opt_str(key, table, "password_env")
    password_file = _opt_str(key, table, "password_file")
    if password_env and password_file:
        raise ConfigError(
            f"Config {key}.password_env and {key}.password_file are both set", "nothing was run", "keep only one"
        )
    if (password_env or password_file) and not username:
        raise ConfigError(f"Config {key}.username is missing", "nothing was run", f"set {key}.username for SMTP login")
    if username and not (password_env or password_file):
        raise ConfigError(
            f"Config {key}.password_env is missing (username is set)", "nothing was run",
            f"set {key}.password_env or {key}.password_file",
        )
    if username and not (starttls or use_ssl) and not _is_loopback(host):
        # smtplib would send the password in clear text over the network.
        raise ConfigError(
            f"Config {key}.starttls is false while {key}.username is set for {host}",
            "the password would cross the network unencrypted",
            f"set {key}.starttls = true (port 587) or {key}.ssl = true (port 465)",
        )
    to = _recipients(f"{key}.to", table["to"]) if "to" in table else []
    if alert_email:  # environment > TOML, as everywhere in the config
        to = _recipients("ALERT_EMAIL", alert_email)
    sender = _opt_str(key, table, "sender") or f"opstower@{socket.gethostname()}"

    problems: list[str] = []
    if not to:
        problems.append(f"{key}.to is not set and ALERT_EMAIL is empty")
    password: str | None = None
    if password_env:
        password = env.get(password_env) or None
        if password is None:
            problems.append(f"{key}.password_env ({password_env}) names an environment variable that is not set")
    elif password_file:
        path = Path(password_file).expanduser()
        try:
            password = path.read_text(encoding="utf-8").strip() or None
            if password is None:
                problems.append(f"{key}.password_file ({path}) is empty")
            elif path.stat().st_mode & 0o077:
                LOG.warning("%s.password_file %s is readable by other users; chmod 600 it", key, path)
        except OSError as exc:
            problems.append(f"{key}.password_file ({path}) cannot be read ({exc.strerror})")
    return EmailChannel(
        host=host, port=port_raw, to=to, sender=sender, starttls=starttls, use_ssl=use_ssl,
        username=username, password=password, problem="; ".join(problems),
    )


# --- the notifier -----------------------------------------------------------------------------


class Notifier:
    """Sends a Notification to every configured channel; never raises for a delivery failure."""

    def __init__(
        self,
        channels: Iterable[Channel] = (),
        on_success: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        state_dir: Path | None = None,
    ) -> None:
        self.channels = list(channels)
        self.on_success = on_success
        self.timeout = timeout
        self.state_dir = state_dir
        self._health: dict[str, str] = {}  # used when there is no state_dir

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Notifier:
        """Build from `[notify]` and the environment; ConfigError (naming the key) for a bad table."""
        env = os.environ if env is None else env
        raw = settings.raw.get("notify", {})
        table = _table("notify", raw)
        _check_keys("notify", table, _NOTIFY_KEYS)
        on_success = _bool("notify.on_success", table.get("on_success", False))
        timeout = table.get("timeout_seconds", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
            raise ConfigError(
                f"Config notify.timeout_seconds = {timeout!r} is out of range", "nothing was run", "use 1-120 seconds"
            )
        channels: list[Channel] = []
        if slack := _slack(table.get("slack"), env):
            channels.append(slack)
        if "webhook" in table:
            channels.append(_webhook(table["webhook"], env))
        if email := _email(table.get("email"), env):
            channels.append(email)
        return cls(channels, on_success=on_success, timeout=float(timeout), state_dir=settings.state_dir)

    @property
    def secrets(self) -> list[str]:
        """Every secret value the channels hold, for `scrub`."""
        return [s for ch in self.channels for s in ch.secrets()]

    def problems(self) -> list[str]:
        """Configuration problems found at start-up (missing environment variables, unreadable files)."""
        return [f"{ch.name}: {ch.problem}" for ch in self.channels if ch.problem]

    # Health state: remembered per database so a check every 15 minutes alerts on a change only.

    def _health_key(self, database: str) -> str:
        return f"notify.health.{database or '-'}"

    def _last_health(self, database: str) -> str | None:
        if self.state_dir is None:
            return self._health.get(database)
        try:
            from .state import StateStore

            value = StateStore(self.state_dir).get(self._health_key(database))
        except Exception as exc:  # an unreadable state file must not stop an alert
            LOG.warning("cannot read the last health state (%s); treating this check as a change", _one_line(exc))
            return None
        return value if isinstance(value, str) else None

    def _remember_health(self, database: str, level: str) -> None:
        self._health[database] = level
        if self.state_dir is None:
            return
        try:
            from .state import StateStore

            StateStore(self.state_dir).put(self._health_key(database), level)
        except Exception as exc:  # the alert went out; a later duplicate is the lesser harm
            LOG.warning("cannot record the health state (%s); the next check may alert again", _one_line(exc))

    def should_send(self, event: str, status: str, database: str = "") -> bool:
        """Failures and warnings always; successes only with on_success; health on a state change.

        A first health check alerts only when it is not OK. An unchanged health state (OK or
        not) does not alert again, so a 15-minute timer does not page every 15 minutes.
        """
        if event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, not {event!r}")
        level = status_level(status)
        if event == "health":
            last = self._last_health(database)
            return level != "success" if last is None else last != level
        return level != "success" or self.on_success

    def notify(self, n: Notification, force: bool = False) -> list[DeliveryResult]:
        """Send `n` to every channel (unless should_send says no and not `force`); one result each."""
        if not force and not self.should_send(n.event, n.status, n.database):
            LOG.debug("not sending %s %s for %s (policy)", n.event, n.status, n.database)
            return []
        clean = _Cleaner(self.secrets)
        results = [self._deliver(channel, n, clean) for channel in self.channels]
        if n.event == "health" and (not results or any(r.ok for r in results)):
            # Not remembered when every channel failed, so the next check tries again.
            self._remember_health(n.database, n.level)
        return results

    def _deliver(self, channel: Channel, n: Notification, clean: _Cleaner) -> DeliveryResult:
        t0 = time.monotonic()
        destination = clean(channel.destination)
        try:
            if channel.problem:
                raise DeliveryError(f"not configured: {channel.problem}")
            channel.send(n, clean, self.timeout)
        except DeliveryError as exc:
            error = clean(_one_line(str(exc)))
        except Exception as exc:  # a broken channel must never break the run it reports on
            error = clean(_one_line(f"{type(exc).__name__}: {exc}"))
        else:
            seconds = time.monotonic() - t0
            LOG.info("sent %s %s alert for %s to %s %s", n.event, n.status, n.database, channel.name, destination)
            return DeliveryResult(channel.name, True, destination, "", seconds)
        seconds = time.monotonic() - t0
        LOG.warning("could not send %s alert to %s %s: %s", n.event, channel.name, destination, error)
        return DeliveryResult(channel.name, False, destination, error, seconds)


def send_safely(settings: Settings, event: str, status: str, title: str, message: str, database: str,
                details: dict[str, Any] | None = None, force: bool = False) -> list[DeliveryResult]:
    """Notify from the end of a run (policy applies unless `force`); nothing here can fail the run."""
    try:
        notifier = Notifier.from_settings(settings)
        if not notifier.channels:
            return []
        return notifier.notify(Notification(event, status, title, message, database, dict(details or {})),
                               force=force)
    except Exception as exc:  # noqa: BLE001 - a bad [notify] table or a broken channel is only logged
        LOG.warning("notification not sent (%s)", _one_line(str(exc)))
        return []
