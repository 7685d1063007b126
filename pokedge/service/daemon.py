"""The daemon behind `pokedge serve`: start-up, the frame loop, signals, reload and a clean stop.

The frame loop runs on the calling (main) thread: read a frame, recognize
it, update the card tracks, publish decisions, ping the systemd watchdog.
The HTTP API, the scan log writer and a reload each have their own thread.
With `recognition = "pipelined"` (the default on 2 or more usable cores) the
loop submits each frame to a FrameStream, whose worker threads detect,
embed and search several frames at once, and takes the results back in
frame order. Everything else (tracks, events, metrics, the watchdog, status,
reloads, the fallback check) stays on the main thread.

- READY=1 goes out once the model is loaded and the first frame arrived,
  or after `camera_wait` seconds with the camera still down (the service
  then runs degraded and keeps reopening the camera).
- WATCHDOG=1 is sent from the loop only, so a hung loop stops the pings
  and systemd restarts the service. In pipelined mode the loop also stops
  pinging while the recognition threads have frames but finished none for
  a quarter of the watchdog timeout.
- SIGTERM and SIGINT stop the loop after the current frame. The stop takes
  well under 5 s: at most one frame, one read timeout and the scan log flush.
  In pipelined mode the frames in flight get up to STOP_FLUSH_S to finish
  and the worker threads up to STREAM_JOIN_S to end.
- SIGHUP reloads model and gallery on a worker thread; the camera stays
  open and the loop keeps running on the old recognizer until the swap.
  In pipelined mode the loop stops reading frames once the new recognizer
  is ready, finishes the frames in flight on the old one, then swaps and
  starts a new stream on the new one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from functools import partial
from typing import Any

from pokedge import __version__, paths
from pokedge.backends.onnx import OnnxBackend
from pokedge.capture.base import EndOfStream, Frame, FrameSource
from pokedge.capture.sources import build_source, parse_source_spec
from pokedge.capture.supervisor import SupervisedSource
from pokedge.errors import PokedgeError
from pokedge.recognition.pipeline import FrameResult
from pokedge.recognition.stream import FrameStream, usable_cores
from pokedge.service.config import ServiceConfig
from pokedge.service.events import EventBus
from pokedge.service.http import ApiServer
from pokedge.service.notify import Notifier, Watchdog, watchdog_interval
from pokedge.service.ratelimit import RateLimitedLog
from pokedge.service.recognizers import LoadedRecognizer, Reloader, load_recognizer
from pokedge.service.results import ResultSink
from pokedge.service.scanlog import ScanLog
from pokedge.service.stats import FpsMeter, ServiceMetrics
from pokedge.service.tracker import CardTracker

_log = logging.getLogger(__name__)

SCANLOG_DIR = "scanlog"
# Recognition failures in a row after which the backend is reopened through a reload.
ERRORS_BEFORE_REOPEN = 10
REOPEN_BACKEND_EVERY_S = 30.0
# Pipelined recognition: frames waiting in front of each stage of the stream, beyond one a worker.
STREAM_DEPTH = 1
PIPELINE_ORT_THREADS = 1  # ONNX Runtime threads per call when `threads` is unset; the workers share the cores
DRAIN_WAIT_S = 0.25  # how long one loop pass waits for a result while the stream drains
STOP_FLUSH_S = 1.0  # how long a stop waits for the frames in flight
STREAM_JOIN_S = 1.0  # how long a stop or swap waits for the stream's threads to end


class Daemon:
    """One running service; `run` blocks until `request_stop` (or SIGTERM) and returns the exit status."""

    def __init__(self, config: ServiceConfig, *, source: FrameSource | None = None, loader=None,
                 notifier: Notifier | None = None):
        self.config = config
        self.data_dir = config.data_dir or paths.data_dir()
        spec = parse_source_spec(config.source)
        raw_source = source or build_source(spec, loop=config.loop, realtime=config.realtime, camera=config.camera,
                                            folder_fps=config.folder_fps)
        self.source = SupervisedSource(raw_source, stall_reads=config.stall_reads)
        self.recognition = recognition_mode(config.recognition)
        threads = config.threads
        if threads is None and self.recognition == "pipelined":
            threads = PIPELINE_ORT_THREADS
        self._load = loader or partial(load_recognizer, config.model, config.gallery, self.data_dir, config.backend,
                                       threads, read_numbers=config.read_numbers,
                                       strip_extensions=config.strip_extensions)
        self.notifier = notifier or Notifier()
        self.watchdog = Watchdog(self.notifier, watchdog_interval())
        self.bus = EventBus()
        self.scanlog: ScanLog | None = None
        self.loaded: LoadedRecognizer | None = None
        self.tracker: CardTracker | None = None
        self.reloader = Reloader(self._load)
        self.metrics = ServiceMetrics(self._samplers())
        self.sink = ResultSink(self.bus, None, self.metrics)
        self.http: ApiServer | None = None
        self.fps = FpsMeter()
        self.state = "starting"
        self.started_at = time.time()
        self.frames = 0
        self.errors_in_row = 0
        self.source_ended = False

        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._ready = False
        self._reload_failures_seen = 0
        self._reloading = False
        self._last_reopen_attempt = 0.0
        self._fallback_backend: int | None = None
        self._last_status = 0.0
        self._last_camera_state = ""
        self._tracks: list[dict[str, Any]] = []
        self._card_state = "no_card"
        self._errors = RateLimitedLog(_log, 60.0)
        self._stream: FrameStream | None = None
        self._next_loaded: LoadedRecognizer | None = None  # a reload waiting for the stream to drain
        self._restart_stream = False  # the backend changed; rebuild the stream once it drained
        self._end_seen = False  # the source ended; report it once the stream drained
        self._stall_logged = False

    def _samplers(self) -> dict[str, Any]:
        return {
            "camera_reopens": lambda: self.source.reopens,
            "camera_up": lambda: 1.0 if self.source.state == "ok" else 0.0,
            "corrupt": lambda: self.source.corrupt_frames,
            "dropped": lambda: self.source.health().dropped_frames,
            "scanlog_errors": lambda: self.scanlog.write_errors if self.scanlog else 0,
            "scanlog_pending": lambda: self.scanlog.stats()["pending"] if self.scanlog else 0,
            "event_clients": lambda: self.bus.subscribers,
        }

    # -- control -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads; call from the main thread before `run`."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self._on_stop_signal(signum))
        signal.signal(signal.SIGINT, lambda signum, frame: self._on_stop_signal(signum))
        signal.signal(signal.SIGHUP, lambda signum, frame: self._on_reload_signal())

    def _on_stop_signal(self, signum: int) -> None:
        _log.info("received %s; stopping", signal.Signals(signum).name)
        self._stop.set()

    def _on_reload_signal(self) -> None:
        _log.info("received SIGHUP; reloading model and gallery")
        self._reload_requested.set()

    # -- lifecycle ---------------------------------------------------------------------------------

    def run(self) -> int:
        _log.info("pokedge %s starting (pid %d): source %s, HTTP %s, data %s", __version__, os.getpid(),
                  self.source.name, self.config.http, self.data_dir)
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _start(self) -> None:
        self.notifier.status("starting: opening the scan log")
        self.scanlog = ScanLog(self.data_dir / SCANLOG_DIR, save_images=self.config.save_images,
                               min_free_bytes=self.config.min_free_mb * 1024 * 1024).open()
        self.sink.scanlog = self.scanlog

        host, port = self.config.http_address()
        try:
            self.http = ApiServer(self, host, port, heartbeat=self.config.sse_heartbeat)
        except OSError as exc:
            raise PokedgeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another pokedge serve "
                               f"running? choose another port with --http HOST:PORT") from None
        self.http.start()

        self.notifier.status("starting: loading model and gallery")
        started = time.monotonic()
        self.loaded = self._load()
        self.tracker = CardTracker(self.loaded.recognizer.thresholds, self.config.tracker)
        self._set_info()
        _log.info("model and gallery loaded in %.1f s: %s", time.monotonic() - started, self.loaded.info)
        _log.info("recognition %s (setting %r, %d usable cores)", self.recognition, self.config.recognition,
                  usable_cores())
        if self.recognition == "pipelined":
            self._stream = self._open_stream(self.loaded)

        self.notifier.status(f"starting: opening {self.source.name}")
        self.source.open()

    def _shutdown(self) -> None:
        self.state = "stopping"
        started = time.monotonic()
        self.notifier.stopping("stopping")
        self._stop_stream()
        if self.http is not None:
            self.http.stop()
        self.source.close()
        if self.scanlog is not None:
            self.scanlog.close(timeout=2.0)
        if self.loaded is not None:
            self.loaded.close()
        self.notifier.close()
        _log.info("stopped in %.2f s after %d frames and %d decisions", time.monotonic() - started, self.frames,
                  self.sink.decisions)

    # -- the frame loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        ready_deadline = time.monotonic() + self.config.camera_wait
        while not self._stop.is_set():
            self._handle_reload()
            self._ping_watchdog()
            self._report_status()
            if not self._ready and time.monotonic() >= ready_deadline:
                self._send_ready()

            if self._stream is None:
                self._step()
            else:
                self._step_pipelined()

    def _step(self) -> None:
        """Read one frame and recognize it on this thread."""
        if self.source_ended:
            self._stop.wait(0.25)
            return
        try:
            frame = self._read()
        except EndOfStream:
            self._on_end_of_stream()
            return
        if frame is not None:
            self._process(frame)

    def _read(self) -> Frame | None:
        """Read a frame (None after a timeout or a skipped frame); raise EndOfStream at the end of a file."""
        frame = self.source.read(self.config.read_timeout)
        if frame is not None and not self._ready:
            self._send_ready()
        return frame

    def _process(self, frame: Frame) -> None:
        loaded = self.loaded
        started = time.perf_counter()
        try:
            result = loaded.recognizer.recognize(frame.image)
        except Exception as exc:  # one bad frame or a failing backend must not end the service
            self._on_frame_error(frame, exc)
            return
        self._publish(frame, loaded, result, started)

    def _publish(self, frame: Frame, loaded: LoadedRecognizer, result: FrameResult, started: float) -> None:
        """Update the tracks with a frame's cards, publish their events and record the frame's metrics."""
        self.errors_in_row = 0

        tracked = time.perf_counter()
        events = self.tracker.update(frame.sequence, frame.timestamp, result.cards)
        track_s = time.perf_counter() - tracked

        backend = loaded.recognizer.backend.name
        for event in events:
            try:
                self.sink.emit(event, loaded, backend)
            except Exception:  # publishing must not stop recognition; the event is lost, the error logged
                _log.exception("frame %d: publishing %s of track %d (card %s) failed", frame.sequence, event.kind,
                               event.track_id, event.card_id)

        self.frames += 1
        self.fps.tick()
        self.metrics.observe_frame(result.timings_ms, track_s, time.perf_counter() - started)
        self.metrics.fps.set(round(self.fps.fps, 2))
        self.metrics.tracks.set(len(self.tracker.tracks))
        self._tracks = [track.summary() for track in self.tracker.tracks]
        self._card_state = self.tracker.state
        self._check_fallback(loaded, frame)

    def _on_frame_error(self, frame: Frame, exc: BaseException) -> None:
        self.errors_in_row += 1
        self.metrics.frame_errors.inc()
        self._errors.error("frame", "frame %d: recognition failed (%d in a row), frame skipped: %s: %s",
                           frame.sequence, self.errors_in_row, type(exc).__name__, exc)
        clock = time.monotonic()
        if self.errors_in_row >= ERRORS_BEFORE_REOPEN and clock - self._last_reopen_attempt >= REOPEN_BACKEND_EVERY_S:
            self._last_reopen_attempt = clock
            _log.error("recognition failed on %d frames in a row; reopening the backend", self.errors_in_row)
            self._reload_requested.set()

    def _check_fallback(self, loaded: LoadedRecognizer, frame: Frame) -> None:
        """Count and announce a backend that switched from Hailo to ONNX Runtime."""
        backend = loaded.recognizer.backend
        if not hasattr(backend, "status") or self._fallback_backend == id(backend):
            return
        status = backend.status()
        if not status.get("fallback"):
            return
        self._fallback_backend = id(backend)
        self.metrics.fallbacks.inc()
        self._set_info()
        _log.warning("frame %d: backend fell back from %s to %s: %s", frame.sequence, status.get("requested"),
                     status.get("backend"), status.get("fallback_reason"))
        if self._stream is not None and embed_workers_for(backend) != self._stream.embed_workers:
            _log.info("restarting the recognition stream with %d embedding worker(s) for %s",
                      embed_workers_for(backend), backend.name)
            self._restart_stream = True
        self.bus.publish("status", {"backend": status, "message": "backend fell back to ONNX Runtime"})
        self.notifier.status(self._status_text())

    def _on_end_of_stream(self) -> None:
        self.source_ended = True
        health = self.source.health()
        _log.info("%s ended after %d frames; the API keeps serving until the service is stopped", self.source.name,
                  health.frames)
        self.bus.publish("status", {"source": health.to_dict(), "message": "source ended"})
        if not self._ready:
            self._send_ready()
        self.notifier.status(self._status_text())

    def _send_ready(self) -> None:
        self._ready = True
        self.state = "running"
        text = self._status_text()
        self.notifier.ready(text)
        log = _log.info if self.source.state in ("ok", "ended") else _log.error
        log("ready: %s", text)

    # -- pipelined recognition ---------------------------------------------------------------------

    def _open_stream(self, loaded: LoadedRecognizer) -> FrameStream:
        backend = loaded.recognizer.backend
        return FrameStream(loaded.recognizer, detect_workers=1, embed_workers=embed_workers_for(backend),
                           depth=STREAM_DEPTH, name=f"recognition stream ({backend.name})")

    def _step_pipelined(self) -> None:
        """Hand back finished frames, then read and submit one frame unless the stream must drain or is full."""
        stream = self._stream
        self._take_results(0.0)

        if self._next_loaded is not None or self._restart_stream:
            if stream.in_flight:
                self._take_results(DRAIN_WAIT_S)
            else:
                self._rebuild_stream()
            return
        if self.source_ended:
            self._stop.wait(0.25)
            return
        if self._end_seen:
            if stream.in_flight:
                self._take_results(DRAIN_WAIT_S)
            else:
                self._on_end_of_stream()  # only now: every frame of the file has been published
            return
        if stream.full:
            self._take_results(self.config.read_timeout)
            return

        try:
            frame = self._read()
        except EndOfStream:
            self._end_seen = True
            return
        if frame is not None:
            self._submit(frame)

    def _submit(self, frame: Frame) -> None:
        # The frame's metrics count from here, so its "frame" latency includes the wait in the stream.
        tag = (frame, self.loaded, time.perf_counter())
        if not self._stream.submit(tag, frame.image, timeout=self.config.read_timeout):
            self._on_frame_error(frame, TimeoutError("the recognition stream stayed full"))

    def _take_results(self, wait: float) -> None:
        """Publish every finished frame in order, waiting up to `wait` seconds for the first one."""
        item = self._stream.get(timeout=wait)
        while item is not None:
            self._on_result(*item)
            item = self._stream.get(timeout=0.0)

    def _on_result(self, tag: tuple[Frame, LoadedRecognizer, float], outcome: FrameResult | BaseException) -> None:
        frame, loaded, started = tag
        if isinstance(outcome, BaseException):
            self._on_frame_error(frame, outcome)
        else:
            self._publish(frame, loaded, outcome, started)

    def _rebuild_stream(self) -> None:
        """Close the drained stream, swap in a reloaded recognizer if one waits, and start a new stream."""
        self._stream.close(STREAM_JOIN_S)
        loaded, self._next_loaded = self._next_loaded, None
        self._restart_stream = False
        if loaded is not None:
            self._swap(loaded)
        self._stream = self._open_stream(self.loaded)

    def _stop_stream(self) -> None:
        """Publish the frames in flight (for at most STOP_FLUSH_S), then close the stream."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        deadline = time.monotonic() + STOP_FLUSH_S
        try:
            while stream.in_flight and (remaining := deadline - time.monotonic()) > 0:
                item = stream.get(timeout=remaining)
                if item is not None:
                    self._on_result(*item)
        except Exception:  # the stop must go on; the frames left are dropped
            _log.exception("publishing the frames in flight failed while stopping")
        if stream.in_flight:
            _log.warning("stopping with %d frame(s) still in recognition after %.1f s; they are dropped",
                         stream.in_flight, STOP_FLUSH_S)
        stream.close(STREAM_JOIN_S)
        if self._next_loaded is not None:
            self._next_loaded.close()
            self._next_loaded = None

    def _ping_watchdog(self) -> None:
        """Ping the watchdog unless the recognition threads have work and finished nothing for a while."""
        interval = self.watchdog.interval
        stalled = self._stream.stalled_s() if self._stream is not None else 0.0
        if interval is not None and stalled >= interval:
            if not self._stall_logged:
                self._stall_logged = True
                _log.error("the recognition threads finished no frame for %.1f s with %d in flight; watchdog "
                           "pings stop until they do", stalled, self._stream.in_flight)
            return
        if self._stall_logged:
            self._stall_logged = False
            _log.warning("the recognition threads finish frames again; watchdog pings resume")
        self.watchdog.ping()

    # -- reload ------------------------------------------------------------------------------------

    def _handle_reload(self) -> None:
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._reloading = True
            self.notifier.reloading("reloading model and gallery")
            self.reloader.request()

        loaded = self.reloader.take()
        if loaded is not None:
            self._take_reloaded(loaded)
        if self._reloading and self.reloader.idle and self._next_loaded is None:
            self._reloading = False
            if self.reloader.failures > self._reload_failures_seen:
                self._reload_failures_seen = self.reloader.failures
                self.metrics.reloads.inc(result="failed")
                self.bus.publish("status", {"message": "reload failed", "error": self.reloader.last_error})
            self.notifier.ready(self._status_text())

    def _take_reloaded(self, loaded: LoadedRecognizer) -> None:
        """Swap in a reloaded recognizer now, or in pipelined mode once the frames in flight are done."""
        if self._stream is None:
            self._swap(loaded)
            return
        if self._next_loaded is not None:
            self._next_loaded.close()  # a newer reload finished before the stream drained
        self._next_loaded = loaded
        _log.info("reload ready; finishing %d frame(s) in flight before the swap", self._stream.in_flight)

    def _swap(self, loaded: LoadedRecognizer) -> None:
        old, self.loaded = self.loaded, loaded
        self.tracker.thresholds = loaded.recognizer.thresholds
        self.metrics.reloads.inc(result="ok")
        self._set_info()
        _log.info("reloaded: model %s, gallery %s, version %s, backend %s (was model %s, gallery %s)",
                  loaded.info.get("model"), loaded.info.get("gallery"), loaded.info.get("version"),
                  loaded.recognizer.backend.name, old.info.get("model") if old else None,
                  old.info.get("gallery") if old else None)
        self.bus.publish("status", {"message": "reloaded", "versions": loaded.info})
        if old is not None:
            try:
                old.close()
            except Exception as exc:  # the new recognizer is already running; a failed close only leaks
                _log.warning("closing the previous backend after reload failed: %s", exc)

    # -- reporting ---------------------------------------------------------------------------------

    def _set_info(self) -> None:
        if self.loaded is None:
            return
        self.metrics.set_info(str(self.loaded.info.get("model")), str(self.loaded.info.get("gallery")),
                              self.loaded.recognizer.backend.name, self.source.name)

    def _report_status(self) -> None:
        if self.fps.stale(self.fps.idle_after):
            self.metrics.fps.set(0.0)
        clock = time.monotonic()
        camera_state = self.source.state
        if clock - self._last_status < self.config.status_interval and camera_state == self._last_camera_state:
            return
        self._last_status = clock
        if camera_state != self._last_camera_state and self._last_camera_state:
            self.bus.publish("status", {"camera": camera_state, "detail": self.source.health().detail})
        self._last_camera_state = camera_state
        if self._ready:
            self.notifier.status(self._status_text())

    def _status_text(self) -> str:
        backend = self.loaded.recognizer.backend.name if self.loaded else "none"
        health = self.source.health()
        camera = health.state if not health.detail or health.state == "ok" else f"{health.state} ({health.detail})"
        return (f"{self.state}: {self.source.name} {camera}, {self.fps.fps:.1f} fps, backend {backend}, "
                f"{self.sink.decisions} decisions")

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Return (healthy, body) for /health."""
        reasons = []
        if not self._ready:
            reasons.append("starting: the model or the camera is not up yet")
        if self.loaded is None:
            reasons.append("model and gallery not loaded")
        source = self.source.health()
        if source.state not in ("ok", "ended"):
            reasons.append(f"camera {source.state}: {source.detail}")
        elif source.state == "ok" and self._ready and self.fps.stale(max(5.0, 5 * self.config.read_timeout)):
            reasons.append(f"no frame recognized for over {max(5.0, 5 * self.config.read_timeout):.0f} s")
        if self.errors_in_row:
            reasons.append(f"recognition failed on the last {self.errors_in_row} frame(s)")

        if not reasons:
            status = "ok"
        elif not self._ready:
            status = "starting"
        else:
            status = "degraded"
        return not reasons, {"status": status, "reasons": reasons, "camera": source.state,
                             "backend": self.loaded.recognizer.backend.name if self.loaded else None,
                             "fps": round(self.fps.fps, 2)}

    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        backend = None
        if loaded is not None:
            engine = loaded.recognizer.backend
            backend = engine.status() if hasattr(engine, "status") else {"backend": engine.name}
        return {
            "state": self.state,
            "pokedge_version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "source": self.source.health().to_dict(),
            "backend": backend,
            "versions": dict(loaded.info) if loaded else None,
            "fps": round(self.fps.fps, 2),
            "recognition": self.recognition,
            "frames": self.frames,
            "frame_errors": int(self.metrics.frame_errors.value()),
            "card_state": self._card_state,
            "tracks": list(self._tracks),
            "last_event": self.sink.last_event,
            "scanlog": self.scanlog.stats() if self.scanlog else None,
            "reload": self.reloader.status(),
            "event_clients": self.bus.subscribers,
        }

    def metrics_text(self) -> str:
        return self.metrics.render()


def recognition_mode(setting: str) -> str:
    """Resolve the `recognition` setting: "auto" is pipelined on at least 2 usable cores, else sequential."""
    if setting != "auto":
        return setting
    return "pipelined" if usable_cores() >= 2 else "sequential"


def embed_workers_for(backend) -> int:
    """Return the embedding workers a stream may run on `backend` at once.

    ONNX Runtime allows concurrent runs on one session, so it gets one
    worker a usable core, as in the benchmark. Other backends (the Hailo
    backend, the fallback wrapper before it fell back) get one, because
    their embed calls are not known to be safe from several threads.
    NOTE: no Pi run has measured the stream yet, so whether one Hailo
    worker reaches the 20 frames/s target is open.
    """
    if isinstance(backend, OnnxBackend) or getattr(backend, "fell_back", False):
        return usable_cores()
    return 1
