"""Doctor: pre-flight checks of tools, privileges, storage, permissions and clock."""

from .run import CHECKS, run_doctor

__all__ = [
    "CHECKS",
    "run_doctor",
]
