"""Run the benchmark sections in order and gather their figures into one JSON-ready dict."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pokedge.bench import coldstart, search, stages, throughput
from pokedge.bench.context import FP32, INT8, BenchContext
from pokedge.bench.frames import make_frames
from pokedge.bench.hardware import describe_hardware
from pokedge.bench.models import hailo_host_overhead, resolve_inputs
from pokedge.bench.stats import ratio
from pokedge.bench.targets import evaluate_targets
from pokedge.recognition.stream import usable_cores

_log = logging.getLogger(__name__)

# The pipeline fills at the start of a run and drains at its end, with a core idle
# each time, so a short run understates its steady rate.
MIN_FRAMES_PER_RUN = 32


@dataclass
class BenchOptions:
    """Benchmark settings: sections, repetitions, sizes and inputs.

    `for_mode` fills the defaults of --quick, normal and --full runs.
    """

    quick: bool = False
    full: bool = False
    frames_per_size: int = 4
    repeats: int = 3
    rounds: int = 3
    frames_per_run: int = 0  # 0: twice the number of frames, at least MIN_FRAMES_PER_RUN
    search_sizes: tuple[int, ...] = (601, 17_592, 100_000)
    search_kinds: tuple[str, ...] = search.KINDS
    cold_runs: int = 3
    catalog_cards: int = coldstart.CATALOG_CARDS
    threads: int | None = None
    detect_workers: int = 1
    embed_workers: int | None = None  # None: one a usable core (pipeline_embed_workers)
    compare: str | None = None
    compare_rounds: int = 4
    skip: tuple[str, ...] = ()
    model: Path | None = None
    gallery: Path | None = None
    extra_backends: tuple[str, ...] = (INT8, "hailo-double")
    workdir: Path | None = None

    @classmethod
    def for_mode(cls, quick: bool = False, full: bool = False, **overrides) -> "BenchOptions":
        options = cls(quick=quick, full=full)
        if quick:
            options = cls(quick=True, frames_per_size=2, repeats=1, rounds=1, search_sizes=(601, 17_592),
                          search_kinds=("flat", "sq8", "hnsw_sq8"), cold_runs=1, compare_rounds=2)
        elif full:
            options = cls(full=True, search_sizes=(601, 17_592, 100_000, 1_000_000))
        for key, value in overrides.items():
            if value is not None:
                setattr(options, key, value)
        return options


@dataclass
class _Run:
    options: BenchOptions
    say: Callable[[str], None]
    context: BenchContext
    frames: list
    result: dict = field(default_factory=dict)


def run_benchmark(options: BenchOptions, progress: Callable[[str], None] | None = None) -> dict:
    """Run every section not in `options.skip`; return the benchmark record (see docs/benchmarks.md)."""
    say = progress or (lambda message: None)
    started = time.perf_counter()
    hardware = describe_hardware()  # before the HailoRT test double can shadow a real binding
    with tempfile.TemporaryDirectory(prefix="pokedge-bench-") as scratch:
        workdir = options.workdir or Path(scratch)
        say("opening the model and gallery")
        context = BenchContext(resolve_inputs(workdir, options.model, options.gallery), workdir, options.threads)
        try:
            say("rendering frames")
            run = _Run(options, say, context, make_frames(options.frames_per_size))
            run.result = _header(run, hardware)
            _run_sections(run)
        finally:
            context.close()

    run.result["notes"] = context.notes
    run.result["targets"] = evaluate_targets(run.result)
    run.result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return run.result


def _header(run: _Run, hardware: dict) -> dict:
    context = run.context
    return {
        "hardware": hardware,
        "inputs": {
            "source": context.inputs.source,
            "model": context.contract.model_id,
            "model_file": str(context.contract.model_path),
            "gallery": str(context.inputs.gallery_dir),
            "gallery_rows": len(context.gallery),
            "index": context.index().spec.label(),
        },
        "settings": {
            "mode": "quick" if run.options.quick else "full" if run.options.full else "normal",
            "frames": len(run.frames),
            "frame_sizes": sorted({f.size_label for f in run.frames}),
            "repeats": run.options.repeats,
            "ort_threads": run.options.threads or "all cores",
            "faiss_threads": 1,
            "argv": sys.argv[1:],
        },
    }


def _run_sections(run: _Run) -> None:
    steps = [("stages", _stages), ("fps", _throughput), ("search", _search), ("cold_start", _cold_start),
             ("compare", _compare)]
    for name, step in steps:
        if name in run.options.skip or (name == "compare" and not run.options.compare):
            continue
        try:
            step(run)
        except Exception as exc:  # one failing section is reported; the others still run
            _log.exception("benchmark section %s failed", name)
            run.context.notes.append(f"section {name} failed: {type(exc).__name__}: {exc}")
    _ratios(run)


def _stages(run: _Run) -> None:
    run.say("per-stage timings")
    context = run.context
    extra = context.extra_backends(list(run.options.extra_backends))
    recognizer = context.recognizer(FP32)
    tracker = stages.open_tracker(recognizer)
    if tracker is None:
        context.notes.append("state update not measured: pokedge.service.tracker is not importable")
    samples = stages.measure_stages(recognizer, run.frames, extra, run.options.repeats, tracker)
    run.result["stages_ms"] = stages.stage_summary(samples)
    run.result["stage_ratios"] = stages.stage_ratios(samples)

    overhead = hailo_host_overhead(repeats=50 if run.options.quick else 200)
    if overhead is not None:
        run.result["hailo_host_overhead_us"] = overhead


def _throughput(run: _Run) -> None:
    run.say("sequential and pipelined throughput")
    recognizer = run.context.recognizer(FP32)
    pipeline_threads = run.options.threads or pipeline_ort_threads()
    embed_workers = run.options.embed_workers or pipeline_embed_workers()
    pipelined = run.context.recognizer(FP32, threads=pipeline_threads)
    count = run.options.frames_per_run or frames_per_run(run.frames)
    tracker_factory = _tracker_factory(recognizer)
    figures = throughput.measure_throughput(recognizer, pipelined, run.frames, count, run.options.rounds,
                                            tracker_factory, run.options.detect_workers, embed_workers,
                                            usable_cores())
    figures["sequential_ort_threads"] = run.options.threads or "all cores"
    figures["pipelined_ort_threads"] = pipeline_threads
    run.result["latency_ms"] = figures.pop("latency_ms")
    run.result["fps"] = figures


def frames_per_run(frames: list) -> int:
    """Return the frames of one timed run: twice the frame set, and at least MIN_FRAMES_PER_RUN."""
    return max(2 * len(frames), MIN_FRAMES_PER_RUN)


def pipeline_ort_threads() -> int:
    """Return ONNX Runtime's thread count per call in the pipeline: one, because the embedding workers share the cores.

    An ORT call on several threads splits each layer between them and waits
    for the slowest. When detection takes one of their cores, the others
    wait, while single-thread calls on separate frames keep running.
    """
    return 1


def pipeline_embed_workers() -> int:
    """Return the number of embedding workers in the pipeline: one a usable core, so embedding can fill every idle core."""
    return usable_cores()


def _tracker_factory(recognizer):
    if stages.open_tracker(recognizer) is None:
        return None
    return lambda: stages.open_tracker(recognizer)


def _search(run: _Run) -> None:
    base = run.context.gallery.embeddings
    records = search.run_search_scaling(base, run.options.search_sizes, run.options.search_kinds,
                                        quick=run.options.quick, progress=run.say)
    run.result["search"] = records
    if len(base) < 1_000:
        run.context.notes.append(f"search vectors grew from a {len(base)}-row gallery; the shipped gallery gives "
                                 f"more realistic clustering")


def _cold_start(run: _Run) -> None:
    run.say("cold start and memory")
    context = run.context
    frame_path = context.workdir / "cold-start-frame.jpg"
    frame_path.write_bytes(run.frames[0].jpeg.tobytes())
    env = {**os.environ, "POKEDGE_CACHE_DIR": str(context.workdir / "cache")}

    shipped = coldstart.measure_cold_start(frame_path, context.inputs.onnx_contract, context.inputs.gallery_dir,
                                           run.options.cold_runs, env)
    catalog_dir = coldstart.synthesize_catalog(context.inputs.gallery_dir, context.workdir / "catalog",
                                               run.options.catalog_cards)
    first = coldstart.run_measured(coldstart.scan_command(frame_path, context.inputs.onnx_contract, catalog_dir), env)
    catalog = coldstart.measure_cold_start(frame_path, context.inputs.onnx_contract, catalog_dir,
                                           run.options.cold_runs, env)

    steps = {}
    for layout in ("single", "binder3x3"):
        frame = next((f for f in run.frames if f.layout == layout), None)
        if frame is not None:
            path = context.workdir / f"memory-{layout}.jpg"
            path.write_bytes(frame.jpeg.tobytes())
            steps[f"{layout} {frame.size_label}"] = coldstart.memory_steps(context.inputs.onnx_contract, catalog_dir,
                                                                           path, env)

    run.result["cold_start"] = {
        "command": " ".join(["python", *coldstart.scan_command(frame_path, context.inputs.onnx_contract,
                                                               context.inputs.gallery_dir)[1:]]),
        "gallery": {"rows": len(context.gallery), **shipped},
        "catalog": {"rows": run.options.catalog_cards, "first_run_s": round(first["wall_s"], 3), **catalog},
        "imports": coldstart.import_profile(),
        "load_s": coldstart.measure_loads(context, catalog_dir),
        "memory_steps": steps,
    }
    run.result["cold_start_s"] = max(shipped["wall_s"]["p50"], catalog["wall_s"]["p50"])
    run.result["rss_mb"] = catalog["rss_mb"]["p50"]


def _compare(run: _Run) -> None:
    from pokedge.bench.compare import parse_pair, run_comparison

    run.say(f"comparing {run.options.compare}")
    pair = parse_pair(run.options.compare)
    count = run.options.frames_per_run or frames_per_run(run.frames)
    run.result["compare"] = run_comparison(run.context, run.frames, pair, run.options.compare_rounds, count)


def _ratios(run: _Run) -> None:
    """Put the figures the targets are stated in side by side."""
    result = run.result
    ratios = dict(result.pop("stage_ratios", {}))
    per_crop = result.get("stages_ms", {}).get("embed_per_crop", {}).get(FP32)
    catalog = _chosen_record(result.get("search", []), coldstart.CATALOG_CARDS)
    if catalog and per_crop:
        ratios["search_catalog_vs_embed"] = ratio(catalog["ms_per_query"], per_crop)
        ratios["search_catalog_index"] = catalog["index"]
        ratios["search_catalog_recall_at_1"] = catalog["recall_at_1"]
        exact = _record(result["search"], coldstart.CATALOG_CARDS, "flat")
        if exact:
            ratios["search_catalog_exact_vs_embed"] = ratio(exact["ms_per_query"], per_crop)
    if "fps" in result:
        ratios["pipelined_vs_sequential"] = result["fps"]["pipelined_vs_sequential"]
    result["ratios"] = ratios


def _chosen_record(records: list[dict], rows: int) -> dict | None:
    return next((r for r in records if r["n"] == rows and r.get("chosen") and r["ms_per_query"] is not None), None)


def _record(records: list[dict], rows: int, kind: str) -> dict | None:
    return next((r for r in records if r["n"] == rows and r["kind"] == kind and r["ms_per_query"] is not None), None)
