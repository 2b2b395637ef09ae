"""Bookkeeping every run does: the run history (SQLite), the run lock, the per-run log."""
