"""End-to-end throughput: sequential frames per second against a threaded pipeline, and frame-to-result latency.

The pipelined run uses pokedge.recognition.stream.FrameStream, as the daemon
does. A capture thread decodes the JPEG frames and submits them. Detection
workers detect, warp and preprocess. Embedding workers embed, search, take
the second look and choose. The calling thread takes the results in frame
order and updates the tracker, which needs frames in order.

The embedding stage may run several workers that call one ONNX Runtime
session at once, each on its own frame. With one ORT thread per call and a
worker per core, embedding fills every core that detection leaves idle. One
worker with one ORT thread leaves a core idle whenever detection waits for
the embedding, and ORT threads of a shared pool stall when detection takes
their core in the middle of a parallel step. A worker searches its frame's
main crops itself and embeds the alternative quads of the cards they leave
unmatched, so the second look of one frame overlaps the work on the next.

With all frames ready at once the pipeline runs saturated, so its latency is
the latency under full load (queueing included), not that of a camera paced
below the pipeline's rate.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from pokedge.bench.frames import BenchFrame
from pokedge.bench.stats import ratio, summarize
from pokedge.recognition.pipeline import Recognizer
from pokedge.recognition.stream import QUEUE_DEPTH, FrameStream

SUBMIT_POLL_S = 0.1  # how often a capture thread blocked on a full stream checks whether the run was abandoned


@dataclass
class RunResult:
    """Frames per second, per-frame latency (ms, from capture start to the result) and CPU time of one run."""

    fps: float
    latencies_ms: list[float]
    frames: int = 0
    cpu_s: float = 0.0  # CPU seconds of the whole process (every thread) during the run
    wall_s: float = 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return self.cpu_s * 1000.0 / self.frames if self.frames else 0.0

    @property
    def utilization(self) -> float:
        """Busy cores on average: CPU time over wall time."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def run_sequential(recognizer: Recognizer, frames: list[BenchFrame], count: int, tracker=None) -> RunResult:
    """Decode and recognize `count` frames one after another on the calling thread."""
    latencies = []
    cpu, start = time.process_time(), time.perf_counter()
    for number in range(count):
        began = time.perf_counter()
        result = recognizer.recognize(frames[number % len(frames)].decode())
        if tracker is not None:
            tracker.update(number, began, result.cards)
        latencies.append((time.perf_counter() - began) * 1000.0)
    return _result(count, start, cpu, latencies)


def _result(count: int, start: float, cpu: float, latencies: list[float]) -> RunResult:
    wall = time.perf_counter() - start
    return RunResult(count / wall, latencies, count, time.process_time() - cpu, wall)


def run_pipelined(recognizer: Recognizer, frames: list[BenchFrame], count: int, tracker=None,
                  detect_workers: int = 1, embed_workers: int = 1) -> RunResult:
    """Recognize `count` frames with capture, detection, embedding and search in overlapping threads.

    Raise the first frame's exception after every frame has come back.
    """
    stream = FrameStream(recognizer, detect_workers, embed_workers, QUEUE_DEPTH, name="bench-stream")
    capture = _Capture(stream, frames, count)
    cpu, start = time.process_time(), time.perf_counter()
    capture.thread.start()
    try:
        latencies, errors = _collect(stream, capture, count, tracker)
        result = _result(count, start, cpu, latencies)
    finally:
        capture.abandoned.set()
        capture.thread.join()
        stream.close()

    if capture.error is not None:
        raise capture.error
    if errors:
        raise errors[0]
    return result


class _Capture:
    """Decodes the bench frames on its own thread and submits them to the stream with their start time."""

    def __init__(self, stream: FrameStream, frames: list[BenchFrame], count: int):
        self.stream = stream
        self.frames = frames
        self.count = count
        self.error: BaseException | None = None
        self.abandoned = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-capture")

    def _run(self) -> None:
        try:
            for number in range(self.count):
                began = time.perf_counter()
                image = self.frames[number % len(self.frames)].decode()
                while not self.stream.submit((number, began), image, timeout=SUBMIT_POLL_S):
                    if self.abandoned.is_set():
                        return
        except BaseException as exc:  # re-raised by run_pipelined on the calling thread
            self.error = exc

    @property
    def finished(self) -> bool:
        return not self.thread.is_alive()


def _collect(stream: FrameStream, capture: _Capture, count: int, tracker) -> tuple[list[float], list[BaseException]]:
    """Take the results in frame order and update the tracker. Return every frame's latency and the errors."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    received = 0
    while received < count:
        item = stream.get(timeout=SUBMIT_POLL_S)
        if item is None:
            if capture.finished and not stream.in_flight:
                break  # the capture thread stopped early (run_pipelined raises its error); nothing more comes
            continue

        received += 1
        (number, began), outcome = item
        if isinstance(outcome, BaseException):
            errors.append(outcome)
            continue
        if tracker is not None:
            tracker.update(number, began, outcome.cards)
        latencies.append((time.perf_counter() - began) * 1000.0)
    return latencies, errors


def measure_throughput(recognizer: Recognizer, pipelined_recognizer: Recognizer, frames: list[BenchFrame],
                       count: int, rounds: int, tracker_factory=None, detect_workers: int = 1,
                       embed_workers: int = 1, cores: int = 1) -> dict:
    """Alternate sequential and pipelined runs `rounds` times; return median fps, latency and their ratio.

    The two recognizers share the gallery and index and may differ in their
    backend's thread count. Each round also runs the pipelined recognizer
    sequentially to measure the CPU time a frame needs with one thread per
    stage: `cores` over that time is the rate of a pipeline that kept every
    core busy with no overhead, the bound for the pipelined rate.
    """
    run_sequential(recognizer, frames, min(len(frames), 2))  # warm-up, not timed
    run_sequential(pipelined_recognizer, frames, min(len(frames), 2))
    sequential, pipelined, single = [], [], []
    for _ in range(rounds):
        sequential.append(run_sequential(recognizer, frames, count, _new(tracker_factory)))
        pipelined.append(run_pipelined(pipelined_recognizer, frames, count, _new(tracker_factory), detect_workers,
                                       embed_workers))
        single.append(run_sequential(pipelined_recognizer, frames, count, _new(tracker_factory)))

    fps_sequential = float(np.median([r.fps for r in sequential]))
    fps_pipelined = float(np.median([r.fps for r in pipelined]))
    cpu_ms = float(np.median([r.cpu_ms_per_frame for r in single]))
    fps_bound = cores * 1000.0 / cpu_ms if cpu_ms > 0 else 0.0
    return {
        "sequential": round(fps_sequential, 3),
        "pipelined": round(fps_pipelined, 3),
        "pipelined_vs_sequential": ratio(fps_pipelined, fps_sequential),
        "cpu_ms_per_frame": round(cpu_ms, 1),
        "pipelined_bound": round(fps_bound, 3),
        "pipelined_bound_vs_sequential": ratio(fps_bound, fps_sequential),
        "pipelined_cpu_utilization": round(float(np.median([r.utilization for r in pipelined])), 2),
        "frames_per_run": count,
        "rounds": rounds,
        "detect_workers": detect_workers,
        "embed_workers": embed_workers,
        "latency_ms": {
            "sequential": summarize(v for r in sequential for v in r.latencies_ms),
            "pipelined": summarize(v for r in pipelined for v in r.latencies_ms),
        },
    }


def _new(factory):
    return factory() if factory else None
