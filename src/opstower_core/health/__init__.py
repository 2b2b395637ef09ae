"""Health: one verdict for monitoring (Nagios exit codes), alerts on change."""

from .checks import HealthState
from .run import check_health, run_health

__all__ = [
    "HealthState",
    "check_health",
    "run_health",
]
