"""The places alerts go: a Slack incoming webhook, any JSON webhook, and SMTP e-mail.

Each channel turns a `Notification` into what its endpoint expects and delivers it, or raises
`DeliveryError` with one line for the operator that holds no secret. Channels know which of
their values are secret (`Channel.secrets`) and show their endpoint only redacted
(`redact_url`), so `notify.Notifier` can scrub every text before it leaves the process. They
are built from the `[notify]` table by `notify_config`; nothing here reads the environment.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from opstower_core import __version__
from opstower_core.alerts.message import Cleaner, Notification

if TYPE_CHECKING:  # smtplib, ssl and email are imported when an e-mail is sent: ~0.05 s off every command's start
    from email.message import EmailMessage

SLACK_COLORS = {"success": "good", "warning": "warning", "failure": "danger"}


class DeliveryError(Exception):
    """A channel could not deliver; the message is one line for the operator."""


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


def one_line(text: str, limit: int = 240) -> str:
    """`text` on one line (white space folded), cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


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

    def send(self, n: Notification, clean: Cleaner, timeout: float) -> None:
        """Deliver `n` or raise DeliveryError (one line, no secret)."""
        raise NotImplementedError


def _post_json(url: str, payload: Any, headers: Mapping[str, str], timeout: float, clean: Cleaner) -> None:
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

    def send(self, n: Notification, clean: Cleaner, timeout: float) -> None:
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

    def send(self, n: Notification, clean: Cleaner, timeout: float) -> None:
        _post_json(self.url, self.payload(n), self.headers, timeout, clean)


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

    def message(self, n: Notification, clean: Cleaner) -> EmailMessage:
        """The e-mail as it is sent (scrubbed)."""
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

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
        msg["Subject"] = clean(one_line(f"[OpsTower] {n.title}", 200))
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=host)  # explicit domain: make_msgid's getfqdn() can stall on DNS
        msg.set_content(clean("\n".join(lines)) + "\n")
        return msg

    def send(self, n: Notification, clean: Cleaner, timeout: float) -> None:
        import smtplib
        import ssl

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
