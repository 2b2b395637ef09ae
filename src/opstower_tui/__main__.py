"""`python -m opstower_tui [--read-only]`: the console with the normal configuration."""

from __future__ import annotations

import sys

from opstower_tui.launcher import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
