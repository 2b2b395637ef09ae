"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

from opstower_core.config import Settings, load_settings


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--database", metavar="NAME",
                        help="target name or database name from the config (default: PGDATABASE / first target)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per event on stdout")


def seconds_arg(text: str) -> float:
    """argparse type for a positive number of seconds (e.g. --wait-for-locks)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value
