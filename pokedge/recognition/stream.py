"""Recognizing a stream of frames in overlapping threads, with results handed back in submission order.

Detection workers detect the cards of a frame, warp their main quads and
prepare the model batch. Embedding workers embed and search that batch,
take the second look at the cards it leaves unmatched (their alternative
quads) and choose each card's result. OpenCV, ONNX Runtime and FAISS release
the GIL inside their native calls, so the workers of both stages run on
separate cores at once, each on its own frame.

The caller submits frames from one thread and takes the results with `get`
from one thread, in submission order, each as `(tag, FrameResult)` or
`(tag, exception)`: an exception raised while recognizing one frame is that
frame's result and the stream goes on. At most `capacity` frames are in
flight, from `submit` to `get`. `submit` blocks while the stream is full,
so a live source that keeps only its newest frame drops the stale ones
itself. The queues between the stages are unbounded, so no worker blocks
on a put, and `close` joins the workers with a timeout.

Several embedding workers call one backend at once. ONNX Runtime allows
concurrent `InferenceSession.run` calls on one session; a backend that does
not (the Hailo backend, the fallback wrapper) needs `embed_workers=1`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pokedge.preprocess import prepare_batch
from pokedge.recognition.pipeline import FrameResult, Recognizer, add_stage_ms

_log = logging.getLogger(__name__)

QUEUE_DEPTH = 2  # frames that may wait in front of each stage; bounds the latency under load
JOIN_TIMEOUT_S = 5.0  # how long close() waits for each worker thread
_STOP = object()


@dataclass
class _Job:
    """One frame on its way through the stream."""

    number: int
    tag: Any
    image: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    detections: list = field(default_factory=list)
    crops: list = field(default_factory=list)
    batch: np.ndarray | None = None


class _StageExit:
    """Counts the finished workers of a stage; the last one puts one stop marker per worker into the next stage."""

    def __init__(self, workers: int, next_queue: queue.SimpleQueue | None, markers: int):
        self._left = workers
        self._lock = threading.Lock()
        self._next_queue = next_queue
        self._markers = markers

    def finish(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last and self._next_queue is not None:
            for _ in range(self._markers):
                self._next_queue.put(_STOP)


class FrameStream:
    """Recognizes submitted frames in detection and embedding worker threads; `get` returns them in order."""

    def __init__(self, recognizer: Recognizer, detect_workers: int = 1, embed_workers: int = 1,
                 depth: int = QUEUE_DEPTH, name: str = "stream"):
        for key, value, least in (("detect_workers", detect_workers, 1), ("embed_workers", embed_workers, 1),
                                  ("depth", depth, 0)):
            if value < least:
                raise ValueError(f"{key} must be at least {least}, got {value}")
        self.recognizer = recognizer
        self.detect_workers = detect_workers
        self.embed_workers = embed_workers
        self.name = name
        # Every worker busy plus `depth` frames waiting in front of each of the two stages.
        self.capacity = detect_workers + embed_workers + 2 * depth

        self._slots = threading.Semaphore(self.capacity)
        self._to_detect: queue.SimpleQueue = queue.SimpleQueue()
        self._to_embed: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._finished: dict[int, tuple[Any, FrameResult | BaseException]] = {}  # out of order, consumer side
        self._lock = threading.Lock()
        self._submitted = 0
        self._completed = 0
        self._returned = 0
        self._last_progress = time.monotonic()
        self._closed = threading.Event()
        self._threads = self._start_threads()
        _log.info("%s started: %d detection and %d embedding worker(s), at most %d frames in flight", name,
                  detect_workers, embed_workers, self.capacity)

    def _start_threads(self) -> list[threading.Thread]:
        detect_exit = _StageExit(self.detect_workers, self._to_embed, self.embed_workers)
        embed_exit = _StageExit(self.embed_workers, None, 0)
        threads = [threading.Thread(target=self._work, args=(self._to_detect, self._detect, detect_exit),
                                    name=f"{self.name}-detect-{n}", daemon=True)
                   for n in range(self.detect_workers)]
        threads += [threading.Thread(target=self._work, args=(self._to_embed, self._embed, embed_exit),
                                     name=f"{self.name}-embed-{n}", daemon=True)
                    for n in range(self.embed_workers)]
        for thread in threads:
            thread.start()
        return threads

    # -- the caller's side -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Frames submitted and not yet returned by `get`."""
        with self._lock:
            return self._submitted - self._returned

    @property
    def full(self) -> bool:
        return self.in_flight >= self.capacity

    def submit(self, tag: Any, image: np.ndarray, timeout: float | None = None) -> bool:
        """Queue a BGR frame; block while `capacity` frames are in flight, up to `timeout` seconds (None: no limit).

        Return False when the timeout passed without a free place. Raise
        RuntimeError after `close`.
        """
        if self._closed.is_set():
            raise RuntimeError(f"{self.name} is closed; build a new FrameStream")
        if not self._slots.acquire(timeout=timeout):
            return False

        with self._lock:
            number = self._submitted
            if self._submitted == self._completed:
                self._last_progress = time.monotonic()  # the workers were idle until now
            self._submitted += 1
        self._to_detect.put(_Job(number, tag, image))
        return True

    def get(self, timeout: float | None = None) -> tuple[Any, FrameResult | BaseException] | None:
        """Return the next frame's `(tag, FrameResult or exception)` in submission order.

        Wait up to `timeout` seconds (None: until it is done) and return None
        when it is not done by then.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._returned not in self._finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                number, tag, outcome = self._done.get(timeout=remaining)
            except queue.Empty:
                return None
            self._finished[number] = (tag, outcome)

        item = self._finished.pop(self._returned)
        with self._lock:
            self._returned += 1
        self._slots.release()
        return item

    def stalled_s(self) -> float:
        """Return the seconds the workers have had frames to work on without finishing one (0 when idle)."""
        with self._lock:
            if self._submitted == self._completed:
                return 0.0
            return time.monotonic() - self._last_progress

    def close(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the workers, dropping frames not yet recognized; return False when a thread did not end in time.

        Frames still queued are dropped without being recognized. A worker
        inside a native call that never returns cannot be stopped: it is
        left behind as a daemon thread and logged.
        """
        if self._closed.is_set():
            return True
        self._closed.set()
        for _ in range(self.detect_workers):
            self._to_detect.put(_STOP)

        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        with self._lock:
            dropped = self._submitted - self._returned
        if alive:
            _log.error("%s: worker thread(s) %s still running %.1f s after close; left behind", self.name,
                       ", ".join(alive), timeout)
        _log.info("%s stopped after %d frames (%d in flight dropped)", self.name, self._returned, dropped)
        return not alive

    # -- the workers -------------------------------------------------------------------------------

    def _work(self, inputs: queue.SimpleQueue, step, stage_exit: _StageExit) -> None:
        """Run `step` on every job from `inputs` until a stop marker; a failed job becomes that frame's result."""
        try:
            while (job := inputs.get()) is not _STOP:
                if self._closed.is_set():
                    continue  # dropped, because no caller takes results after close
                try:
                    step(job)
                except Exception as exc:  # the frame's result; the caller logs it with the tag
                    self._complete(job, exc)
                except BaseException as exc:  # still the frame's result, but this worker stops
                    _log.error("%s: %s stopped on frame %d by %s", self.name, threading.current_thread().name,
                               job.number, type(exc).__name__)
                    self._complete(job, exc)
                    raise
        finally:
            stage_exit.finish()

    def _detect(self, job: _Job) -> None:
        """Detect the cards, warp their main quads and prepare the model batch."""
        recognizer = self.recognizer
        clock = time.perf_counter()
        job.detections = recognizer.detector.detect(job.image)
        add_stage_ms(job.timings, "detect", clock)

        job.crops = recognizer.main_crops(job.image, job.detections)
        clock = time.perf_counter()
        job.batch = prepare_batch([crop.image for crop in job.crops], recognizer.backend.contract)
        add_stage_ms(job.timings, "preprocess", clock)
        self._to_embed.put(job)

    def _embed(self, job: _Job) -> None:
        """Embed and search the main crops, take the second look at the unmatched cards and choose the results."""
        recognizer = self.recognizer
        crops = job.crops
        hits = recognizer.search_crops(crops, job.batch, job.timings)

        unsure = recognizer.unsure(job.detections, crops, hits)
        if unsure:
            second = recognizer.alternative_crops(job.image, job.detections, unsure)
            clock = time.perf_counter()
            batch = prepare_batch([crop.image for crop in second], recognizer.backend.contract)
            add_stage_ms(job.timings, "preprocess", clock)
            crops = crops + second
            hits += recognizer.search_crops(second, batch, job.timings)

        cards, rejected = recognizer.choose(job.detections, crops, hits, job.image, job.timings)
        self._complete(job, FrameResult(cards, job.timings, rejected))

    def _complete(self, job: _Job, outcome: FrameResult | BaseException) -> None:
        with self._lock:
            self._completed += 1
            self._last_progress = time.monotonic()
        job.image = job.batch = None  # free the frame before the caller takes the result
        self._done.put((job.number, job.tag, outcome))


def usable_cores() -> int:
    """Return the cores this process may run on (its CPU affinity where the OS reports it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
