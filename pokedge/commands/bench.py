"""`pokedge bench`: where the time goes per frame, end-to-end throughput, search scaling and cold start."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pokedge.errors import InputError

_log = logging.getLogger(__name__)

SECTIONS = ("stages", "fps", "search", "cold_start")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure per-stage time, throughput, search scaling and cold start",
        description="Benchmark pokedge on this machine over fixed synthetic frames. A normal run takes a few "
        "minutes on 2 cores; --quick about a minute; --full adds the 1,000,000-row search case.")
    add_bench_arguments(parser)
    parser.set_defaults(func=run)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few frames and repeats, search at 601 and 17,592 rows")
    mode.add_argument("--full", action="store_true",
                      help="also search 1,000,000 rows (an estimate: 15-30 minutes, up to 8 GB of RAM)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON object to FILE")
    parser.add_argument("--compare", metavar="A,B",
                        help="measure two configurations alternately and print B / A, for example "
                        "'threads=1,threads=2' or 'backend=onnx-fp32,backend=onnx-int8' (settings: threads, "
                        "backend, index, mode, detect_workers, embed_workers, cv_threads; join several with '+')")
    parser.add_argument("--only-compare", action="store_true", help="with --compare, skip every other section")
    parser.add_argument("--skip", action="append", choices=SECTIONS, default=[],
                        help="leave out a section (repeat for several)")
    parser.add_argument("--frames", type=int, metavar="N", help="frames rendered per frame size (default 4, quick 2)")
    parser.add_argument("--repeats", type=int, metavar="N", help="passes over the frames for stage timings (default 3)")
    parser.add_argument("--search-sizes", metavar="N,N", help="gallery sizes for search scaling, comma separated")
    parser.add_argument("--search-kinds", metavar="KIND,KIND", help="index kinds: flat,fp16,sq8,hnsw,hnsw_sq8,ivfpq")
    parser.add_argument("--catalog-cards", type=int, metavar="N",
                        help="rows of the synthetic catalog for cold start and RSS (default 17592)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: every core)")
    parser.add_argument("--detect-workers", type=int, metavar="N", help="detection threads in the pipeline (default 1)")
    parser.add_argument("--embed-workers", type=int, metavar="N",
                        help="embedding threads in the pipeline, one ORT thread each (default: one a core)")
    parser.add_argument("--model", type=Path, metavar="CONTRACT", help="model contract (default: the shipped model)")
    parser.add_argument("--gallery", type=Path, metavar="DIR", help="gallery folder (default: the shipped gallery)")


def options_from_args(args: argparse.Namespace):
    from pokedge.bench.runner import BenchOptions

    skip = list(args.skip)
    if args.only_compare:
        if not args.compare:
            raise InputError("--only-compare needs --compare A,B")
        skip = list(SECTIONS)
    for name in ("frames", "repeats", "catalog_cards", "threads", "detect_workers", "embed_workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    return BenchOptions.for_mode(
        quick=args.quick, full=args.full,
        frames_per_size=args.frames, repeats=args.repeats, threads=args.threads,
        detect_workers=args.detect_workers, embed_workers=args.embed_workers, catalog_cards=args.catalog_cards,
        search_sizes=_int_list(args.search_sizes, "--search-sizes"),
        search_kinds=_kind_list(args.search_kinds),
        compare=args.compare, skip=tuple(skip), model=args.model, gallery=args.gallery,
    )


def run(args: argparse.Namespace) -> int:
    from pokedge.bench.compare import parse_pair
    from pokedge.bench.report import format_report
    from pokedge.bench.runner import run_benchmark

    options = options_from_args(args)
    if options.compare:
        try:
            parse_pair(options.compare)
        except ValueError as exc:
            raise InputError(f"--compare: {exc}") from None

    record = run_benchmark(options, progress=lambda message: print(f"bench: {message}", file=sys.stderr, flush=True))
    text = json.dumps(record, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text if args.json else format_report(record), flush=True)
    return 0


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{option} needs at least one size of 1 or more, got {text!r}")
    return values


def _kind_list(text: str | None) -> tuple[str, ...] | None:
    from pokedge.bench.search import KINDS

    if text is None:
        return None
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise InputError(f"--search-kinds: unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    return kinds
