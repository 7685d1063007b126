"""Cold start: a whole `pokedge scan` process from start to first result, its peak RSS, and the import chain.

Each run is a fresh subprocess, so imports, model load, gallery load and the
first frame are all inside the wall time. Peak RSS is the kernel's rusage of
that process (ru_maxrss, KiB on Linux).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pokedge.bench.stats import summarize

CATALOG_CARDS = 17_592  # cards in the full catalog pokedge targets


def scan_command(frame: Path, contract: Path, gallery_dir: Path) -> list[str]:
    """Return the scan command a user runs, with the model and gallery named explicitly."""
    return [sys.executable, "-m", "pokedge", "scan", "--json", "--image", str(frame),
            "--model", str(contract), "--gallery", str(gallery_dir)]


def measure_cold_start(frame: Path, contract: Path, gallery_dir: Path, runs: int, env: dict[str, str]) -> dict:
    """Run the scan command `runs` times; return wall time and peak RSS summaries and the first output line."""
    walls, rss = [], []
    first_output = ""
    for _ in range(runs):
        result = run_measured(scan_command(frame, contract, gallery_dir), env)
        walls.append(result["wall_s"])
        rss.append(result["rss_mb"])
        first_output = first_output or result["stdout"].splitlines()[0][:300]
    return {
        "wall_s": _round_summary(summarize(walls)),
        "rss_mb": _round_summary(summarize(rss)),
        "runs": runs,
        "output": first_output,
    }


# Runs the command given as arguments, reaps it with os.wait4 and prints its wall
# time and peak RSS as the last stderr line. The measured command is a child of
# this small process, not of the benchmark: on Linux a child's ru_maxrss starts
# from its parent's RSS at fork, which would report the benchmark's own size.
_MEASURE_CHILD = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - start
sys.stderr.write("\\n" + MARKER + json.dumps({"wall_s": wall, "rss_kib": usage.ru_maxrss}) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""
_MARKER = "pokedge-bench-child "


def run_measured(command: list[str], env: dict[str, str] | None = None, timeout_s: float = 300.0) -> dict:
    """Run `command` in a fresh process; return its wall time in s, its own peak RSS in MB and its stdout.

    Raise RuntimeError when it fails or times out.
    """
    wrapper = [sys.executable, "-c", _MEASURE_CHILD.replace("MARKER", repr(_MARKER)), *command]
    try:
        done = subprocess.run(wrapper, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout_s:.0f} s: {' '.join(command)}") from None
    if done.returncode != 0:
        raise RuntimeError(f"exit status {done.returncode} from {' '.join(command)}: {done.stderr.strip()[-500:]}")

    marker_lines = [line for line in done.stderr.splitlines() if line.startswith(_MARKER)]
    if not marker_lines:
        raise RuntimeError(f"no timing line from the measuring wrapper of {' '.join(command)}")
    figures = json.loads(marker_lines[-1][len(_MARKER):])
    return {"wall_s": figures["wall_s"], "rss_mb": figures["rss_kib"] / 1024.0, "stdout": done.stdout}


def import_profile(top: int = 10) -> dict:
    """Run `python -X importtime -m pokedge scan --help` and return the total and the slowest imports (ms, cumulative).

    The command imports what a scan imports before it opens the model.
    """
    command = [sys.executable, "-X", "importtime", "-m", "pokedge", "scan", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match.group(2)) / 1000.0, len(match.group(3)), match.group(4)))
    top_level = [r for r in rows if r[1] == 1]
    slowest = sorted(top_level, key=lambda r: r[0], reverse=True)[:top]
    return {
        "command": " ".join(["python", *command[1:]]),
        "total_ms": round(sum(r[0] for r in top_level), 1),
        "slowest_ms": {name: round(ms, 1) for ms, _, name in slowest},
    }


def synthesize_catalog(gallery_dir: Path, out_dir: Path, cards: int = CATALOG_CARDS, seed: int = 5) -> Path:
    """Write a gallery of `cards` rows grown from `gallery_dir` (its rows plus clustered neighbours)."""
    from pokedge.bench.vectors import grow_gallery
    from pokedge.gallery.store import CardInfo, load_gallery, save_gallery

    source = load_gallery(gallery_dir)
    embeddings = grow_gallery(source.embeddings, cards, seed=seed)
    card_ids = list(source.card_ids[:cards]) + [f"catalog-{i}" for i in range(len(source), cards)]
    facts = dict(source.cards)
    for card_id in card_ids[len(source):]:
        facts[card_id] = CardInfo(card_id, f"Catalogmon {card_id}", "catalog", card_id.rsplit("-", 1)[1])
    save_gallery(out_dir, embeddings, card_ids, facts, source.producer)

    thresholds = gallery_dir / "thresholds.json"
    if thresholds.is_file():
        (out_dir / "thresholds.json").write_bytes(thresholds.read_bytes())
    return out_dir


def _round_summary(summary: dict) -> dict:
    return {key: (round(value, 3) if isinstance(value, float) and not np.isnan(value) else value)
            for key, value in summary.items()}


def measure_loads(context, catalog_dir: Path) -> dict:
    """Time, in this process (imports already done), opening the model, the galleries and their indexes."""
    from pokedge.backends.onnx import OnnxBackend
    from pokedge.gallery.index import GalleryIndex
    from pokedge.gallery.store import load_gallery

    figures = {}
    start = time.perf_counter()
    OnnxBackend(context.contract, threads=context.threads).close()
    figures["model"] = time.perf_counter() - start

    for name, folder in (("gallery", context.inputs.gallery_dir), ("catalog", catalog_dir)):
        start = time.perf_counter()
        gallery = load_gallery(folder)
        figures[f"{name}_files"] = time.perf_counter() - start
        start = time.perf_counter()
        GalleryIndex(gallery, cache_folder=context.workdir / "cache" / "index")
        figures[f"{name}_index"] = time.perf_counter() - start
    return {name: round(seconds, 4) for name, seconds in figures.items()}


# Steps of a scan process, each followed by a reading of VmRSS and VmHWM (peak)
# from /proc/self/status, in KiB. Run in a fresh interpreter by memory_steps().
_MEMORY_STEPS = """
import json, sys, time
from pathlib import Path

