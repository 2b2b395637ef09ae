"""`python -m opstower_tui [--read-only]`: the console with the normal configuration."""

from __future__ import annotations

import sys

from opstower_core.cli import main

if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:]]))
