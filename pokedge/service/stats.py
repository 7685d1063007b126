"""The service's Prometheus metrics, and the frame-rate meter behind pokedge_fps."""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from typing import Callable

from pokedge import __version__
from pokedge.service.metrics import Registry

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class FpsMeter:
    """Frames per second over the last `window` frames; 0 once no frame came for `idle_after` seconds."""

    def __init__(self, window: int = 30, idle_after: float = 2.0):
        self._times: deque[float] = deque(maxlen=window)
        self.idle_after = idle_after

    def tick(self, clock: float | None = None) -> None:
        self._times.append(time.monotonic() if clock is None else clock)

    @property
    def fps(self) -> float:
        if len(self._times) < 2 or self.stale(self.idle_after):
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def stale(self, max_age: float) -> bool:
        """True when no frame came within `max_age` seconds."""
        return not self._times or time.monotonic() - self._times[-1] > max_age


def resident_memory_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ServiceMetrics:
    """Every metric /metrics shows; `sample` callbacks read counts owned by the source, scan log and bus."""

    def __init__(self, sample: dict[str, Callable[[], float | dict]]):
        registry = Registry()
        self.registry = registry
        self.frames = registry.counter("pokedge_frames_total", "Frames run through the recognizer.")
        self.frame_errors = registry.counter("pokedge_frame_errors_total",
                                             "Frames whose recognition raised an error and were skipped.")
        self.fps = registry.gauge("pokedge_fps", "Frames recognized per second over the last 30 frames.")
        self.latency = registry.histogram("pokedge_stage_latency_seconds",
                                          "Time spent per frame in each stage (detect, preprocess, embed, search, "
                                          "track) and in total (frame).", ["stage"])
        self.confirmations = registry.counter("pokedge_confirmations_total", "Cards confirmed.")
        self.unknowns = registry.counter("pokedge_unknowns_total", "Cards reported as unknown_card.")
        self.low_confidence = registry.counter("pokedge_low_confidence_total", "Cards reported as low_confidence.")
        self.fallbacks = registry.counter("pokedge_backend_fallbacks_total",
                                          "Switches from the Hailo backend to ONNX Runtime after a device failure.")
        self.reloads = registry.counter("pokedge_reloads_total", "Model and gallery reloads by result.", ["result"])
        self.tracks = registry.gauge("pokedge_tracks", "Cards tracked in the latest frame.")
        self.info = registry.gauge("pokedge_info", "Running versions; the value is always 1.",
                                   ["version", "model", "gallery", "backend", "source"])

        registry.sampled("pokedge_camera_reopens_total", "Times the frame source was reopened after a fault.",
                         "counter", sample["camera_reopens"])
        registry.sampled("pokedge_camera_up", "1 while the frame source delivers frames, else 0.", "gauge",
                         sample["camera_up"])
        registry.sampled("pokedge_frames_corrupt_total", "Corrupt frames skipped.", "counter", sample["corrupt"])
        registry.sampled("pokedge_frames_dropped_total",
                         "Recorded frames skipped to keep the native rate, or camera frames replaced by newer ones.",
                         "counter", sample["dropped"])
        registry.sampled("pokedge_scanlog_write_errors_total", "Failed scan log writes (each retried).", "counter",
                         sample["scanlog_errors"])
        registry.sampled("pokedge_scanlog_pending", "Scan records waiting to be written.", "gauge",
                         sample["scanlog_pending"])
        registry.sampled("pokedge_event_clients", "Open /events streams.", "gauge", sample["event_clients"])
        registry.sampled("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
                         resident_memory_bytes)

    def set_info(self, model: str, gallery: str, backend: str, source: str) -> None:
        self.info.clear()
        self.info.set(1, version=__version__, model=model, gallery=gallery, backend=backend, source=source)

    def observe_frame(self, timings_ms: dict[str, float], track_s: float, total_s: float) -> None:
        self.frames.inc()
        for stage, ms in timings_ms.items():
            self.latency.observe(ms / 1000.0, stage=stage)
        self.latency.observe(track_s, stage="track")
        self.latency.observe(total_s, stage="frame")

    def render(self) -> str:
        return self.registry.render()
