"""Test double for picamera2's Picamera2 class, following its documented API and error behaviour.

Only tests put tests/fake_picamera2 on sys.path; it is never shipped. What it
reproduces (picamera2 0.3.x):

- `Picamera2(camera_num)` raises IndexError when the camera does not exist
  (the camera list is indexed before picamera2's own check) and
  RuntimeError("Camera __init__ sequence did not complete.") while another
  process or another Picamera2 object has it open.
- `create_*_configuration` give the library's defaults: preview XBGR8888
  640x480 with 4 buffers, still BGR888 at sensor size with 1 buffer, video
  XBGR8888 1280x720 with 6 buffers; lores defaults to YUV420 at main size and
  must not exceed main; sizes must be even; stream keys other than format and
  size raise ValueError.
- `configure` only while stopped; `set_controls` rejects controls the camera
  does not advertise (a fixed-focus camera has no AfMode).
- `capture_request(wait=seconds)` raises TimeoutError when no frame arrives
  (stalled, unplugged, not started, or every buffer held by an unreleased
  request); the request must be released, and using it after release fails.
- Memory order of `make_array`: RGB888 gives B,G,R bytes, BGR888 R,G,B,
  XRGB8888 B,G,R,X and XBGR8888 R,G,B,X; YUV420 is planar I420 [H * 3 / 2, W].
  A truncated buffer makes the reshape fail with numpy's ValueError.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from picamera2._camera_system import SYSTEM

__all__ = ["Picamera2", "CompletedRequest"]

_RGB_FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888")
_YUV_FORMATS = ("YUV420",)
_MAX_BLOCKING_WAIT = 30.0


class CompletedRequest:
    """One captured frame's buffers; release() hands them back to the camera."""

    def __init__(self, camera: "Picamera2", buffers: dict, metadata: dict, truncated: bool):
        self._camera = camera
        self._buffers = buffers
        self._metadata = metadata
        self._truncated = truncated
        self._released = False

    def make_array(self, name: str = "main") -> np.ndarray:
        """Return a copy of the stream's buffer as an array in the stream format's memory order."""
        if self._released:
            raise RuntimeError("request has been released; make_array must come before release()")
        if name not in self._buffers:
            raise KeyError(f"stream {name!r} is not configured")
        flat, shape = self._buffers[name]
        if self._truncated:
            flat = flat[: len(flat) // 2]
        return np.array(flat.reshape(shape), copy=True)

    def get_metadata(self) -> dict:
        if self._released:
            raise RuntimeError("request has been released; get_metadata must come before release()")
        return dict(self._metadata)

    def release(self) -> None:
        if self._released:
            raise RuntimeError("request released twice")
        self._released = True
        self._camera._on_release()


class Picamera2:
    """A simulated libcamera camera; see the module docstring for what it checks."""

    @staticmethod
    def global_camera_info() -> list:
        with SYSTEM.condition:
            return [{**info, "Num": n} for n, info in enumerate(SYSTEM.cameras)]

    def __init__(self, camera_num: int = 0, tuning=None, allocator=None):
        with SYSTEM.condition:
            info = SYSTEM.cameras[camera_num]  # IndexError when absent, as picamera2 <= 0.3.36 raises
            if camera_num in SYSTEM.held_elsewhere or camera_num in SYSTEM.open_cameras:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            SYSTEM.open_cameras[camera_num] = self
            self._generation = SYSTEM.generation
            self.camera_controls = SYSTEM.controls_for(camera_num)

        self.camera_num = camera_num
        self.camera_properties = {"Model": info["Model"], "PixelArraySize": (4608, 2592)}
        self.sensor_resolution = (4608, 2592)
        self.is_open = True
        self.started = False
        self.camera_config: dict | None = None
        self.controls: dict = {}
        self.frames = 0
        self._outstanding = 0
        self._next_due = 0.0
        self.control_history: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- configuration ---------------------------------------------------------------------------------

    def create_preview_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                     buffer_count=4, controls={}, display="main", encode="main", queue=True):
        return self._configuration("preview", {"format": "XBGR8888", "size": (640, 480)}, main, lores,
                                   buffer_count, {"FrameDurationLimits": (100, 83333)}, controls)

    def create_still_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                   buffer_count=1, controls={}, display=None, encode=None, queue=True):
        return self._configuration("still", {"format": "BGR888", "size": self.sensor_resolution}, main, lores,
                                   buffer_count, {"FrameDurationLimits": (100, 1_000_000_000)}, controls)

    def create_video_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                   buffer_count=6, controls={}, display="main", encode="main", queue=True):
        return self._configuration("video", {"format": "XBGR8888", "size": (1280, 720)}, main, lores,
                                   buffer_count, {"FrameDurationLimits": (33333, 33333)}, controls)

    def _configuration(self, use_case, main_default, main, lores, buffer_count, control_defaults, controls):
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main_stream = _stream(dict(main_default), main)
        lores_stream = _stream({"format": "YUV420", "size": main_stream["size"]}, lores)
        return {"use_case": use_case, "buffer_count": buffer_count, "main": main_stream, "lores": lores_stream,
                "raw": None, "controls": {**control_defaults, **controls}}

    def configure(self, config: dict) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        _check_stream(config["main"], "main")
        lores = config.get("lores")
        if lores is not None:
            _check_stream(lores, "lores")
            if lores["size"][0] > config["main"]["size"][0] or lores["size"][1] > config["main"]["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        self.camera_config = config
        self.controls = {}
        self._apply_controls(config.get("controls", {}))

    def set_controls(self, controls: dict) -> None:
        self._apply_controls(controls)

    def _apply_controls(self, controls: dict) -> None:
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self.controls.update(controls)
        self.control_history.append(dict(controls))

    # -- streaming ---------------------------------------------------------------------------------------

    def start(self, config=None, show_preview=False) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            self.configure(self.create_preview_configuration())
        self.started = True
        self._next_due = time.monotonic()

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        with SYSTEM.condition:
            if SYSTEM.open_cameras.get(self.camera_num) is self:
                del SYSTEM.open_cameras[self.camera_num]
            SYSTEM.condition.notify_all()

    def capture_request(self, wait=None, signal_function=None, flush=None) -> CompletedRequest:
        """Return the next completed request; raise TimeoutError after `wait` seconds without one."""
        limit = _MAX_BLOCKING_WAIT if wait is None else float(wait)
        deadline = time.monotonic() + limit
        with SYSTEM.condition:
            while not self._frame_ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if wait is None:
                        raise AssertionError("fake Picamera2: capture_request() without wait would block for good")
                    raise TimeoutError("fake Picamera2: no frame completed in time")
                SYSTEM.condition.wait(min(remaining, self._due_in() or remaining))
            truncated = SYSTEM.corrupt_next > 0
            if truncated:
                SYSTEM.corrupt_next -= 1
            scene = SYSTEM.scene
            self._outstanding += 1

        request = self._make_request(scene(self.frames), truncated)
        self.frames += 1
        return request

    def capture_array(self, name: str = "main", wait=None) -> np.ndarray:
        request = self.capture_request(wait=wait)
        try:
            return request.make_array(name)
        finally:
            request.release()

    def _frame_duration(self) -> float:
        limits = self.controls.get("FrameDurationLimits", (33333, 33333))
        return max(limits[0], 1) / 1e6

    def _due_in(self) -> float | None:
        if not SYSTEM.realtime:
            return None
        return max(self._next_due - time.monotonic(), 0.001)

    def _frame_ready(self) -> bool:
        if not (self.started and self.is_open) or SYSTEM.stalled or self._generation != SYSTEM.generation:
            return False
        if self._outstanding >= self.camera_config["buffer_count"]:
            return False
        if SYSTEM.realtime:
            now = time.monotonic()
            if now < self._next_due:
                return False
            self._next_due = max(self._next_due + self._frame_duration(), now)
        return True

    def _make_request(self, scene_rgb: np.ndarray, truncated: bool) -> CompletedRequest:
        buffers = {}
        for name in ("main", "lores"):
            stream = self.camera_config.get(name)
            if stream is not None:
                buffers[name] = _encode(scene_rgb, stream["format"], stream["size"])
        metadata = {
            "SensorTimestamp": time.monotonic_ns(),
            "FrameDuration": int(self._frame_duration() * 1e6),
            "ExposureTime": 20000,
            "AnalogueGain": 1.0,
        }
        if "AfMode" in self.controls:
            metadata["AfState"] = 2  # Focused
            metadata["LensPosition"] = float(self.controls.get("LensPosition", 4.0))
        return CompletedRequest(self, buffers, metadata, truncated)

    def _on_release(self) -> None:
        with SYSTEM.condition:
            self._outstanding -= 1
            SYSTEM.condition.notify_all()


def _stream(defaults: dict, updates: dict | None) -> dict | None:
    if updates is None:
        return None
    for key in updates:
        if key not in ("format", "size"):
            raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
    defaults.update(updates)
    defaults["size"] = tuple(defaults["size"])
    return defaults


def _check_stream(stream: dict, name: str) -> None:
    fmt = stream["format"]
    if fmt not in _RGB_FORMATS + _YUV_FORMATS:
        raise RuntimeError(f"Bad format {fmt} in stream {name}")
    width, height = stream["size"]
    if width % 2 or height % 2:
        raise RuntimeError("width and height should be even")


def _encode(scene_rgb: np.ndarray, fmt: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Lay the true-colour scene out in memory as libcamera delivers `fmt`; return (flat bytes, array shape)."""
    width, height = size
    rgb = cv2.resize(scene_rgb, (width, height), interpolation=cv2.INTER_AREA)
    if fmt == "RGB888":
        array = rgb[..., ::-1]
    elif fmt == "BGR888":
        array = rgb
    elif fmt == "XRGB8888":
        array = np.dstack([rgb[..., ::-1], np.full((height, width), 255, np.uint8)])
    elif fmt == "XBGR8888":
        array = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    else:
        array = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2YUV_I420)
    array = np.ascontiguousarray(array)
    return array.reshape(-1), array.shape