def reading(step, started):
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = lambda name: int(fields[name].split()[0])
    print(json.dumps({"step": step, "rss_mb": kib("VmRSS") / 1024, "peak_mb": kib("VmHWM") / 1024,
                      "s": time.perf_counter() - started}), flush=True)

contract_path, gallery_dir, frame_path = sys.argv[1:4]
started = time.perf_counter()
reading("interpreter", started)
from pokedge.heap import fix_mmap_threshold
fix_mmap_threshold()  # as pokedge.cli.main does first
import numpy, cv2
reading("import numpy, cv2", started)
import onnxruntime
reading("import onnxruntime", started)
import faiss
reading("import faiss", started)
import pokedge.cli
pokedge.cli.build_parser(["scan"])
reading("import pokedge scan command", started)
from pokedge.backends.onnx import OnnxBackend
from pokedge.contract import load_contract
backend = OnnxBackend(load_contract(contract_path))
reading("open model", started)
from pokedge.gallery.store import load_gallery
gallery = load_gallery(gallery_dir)
reading("load gallery files", started)
from pokedge.gallery.index import GalleryIndex
from pokedge.recognition.decision import Thresholds
from pokedge.recognition.pipeline import Recognizer
recognizer = Recognizer(backend, gallery, Thresholds(), index=GalleryIndex(gallery))
reading("open gallery index", started)
from pokedge.capture.image import read_image
result = recognizer.recognize(read_image(Path(frame_path)))
reading("recognize first frame", started)
"""


def memory_steps(contract: Path, gallery_dir: Path, frame: Path, env: dict[str, str]) -> list[dict]:
    """Return RSS and peak RSS (MB) and elapsed s after each step of a scan, measured in a fresh interpreter."""
    command = [sys.executable, "-c", _MEMORY_STEPS, str(contract), str(gallery_dir), str(frame)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"memory steps failed with exit status {done.returncode}: {done.stderr.strip()[-500:]}")
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    previous = 0.0
    for step in steps:
        step["added_mb"] = round(step["rss_mb"] - previous, 1)
        previous = step["rss_mb"]
        step.update({key: round(step[key], 3 if key == "s" else 1) for key in ("rss_mb", "peak_mb", "s")})
    return steps
