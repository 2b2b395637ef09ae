"""`python -m opstower_core` is the `opstower` command."""

import sys

from .cli import main

sys.exit(main())
