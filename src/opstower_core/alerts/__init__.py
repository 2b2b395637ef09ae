"""Alerts: Slack, webhook and e-mail notifications of runs, secrets scrubbed."""

from .channels import redact_url
from .message import Notification, scrub
from .notifier import Notifier, send_safely

__all__ = [
    "Notification",
    "Notifier",
    "redact_url",
    "scrub",
    "send_safely",
]
