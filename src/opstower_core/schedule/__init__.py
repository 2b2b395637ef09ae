"""Schedules: cron lines and systemd units for backups, verifications and health checks."""

from .units import JOBS, find_opstower, jobs_for, render_cron, render_systemd

__all__ = [
    "JOBS",
    "find_opstower",
    "jobs_for",
    "render_cron",
    "render_systemd",
]
