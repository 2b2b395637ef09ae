"""`opstower` command line: the contract scripts and cron rely on.

Each sub-command lives in its own module here with `register(subparsers)`; the module sets
`func` on its parser. Errors for the operator (OpsError) print one line and exit non-zero,
never a traceback.

The core never imports the console: the `opstower` entry point (opstower_tui.launcher) passes
`open_console`, which commands call when a console is wanted (no sub-command, `demo`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

from opstower_core import __version__
from opstower_core.errors import OpsError
from opstower_core.runs import signals

if TYPE_CHECKING:
    import argparse  # imported where a parser is built: opening the console needs none

# Sub-command modules, in help order.
COMMANDS = ("demo", "backup", "list", "verify", "restore", "drill", "health", "doctor", "schedule", "prune", "keygen",
            "pitr", "base_backup", "wal", "replicate")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or of `only` (a module name): `opstower verify X` must not pay
    for importing backup, restore and drill (psycopg, boto3, …) before its first check."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="opstower",
        description="OpsTower DR Console: back up, verify and restore PostgreSQL. With no command, opens the console.",
    )
    parser.add_argument("--version", action="version", version=f"opstower {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $OPSTOWER_CONFIG or XDG config dir)")
    parser.add_argument("--read-only", action="store_true", help="console: offer no destructive action")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse; an unknown option is reported with the usage of its own sub-command."""
    import argparse

    parser = build_parser(_command_module(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        owner = subparsers.choices.get(args.command or "", parser)
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _command_module(argv: Sequence[str]) -> str | None:
    """The module of the sub-command `argv` names, when it is one module's own command; else None (all)."""
    it = iter(argv)
    for token in it:
        if token == "--config":
            next(it, None)
        elif not token.startswith("-"):
            name = token.replace("-", "_")
            return name if name in COMMANDS else None
    return None


def _console_only(argv: Sequence[str]) -> SimpleNamespace | None:
    """The global flags when they are all there is (`--config FILE`, `--config=FILE`, `--read-only`);
    None otherwise, and argparse reads the line (help, version, a sub-command, an abbreviation, a mistake).

    Opening the console must not pay for importing every command (psycopg, boto3, …), nor argparse:
    the first screen has to paint within 0.8 s.
    """
    config: str | None = None
    read_only = False
    it = iter(argv)
    for token in it:
        if token == "--read-only":
            read_only = True
        elif token == "--config":
            config = next(it, None)
            if config is None or config.startswith("-"):
                return None  # argparse says what is missing
        elif token.startswith("--config="):
            config = token.removeprefix("--config=")
        else:
            return None
    return SimpleNamespace(config=config, read_only=read_only, command=None)


# Commands that never say it: PostgreSQL runs wal-push/wal-fetch per segment; the rest touch no database.
_QUIET = frozenset({"demo", "wal-push", "wal-fetch", "schedule", "keygen"})


def _warn_of_interrupted_restore(args: argparse.Namespace) -> None:
    """One line before any command when a killed restore left a database blocked, renamed or missing."""
    if args.command in _QUIET or getattr(args, "recover", False):
        return
    from opstower_core.config import load_settings

    try:
        settings = load_settings(args.config)
    except OpsError:
        return  # the command itself reports a bad config
    journals = settings.state_dir / "restore_journal"
    if not journals.is_dir() or not any(journals.iterdir()):
        return  # the common case costs one stat, not the restore engine's imports
    from opstower_core.restore import interrupted_notice

    line = interrupted_notice(settings.state_dir)
    if line:
        print(line, file=sys.stderr)


# Opens the console on these settings (read_only; an optional notice shown at start) and returns its exit code.
OpenConsole = Callable[..., int]


def main(argv: Sequence[str] | None = None, open_console: OpenConsole | None = None) -> int:
    # Not list(): importing the `list` sub-command binds that name in this package's namespace.
    own_process = argv is None  # the `opstower` command itself, not a caller passing its arguments
    argv = [*(sys.argv[1:] if argv is None else argv)]
    one_shot = False  # a sub-command in its own process: it may leave without the interpreter's teardown
    try:
        console = _console_only(argv)
        args = console if console is not None else _parse(argv)  # a Ctrl-C while importing lands below too
        if args.command is None:
            from opstower_core.config import load_settings

            settings = load_settings(args.config)
            if open_console is None:
                raise OpsError("The console is not available from this entry point", "nothing was run",
                               "use the sub-commands (opstower --help)")
            return open_console(settings, bool(args.read_only))
        args.open_console = open_console
        _warn_of_interrupted_restore(args)
        if own_process and args.command in ("backup", "restore", "verify"):
            from opstower_core.memory import keep_heap

            keep_heap()  # a one-shot process streaming a whole artifact
        if args.command == "demo":  # the demo keeps its own handlers: they stop its servers under the console
            return int(args.func(args) or 0)
        one_shot = own_process
        with signals.installed():  # SIGTERM and SIGHUP unwind like Ctrl-C: same cleanup, 128+n
            code = int(args.func(args) or 0)
    except OpsError as exc:
        print(f"ERROR: {exc.sentence}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"ERROR: Interrupted ({signals.signal_name(exc)}). Temporary files were removed; nothing half-written "
              "is listed.", file=sys.stderr)
        code = signals.exit_code(exc)
    if one_shot:
        _leave(code)
    return code


def _leave(code: int) -> None:
    """End a sub-command's own process without tearing the interpreter down: freeing every module's
    objects one by one took 0.2-0.4 s after the work was done (a restore's last 0.4 s; a fifth of
    `verify`'s time). Exit handlers run and stdio is flushed first, as at a normal exit; while a
    non-daemon thread still runs, this returns and the normal exit waits for it."""
    import atexit
    import os
    import threading

    if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it anyway
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
