"""The `pokedge` command line: one subcommand per module in pokedge.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pokedge import __version__
from pokedge.errors import PokedgeError

_log = logging.getLogger(__name__)

# Each module defines `register(subparsers)`, which adds its parser and sets
# `func` (taking the parsed args, returning an exit status) as a default.
COMMAND_MODULES = [
    "pokedge.commands.scan",
    "pokedge.commands.gallery",
    "pokedge.commands.calibrate",
    "pokedge.commands.evaluate",
    "pokedge.commands.sample_frame",
    "pokedge.commands.parity",
    "pokedge.commands.doctor",
    "pokedge.commands.sync",
    "pokedge.commands.bench",
    "pokedge.commands.serve",
    "pokedge.commands.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pokedge", description="Recognize Pokemon cards from photos and cameras.")
    parser.add_argument("--version", action="version", version=f"pokedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2

    try:
        return int(args.func(args) or 0)
    except PokedgeError as exc:
        print(f"pokedge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (for example `| head`); nothing left to report.
        sys.stderr.close()
        return 0
