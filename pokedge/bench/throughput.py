"""End-to-end throughput: sequential frames per second against a threaded pipeline, and frame-to-result latency.

The pipeline overlaps four stages in threads joined by bounded queues:
capture (JPEG decode), detection with warp and preprocessing, embedding with
search and the second look, and the decision with the tracker update. OpenCV,
ONNX Runtime and FAISS release the GIL inside their native calls, so the
stages run in parallel on separate cores. Results are put back into frame
order before the tracker update, which needs frames in order.

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

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from pokedge.bench.frames import BenchFrame
from pokedge.bench.stats import ratio, summarize
from pokedge.preprocess import prepare_batch
from pokedge.recognition.pipeline import Recognizer

QUEUE_DEPTH = 2  # frames waiting between two stages; bounds latency under load
_DONE = object()


@dataclass
class RunResult:
    """Frames per second, per-frame latency (ms, from capture start to the result) and CPU time of one run."""

    fps: float
    latencies_ms: list[float]
    cpu_s: float = 0.0  # CPU seconds of the whole process (every thread) during the run
    wall_s: float = 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        frames = self.fps * self.wall_s
        return self.cpu_s * 1000.0 / frames if frames else 0.0

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
    return RunResult(count / wall, latencies, time.process_time() - cpu, wall)


def run_pipelined(recognizer: Recognizer, frames: list[BenchFrame], count: int, tracker=None,
                  detect_workers: int = 1, embed_workers: int = 1) -> RunResult:
    """Recognize `count` frames with capture, detection, embedding and search in overlapping threads."""
    pipeline = _Pipeline(recognizer, frames, count, tracker, detect_workers, embed_workers)
    return pipeline.run()


class _StageExit:
    """Counts the workers of a stage that have finished; the last one puts end markers into the next queue."""

    def __init__(self, workers: int, next_queue: queue.Queue, markers: int):
        self._left = workers
        self._lock = threading.Lock()
        self._next_queue = next_queue
        self._markers = markers

    def finish(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            for _ in range(self._markers):
                self._next_queue.put(_DONE)


class _Pipeline:
    def __init__(self, recognizer: Recognizer, frames: list[BenchFrame], count: int, tracker, detect_workers: int,
                 embed_workers: int):
        if detect_workers < 1:
            raise ValueError(f"detect_workers must be at least 1, got {detect_workers}")
        if embed_workers < 1:
            raise ValueError(f"embed_workers must be at least 1, got {embed_workers}")
        self.recognizer = recognizer
        self.frames = frames
        self.count = count
        self.tracker = tracker
        self.detect_workers = detect_workers
        self.embed_workers = embed_workers
        self.to_detect: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.to_embed: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.to_search: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.errors: list[BaseException] = []
        self.exits = {
            self._capture: _StageExit(1, self.to_detect, detect_workers),
            self._detect: _StageExit(detect_workers, self.to_embed, embed_workers),
            self._embed: _StageExit(embed_workers, self.to_search, 1),
        }

    def run(self) -> RunResult:
        threads = [threading.Thread(target=self._guard(self._capture), name="bench-capture")]
        threads += [threading.Thread(target=self._guard(self._detect), name=f"bench-detect-{n}")
                    for n in range(self.detect_workers)]
        threads += [threading.Thread(target=self._guard(self._embed), name=f"bench-embed-{n}")
                    for n in range(self.embed_workers)]

        cpu, start = time.process_time(), time.perf_counter()
        for thread in threads:
            thread.start()
        latencies = self._search()
        result = _result(self.count, start, cpu, latencies)
        for thread in threads:
            thread.join()

        if self.errors:
            raise self.errors[0]
        return result

    def _guard(self, stage):
        """Wrap a stage so an exception is kept for run() to raise and the stages after it still finish."""
        def run_stage():
            try:
                stage()
            except BaseException as exc:  # re-raised by run() on the calling thread
                self.errors.append(exc)
                self._drain_input(stage)
            self.exits[stage].finish()
        return run_stage

    def _drain_input(self, stage) -> None:
        """Take a failed stage's remaining input up to its end marker, so the stage before it does not block."""
        inputs = {self._detect: self.to_detect, self._embed: self.to_embed}.get(stage)
        if inputs is not None:
            while inputs.get() is not _DONE:
                pass

    def _capture(self) -> None:
        for number in range(self.count):
            began = time.perf_counter()
            self.to_detect.put((number, began, self.frames[number % len(self.frames)].decode()))

    def _detect(self) -> None:
        recognizer = self.recognizer
        while (item := self.to_detect.get()) is not _DONE:
            number, began, image = item
            detections = recognizer.detector.detect(image)
            crops = recognizer.main_crops(image, detections)
            batch = prepare_batch([c.image for c in crops], recognizer.backend.contract)
            self.to_embed.put((number, began, image, detections, crops, batch))

    def _embed(self) -> None:
        """Embed and search a frame's main crops, then take the second look for the cards left unmatched."""
        recognizer = self.recognizer
        while (item := self.to_embed.get()) is not _DONE:
            number, began, image, detections, crops, batch = item
            hits = self._embed_and_search(batch)

            second = recognizer.alternative_crops(image, detections, recognizer.unsure(detections, crops, hits))
            if second:
                crops = crops + second
                hits += self._embed_and_search(prepare_batch([c.image for c in second], recognizer.backend.contract))

            self.to_search.put((number, began, detections, crops, hits))

    def _embed_and_search(self, batch: np.ndarray) -> list:
        if not len(batch):
            return []
        recognizer = self.recognizer
        return list(recognizer.index.search(recognizer.backend.embed(batch), max(recognizer.top_k, 5)))

    def _search(self) -> list[float]:
        """Decide and update the tracker in frame order; return the latency of every frame."""
        recognizer = self.recognizer
        pending: dict[int, tuple[float, list]] = {}
        latencies: list[float] = []
        next_number = 0
        while (item := self.to_search.get()) is not _DONE:
            number, began, detections, crops, hits = item
            cards, _ = recognizer.choose(detections, crops, hits)
            pending[number] = (began, cards)
            while next_number in pending:
                began, cards = pending.pop(next_number)
                if self.tracker is not None:
                    self.tracker.update(next_number, began, cards)
                latencies.append((time.perf_counter() - began) * 1000.0)
                next_number += 1
        return latencies


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
