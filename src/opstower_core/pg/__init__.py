"""Talking to PostgreSQL: client tools, connections, admin statements, loading a dump, row counts."""
