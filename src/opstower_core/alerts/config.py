"""Reading the `[notify]` table of the config file into the channels alerts go to.

Configured like this::

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
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opstower_core.alerts.channels import Channel, EmailChannel, SlackChannel, WebhookChannel, redact_url
from opstower_core.errors import ConfigError

LOG = logging.getLogger("opstower.notify")  # the notifier's logger: config warnings belong with its alerts

DEFAULT_TIMEOUT = 5.0

_NOTIFY_KEYS = {"on_success", "timeout_seconds", "slack", "webhook", "email"}
_SLACK_KEYS = {"webhook_url", "webhook_url_env"}
_WEBHOOK_KEYS = {"url", "url_env", "headers_env"}
_EMAIL_KEYS = {"host", "port", "starttls", "ssl", "username", "password_env", "password_file", "sender", "to"}


def notify_config(raw: Any, env: Mapping[str, str]) -> tuple[list[Channel], bool, float]:
    """(channels, on_success, timeout) from the `[notify]` table; ConfigError naming the key for a bad value."""
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
    return channels, on_success, float(timeout)


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    password = _smtp_password(key, password_env, password_file, env, problems)
    return EmailChannel(
        host=host, port=port_raw, to=to, sender=sender, starttls=starttls, use_ssl=use_ssl,
        username=username, password=password, problem="; ".join(problems),
    )


def _smtp_password(key: str, password_env: str | None, password_file: str | None, env: Mapping[str, str],
                   problems: list[str]) -> str | None:
    """The SMTP password from the named variable or file; what is wrong goes into `problems`."""
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
    return password
