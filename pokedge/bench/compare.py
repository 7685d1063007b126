"""Two configurations measured in one process, alternating, so machine noise hits both alike.

A configuration is one or more settings joined by "+", for example
"threads=1" or "backend=onnx-int8+index=hnsw_sq8". Settings:

- threads: ONNX Runtime intra-op threads (0 lets ORT use every core)
- backend: onnx-fp32, onnx-int8, hailo or hailo-double
- index: a gallery index kind with optional parameters ("flat",
  "hnsw_sq8:ef_search=64"), or "auto" for pokedge's choice
- mode: sequential or pipelined
- detect_workers: detection threads in pipelined mode
- embed_workers: embedding threads in pipelined mode, sharing one ORT session
- cv_threads: OpenCV's thread count (cv2.setNumThreads), set before each run

Rounds alternate the order (A then B, then B then A) and each side's
figure is the median over rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pokedge.bench.context import FP32, BenchContext
from pokedge.bench.frames import BenchFrame
from pokedge.bench.stats import ratio
from pokedge.bench.throughput import run_pipelined
from pokedge.recognition.pipeline import STAGES

MODES = ("sequential", "pipelined")


@dataclass(frozen=True)
class Config:
    """One side of a comparison."""

    text: str
    backend: str = FP32
    threads: int | None = None
    index: str = "auto"
    mode: str = "sequential"
    detect_workers: int = 1
    embed_workers: int = 1
    cv_threads: int | None = None


def parse_config(text: str) -> Config:
    """Parse "key=value+key=value" into a Config; raise ValueError naming the bad setting."""
    values: dict = {}
    for item in filter(None, text.split("+")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"setting {item!r} in {text!r} needs the form key=value")
        values[key.strip()] = value.strip()

    config = Config(text)
    for key, value in values.items():
        if key in ("threads", "detect_workers", "embed_workers", "cv_threads"):
            config = _with_int(config, key, value)
        elif key == "mode":
            if value not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
            config = _replace(config, mode=value)
        elif key in ("backend", "index"):
            config = _replace(config, **{key: value})
        else:
            raise ValueError(f"unknown setting {key!r} in {text!r}; use threads, backend, index, mode, "
                             f"detect_workers, embed_workers or cv_threads")
    return config


def parse_pair(text: str) -> tuple[Config, Config]:
    """Parse "A,B" into two configurations."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--compare takes two configurations separated by a comma, got {text!r}")
    return parse_config(parts[0]), parse_config(parts[1])


def run_comparison(context: BenchContext, frames: list[BenchFrame], pair: tuple[Config, Config], rounds: int,
                   frames_per_round: int) -> dict:
    """Run both configurations `rounds` times, alternating; return each side's figures and B / A ratios."""
    sides = [_Side(context, config) for config in pair]
    for side in sides:
        side.run(frames, min(len(frames), 2))  # warm-up, not kept
        side.reset()

    for round_number in range(rounds):
        order = sides if round_number % 2 == 0 else sides[::-1]
        for side in order:
            side.run(frames, frames_per_round)

    a, b = (side.summary() for side in sides)
    ratios = {"fps": ratio(b["fps"], a["fps"])}
    for stage in STAGES:
        if stage in a["stages_ms"] and stage in b["stages_ms"]:
            ratios[stage] = ratio(b["stages_ms"][stage], a["stages_ms"][stage])
    return {"a": a, "b": b, "ratio_b_over_a": ratios, "rounds": rounds, "frames_per_round": frames_per_round}


class _Side:
    def __init__(self, context: BenchContext, config: Config):
        self.config = config
        threads = config.threads if config.threads else None
        self.recognizer = context.recognizer(config.backend, threads, config.index)
        self.reset()

    def reset(self) -> None:
        self.fps: list[float] = []
        self.timings: dict[str, list[float]] = {stage: [] for stage in STAGES}

    def run(self, frames: list[BenchFrame], count: int) -> None:
        if self.config.cv_threads is not None:
            import cv2

            cv2.setNumThreads(self.config.cv_threads)
        if self.config.mode == "pipelined":
            result = run_pipelined(self.recognizer, frames, count, detect_workers=self.config.detect_workers,
                                   embed_workers=self.config.embed_workers)
            self.fps.append(result.fps)
        else:
            self._run_sequential(frames, count)
        if self.config.cv_threads is not None:
            import cv2

            cv2.setNumThreads(-1)  # back to OpenCV's default for the other side

    def _run_sequential(self, frames: list[BenchFrame], count: int) -> None:
        import time

        start = time.perf_counter()
        for number in range(count):
            result = self.recognizer.recognize(frames[number % len(frames)].decode())
            for stage in STAGES:
                self.timings[stage].append(result.timings_ms.get(stage, 0.0))
        self.fps.append(count / (time.perf_counter() - start))

    def summary(self) -> dict:
        return {
            "config": self.config.text,
            "fps": round(float(np.median(self.fps)), 3),
            "stages_ms": {stage: round(float(np.mean(values)), 3) for stage, values in self.timings.items() if values},
        }


def _with_int(config: Config, key: str, value: str) -> Config:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"setting {key} must be an integer, got {value!r}") from None
    least = 1 if key in ("detect_workers", "embed_workers") else 0
    if number < least:
        raise ValueError(f"setting {key} must be at least {least}, got {number}")
    return _replace(config, **{key: number})


def _replace(config: Config, **changes) -> Config:
    from dataclasses import replace

    return replace(config, **changes)
