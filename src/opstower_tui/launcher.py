"""The `opstower` entry point: a sub-command runs the CLI; no sub-command opens the console.

The one place where the command line meets the console, so the core never imports Textual.
Textual is imported only when a console is actually opened.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opstower_core.cli import main as cli_main
from opstower_core.errors import OpsError

if TYPE_CHECKING:
    from opstower_core.config import Settings


def open_console(settings: Settings, read_only: bool, notice: str | None = None) -> int:
    # Textual's import makes ~80 cyclic collections that free nothing (~10 % of the CPU before the
    # first paint); what it imports lives as long as the process, so it is frozen out of the full
    # collections after it too.
    gc.disable()
    try:
        from opstower_tui.app import run_console
    except ImportError as exc:
        raise OpsError("The console is not available", f"import failed: {exc}",
                       "use the sub-commands (opstower --help)") from None
    finally:
        gc.freeze()
        gc.enable()
    # The app names its keys instead of CLI flags while it runs (OpsTowerApp.on_mount sets the face).
    return run_console(settings, read_only=read_only, notice=notice)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(argv, open_console=open_console)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
