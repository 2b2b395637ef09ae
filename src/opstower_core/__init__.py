"""OpsTower DR Console engine: backup, verify, restore and drill PostgreSQL databases.

This package never imports Textual; the console (opstower_tui) and the CLI both render
the typed events that the runs here emit.
"""

__version__ = "0.1.0"
