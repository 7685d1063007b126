"""The `pokedge` command line: one subcommand per module in pokedge.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pokedge import __version__
from pokedge.heap import fix_mmap_threshold
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

# The module that registers each subcommand. When the command line names one,
# only that module is imported. Importing all of them pulls in the sync client
# (botocore, urllib3), the HTTP service and the evaluation code, which cost a
# scan about 12 MB of RSS and 0.1-0.2 s (2-core x86_64 benchmark machine).
COMMANDS = {
    "scan": "pokedge.commands.scan",
    "gallery": "pokedge.commands.gallery",
    "calibrate": "pokedge.commands.calibrate",
    "eval": "pokedge.commands.evaluate",
    "sample-frame": "pokedge.commands.sample_frame",
    "parity": "pokedge.commands.parity",
    "doctor": "pokedge.commands.doctor",
    "sync": "pokedge.commands.sync",
    "versions": "pokedge.commands.sync",
    "bench": "pokedge.commands.bench",
    "serve": "pokedge.commands.serve",
    "export": "pokedge.commands.export",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; with `argv` naming a known command, register only that command's module.

    Without `argv`, or when it names no known command (help, a typo), every
    command is registered so that help and error messages list them all.
    """
    parser = argparse.ArgumentParser(prog="pokedge", description="Recognize Pokemon cards from photos and cameras.")
    parser.add_argument("--version", action="version", version=f"pokedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    command = _command_name(argv)
    names = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def _command_name(argv: list[str] | None) -> str | None:
    """Return the first argument that is not an option, which is the command because no top-level option takes a value."""
    if argv is None:
        return None
    return next((arg for arg in argv if not arg.startswith("-")), None)


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    fix_mmap_threshold()
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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
