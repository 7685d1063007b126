#!/usr/bin/env python3
"""Benchmark pokedge on this machine: the same as `pokedge bench`; see docs/benchmarks.md.

Usage: python scripts/benchmark.py [--quick | --full] [--json] [--compare A,B] [more options: --help]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pokedge.commands.bench import add_bench_arguments, run
from pokedge.errors import PokedgeError


# The HailoRT test double lives with the tests and is never part of the package;
# this script, run from a checkout, points the benchmark at it.
HAILO_DOUBLE = Path(__file__).resolve().parent.parent / "tests" / "fake_hailo"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("POKEDGE_BENCH_HAILO_DOUBLE", str(HAILO_DOUBLE))
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.split("\n\n")[0])
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except PokedgeError as exc:
        print(f"benchmark.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
