"""Alerts for backups, verifications, health checks, restores and drills: Slack, a webhook, e-mail.

This module is the policy: what a `Notification` is, when one is worth sending
(`Notifier.should_send`), and delivery to every configured channel without ever failing the run
it reports on (`send_safely`). The channels themselves are in `notify_channels`, and reading
the `[notify]` table of the config file (and why a missing alert secret does not stop a
backup) is in `notify_config`.

No secret (webhook URL, header value, SMTP password) ever reaches a message body, a log line or
an exception: every text goes through `scrub`, and URLs are shown as `scheme://host/…`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opstower_core.alerts.channels import (
    Channel,
    DeliveryError,
    one_line,
)
from opstower_core.alerts.config import DEFAULT_TIMEOUT, notify_config
from opstower_core.alerts.message import EVENTS, Cleaner, DeliveryResult, Notification, status_level

if TYPE_CHECKING:
    from opstower_core.config import Settings


LOG = logging.getLogger("opstower.notify")

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
        channels, on_success, timeout = notify_config(settings.raw.get("notify", {}), env)
        return cls(channels, on_success=on_success, timeout=timeout, state_dir=settings.state_dir)

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
            from opstower_core.runs.history import StateStore

            value = StateStore(self.state_dir).get(self._health_key(database))
        except Exception as exc:  # an unreadable state file must not stop an alert
            LOG.warning("cannot read the last health state (%s); treating this check as a change", one_line(exc))
            return None
        return value if isinstance(value, str) else None

    def _remember_health(self, database: str, level: str) -> None:
        self._health[database] = level
        if self.state_dir is None:
            return
        try:
            from opstower_core.runs.history import StateStore

            StateStore(self.state_dir).put(self._health_key(database), level)
        except Exception as exc:  # the alert went out; a later duplicate is the lesser harm
            LOG.warning("cannot record the health state (%s); the next check may alert again", one_line(exc))

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
        clean = Cleaner(self.secrets)
        results = [self._deliver(channel, n, clean) for channel in self.channels]
        if n.event == "health" and (not results or any(r.ok for r in results)):
            # Not remembered when every channel failed, so the next check tries again.
            self._remember_health(n.database, n.level)
        return results

    def _deliver(self, channel: Channel, n: Notification, clean: Cleaner) -> DeliveryResult:
        t0 = time.monotonic()
        destination = clean(channel.destination)
        try:
            if channel.problem:
                raise DeliveryError(f"not configured: {channel.problem}")
            channel.send(n, clean, self.timeout)
        except DeliveryError as exc:
            error = clean(one_line(str(exc)))
        except Exception as exc:  # a broken channel must never break the run it reports on
            error = clean(one_line(f"{type(exc).__name__}: {exc}"))
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
        LOG.warning("notification not sent (%s)", one_line(str(exc)))
        return []
