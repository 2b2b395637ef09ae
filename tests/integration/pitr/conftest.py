"""The PITR tests' server: `pitr_env` (tests/support/pitr.py), shared with the console's PITR tests."""

from support.pitr import pitr_env  # noqa: F401 - a fixture, found by pytest through this import
