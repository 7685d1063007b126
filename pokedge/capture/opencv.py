"""Frames from OpenCV VideoCapture: a video file, a USB webcam by index, or a stream URL (RTSP, HTTP).

A video file plays at its native frame rate (or as fast as possible) and can
loop. A webcam or stream is read on a reader thread that owns the
VideoCapture, because `VideoCapture.read` has no timeout of its own and can
block for good on a dead stream. `read(timeout)` waits for that thread.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from pokedge.capture.base import (CaptureTimeout, CorruptFrame, EndOfStream, Frame, SourceHealth,
                                  SourceUnavailable, check_frame, now)
from pokedge.capture.pacing import Pacer

_log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
MAX_FPS = 240.0
# Failed reads in a row after which a video file is taken as ended: FFmpeg
# reports a damaged frame as one failed read, and a frame count in the header
# may be off by one at the end.
END_AFTER_FAILURES = 8


def decodes_a_frame(path: Path | str) -> bool:
    """Open `path` with OpenCV and return whether one of its first END_AFTER_FAILURES frames decodes."""
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened() and any(capture.read()[0] for _ in range(END_AFTER_FAILURES))
    finally:
        capture.release()


class VideoFileSource:
    """A video file read with OpenCV, paced at its native frame rate unless `realtime` is False."""

    def __init__(self, path: Path | str, loop: bool = False, realtime: bool = True):
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.loop = loop
        self.realtime = realtime
        self.fps = DEFAULT_FPS
        self._capture: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._position = 0  # index within the current pass of the next frame to decode
        self._sequence = 0
        self._pass_frames = 0
        self._pending: np.ndarray | None = None  # a good frame read while looking past a damaged one
        self._shape: tuple[int, ...] | None = None
        self._frames = 0
        self._corrupt = 0
        self._dropped = 0
        self._passes = 0
        self._ended = False

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceUnavailable(f"{self.path}: video file not found; check the path given to --source file:PATH")

        self._capture = self._open_capture()
        self.fps = self._native_fps(self._capture)
        self._pacer = Pacer(self.fps, self.realtime)
        self._position = 0
        self._pass_frames = 0
        self._pending = None
        self._shape = None
        self._ended = False
        self._passes = 1
        _log.info("opened %s: %.2f fps, %s frames, %s", self.name, self.fps,
                  int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or "unknown",
                  "looping" if self.loop else "playing once")

    def _open_capture(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(
                f"{self.path}: OpenCV cannot open this video (no video backend reads it); "
                f"convert it to MJPG in .avi or H.264 in .mp4"
            )
        return capture

    def _native_fps(self, capture: cv2.VideoCapture) -> float:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
            _log.warning("%s: the file gives no usable frame rate (%r); playing at %.0f fps", self.name, fps, DEFAULT_FPS)
            return DEFAULT_FPS
        return fps

    def read(self, timeout: float) -> Frame:
        if self._capture is None or self._pacer is None:
            raise SourceUnavailable(f"{self.name} is not open; call open() first")
        if self._ended:
            raise EndOfStream(f"{self.name}: end of video")

        target, wait = self._pacer.plan(self._position)
        self._skip_to(target)
        if wait > timeout:
            time.sleep(timeout)
            raise CaptureTimeout(f"{self.name}: next frame is due in {wait:.2f} s, after the {timeout:.2f} s timeout")
        if wait > 0:
            time.sleep(wait)

        image = self._next_image()
        index = self._position
        self._position += 1
        self._pass_frames += 1
        try:
            image = check_frame(image, self.name, self._shape)
        except CorruptFrame:
            self._corrupt += 1
            raise
        self._shape = image.shape
        self._frames += 1
        self._sequence += 1
        return Frame(image, now(), self._sequence - 1,
                     metadata={"position": index, "video_time": index / self.fps, "pass": self._passes})

    def _skip_to(self, target: int) -> None:
        """Drop the frames a live camera would have delivered while the reader was busy."""
        while self._position < target and not self._ended:
            if self._pending is not None:
                self._pending = None
            elif not self._capture.grab():
                self._handle_end()
                return
            self._position += 1
            self._dropped += 1

    def _next_image(self) -> np.ndarray:
        """Decode the frame at the current position; raise CorruptFrame or EndOfStream when there is none."""
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image

        ok, image = self._capture.read()
        if ok:
            return image

        # A failed read is a damaged frame when a later frame still decodes, else the end of the file.
        failed = 1
        while failed < END_AFTER_FAILURES:
            ok, later = self._capture.read()
            if ok:
                self._pending = later
                self._corrupt += failed
                first = self._position
                self._position += failed
                raise CorruptFrame(f"{self.name}: {failed} frame(s) from frame {first} cannot be decoded; skipped")
            failed += 1

        self._handle_end()
        if self._ended:
            raise EndOfStream(f"{self.name}: end of video after {self._frames} frames")
        ok, image = self._capture.read()
        if not ok:
            self._ended = True
            raise EndOfStream(f"{self.name}: the first frame of the new pass cannot be decoded; stopping the loop")
        return image

    def _handle_end(self) -> None:
        if not self.loop:
            self._ended = True
            _log.info("%s ended after %d frames (%d dropped to keep the native rate, %d corrupt)",
                      self.name, self._frames, self._dropped, self._corrupt)
            return
        if self._pass_frames == 0:
            self._ended = True
            _log.error("%s: a whole pass delivered no frame; stopping the loop", self.name)
            return

        self._capture.release()
        self._capture = self._open_capture()
        self._pacer.restart()
        self._position = 0
        self._pass_frames = 0
        self._passes += 1
        _log.debug("%s: looping, pass %d", self.name, self._passes)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def health(self) -> SourceHealth:
        if self._capture is None:
            state = "closed"
        elif self._ended:
            state = "ended"
        else:
            state = "ok"
        return SourceHealth(state, f"{self.fps:.2f} fps, pass {self._passes}", self._frames, self._corrupt,
                            self._dropped, {"position": self._position, "loop": self.loop})


class OpenCVCameraSource:
    """A webcam (`target` is its index or /dev/video path) or a stream URL, read on a reader thread."""

    def __init__(self, target: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, open_timeout: float = 10.0):
        self.target = target
        self.name = f"opencv:{target}"
        self.width = width
        self.height = height
        self.fps = fps
        self.open_timeout = open_timeout
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._open_error: str | None = None
        self._shape: tuple[int, ...] | None = None
        self._sequence = 0
        self._frames = 0
        self._corrupt = 0
        self._dropped = 0

    def open(self) -> None:
        self._stop.clear()
        self._opened.clear()
        self._open_error = None
        self._shape = None
        self._queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.target}", daemon=True)
        self._thread.start()

        if not self._opened.wait(self.open_timeout):
            self._stop.set()
            raise SourceUnavailable(f"{self.name}: opening timed out after {self.open_timeout:.0f} s; "
                                    f"check the device or URL is reachable")
        if self._open_error is not None:
            raise SourceUnavailable(self._open_error)
        _log.info("opened %s", self.name)

    def _run(self) -> None:
        """Own the VideoCapture: open, read until stopped, release, all on this thread."""
        capture = self._open_capture()
        self._opened.set()
        if capture is None:
            return

        failures = 0
        try:
            while not self._stop.is_set():
                ok, image = capture.read()
                if ok:
                    failures = 0
                    self._offer(("frame", image, now()))
                    continue
                failures += 1
                if failures >= END_AFTER_FAILURES:
                    self._offer(("gone", f"{self.name}: {failures} reads in a row failed; the device or stream is gone"))
                    return
                self._offer(("corrupt", f"{self.name}: read failed ({failures} in a row); frame skipped"))
        finally:
            capture.release()

    def _open_capture(self) -> cv2.VideoCapture | None:
        target = self.target
        capture = cv2.VideoCapture(target) if isinstance(target, int) else cv2.VideoCapture(str(target))
        if isinstance(target, str) and "://" in target:
            capture.set(cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.open_timeout * 1000)
            capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.open_timeout * 1000)
        if not capture.isOpened():
            capture.release()
            self._open_error = (f"{self.name}: OpenCV cannot open this camera or stream; check that the device "
                                f"exists (ls /dev/video*) and no other program uses it, or that the URL plays")
            return None
        if self.width and self.height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        return capture

    def _offer(self, item: tuple) -> None:
        """Hand the newest item to the reader, replacing one it has not collected yet."""
        try:
            self._queue.put_nowait(item)
            return
        except queue.Full:
            pass
        try:
            stale = self._queue.get_nowait()
            if stale[0] == "frame":
                self._dropped += 1
        except queue.Empty:
            pass
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1

    def read(self, timeout: float) -> Frame:
        if self._thread is None:
            raise SourceUnavailable(f"{self.name} is not open; call open() first")
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            if not self._thread.is_alive():
                raise SourceUnavailable(f"{self.name}: the reader thread stopped") from None
            raise CaptureTimeout(f"{self.name}: no frame within {timeout:.2f} s") from None

        kind = item[0]
        if kind == "gone":
            raise SourceUnavailable(item[1])
        if kind == "corrupt":
            self._corrupt += 1
            raise CorruptFrame(item[1])

        try:
            image = check_frame(item[1], self.name, self._shape)
        except CorruptFrame:
            self._corrupt += 1
            raise
        self._shape = image.shape
        self._frames += 1
        self._sequence += 1
        return Frame(image, item[2], self._sequence - 1)

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=2.0)
        if thread.is_alive():
            # NOTE: a VideoCapture blocked inside read() cannot be interrupted from Python. The daemon
            # thread is left behind and ends when the read returns or the process exits.
            _log.warning("%s: the reader thread is still blocked in VideoCapture.read; leaving it behind", self.name)

    def health(self) -> SourceHealth:
        alive = self._thread is not None and self._thread.is_alive()
        state = "ok" if alive else "closed"
        return SourceHealth(state, "", self._frames, self._corrupt, self._dropped)
