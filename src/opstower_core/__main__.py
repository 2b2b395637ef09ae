"""`python -m opstower_core` is the `opstower` command."""

import sys

from opstower_core.cli import main

sys.exit(main())
