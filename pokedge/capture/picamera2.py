"""Frames from a Raspberry Pi camera (Camera Module 3) through picamera2.

picamera2 is imported when the source opens, so pokedge runs without it.
On a Pi it comes from apt (python3-picamera2, matching the system libcamera)
and reaches the pokedge venv through --system-site-packages.

Format names follow libcamera/DRM, which read the pixel MSB first, so the
memory order is reversed: "RGB888" arrives as B,G,R bytes and "BGR888" as
R,G,B (picamera2 request.py, FORMAT_TABLE). The pipeline takes OpenCV-style
BGR frames, so the main stream requests RGB888 and is used without a copy.
Other formats are converted on capture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from pokedge.capture.base import (CaptureTimeout, CorruptFrame, Frame, SourceHealth, SourceUnavailable,
                                  SourceUnusable, check_frame, now)

_log = logging.getLogger(__name__)

INSTALL_FIX = ("install it with 'sudo apt install python3-picamera2' and create the venv with "
               "--system-site-packages (scripts/install.sh does both)")
OTHER_SOURCES = ("Without a Pi camera, read a USB webcam with 'pokedge serve --source opencv:N' or "
                 "'pokedge scan --camera opencv:N', or scan photos with 'pokedge scan --image PATH'")

# How to turn each stream format into a BGR uint8 [H, W, 3] frame; memory orders as in the module docstring.
_TO_BGR: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "RGB888": lambda a: a,  # memory B,G,R
    "BGR888": lambda a: np.ascontiguousarray(a[..., ::-1]),  # memory R,G,B
    "XRGB8888": lambda a: np.ascontiguousarray(a[..., :3]),  # memory B,G,R,X
    "XBGR8888": lambda a: np.ascontiguousarray(a[..., 2::-1]),  # memory R,G,B,X
    "YUV420": lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2BGR_I420),  # planar, shape [H * 3 / 2, W]
}
FORMATS = tuple(_TO_BGR)
AF_MODES = ("continuous", "auto", "manual", "off")


@dataclass
class Picamera2Options:
    """Camera settings; the defaults suit a Camera Module 3 looking down at a card on a table."""

    camera_num: int = 0
    # NOTE: 1920x1080 is an estimate: the IMX708 bins to 2304x1296 over its full field of view, the ISP
    # scales that down, and the detector works on a 960 px copy anyway. Check fps and card size on a Pi.
    main_size: tuple[int, int] = (1920, 1080)
    main_format: str = "RGB888"
    # A low-resolution second stream; None turns it off. Pi 5 delivers RGB lores, Pi 4 only YUV420.
    # NOTE: Frame.lores carries it, but the recognizer still detects on the main frame (scaled to 960 px).
    lores_size: tuple[int, int] | None = None
    lores_format: str = "YUV420"
    fps: float = 30.0
    buffer_count: int = 4
    # "continuous" refocuses whenever the scene changes, as cards come and go. "auto" scans once at start
    # and on trigger_autofocus(). "manual" holds lens_position in dioptres (1 / metres, 0 is infinity).
    # "off" leaves the camera's own setting.
    af_mode: str = "continuous"
    lens_position: float | None = None

    def validate(self) -> None:
        if self.main_format not in _TO_BGR or self.main_format == "YUV420":
            raise ValueError(f"camera main format must be one of RGB888, BGR888, XRGB8888, XBGR8888, "
                             f"got {self.main_format!r}")
        if self.lores_format not in _TO_BGR:
            raise ValueError(f"camera lores format must be one of {', '.join(FORMATS)}, got {self.lores_format!r}")
        if self.af_mode not in AF_MODES:
            raise ValueError(f"camera af_mode must be one of {', '.join(AF_MODES)}, got {self.af_mode!r}")
        if self.af_mode == "manual" and self.lens_position is None:
            raise ValueError("camera af_mode manual needs lens_position in dioptres (for example 5.0 for 20 cm)")
        if self.lores_size and (self.lores_size[0] > self.main_size[0] or self.lores_size[1] > self.main_size[1]):
            raise ValueError(f"camera lores size {self.lores_size} must not exceed the main size {self.main_size}")
        if not 0 < self.fps <= 120:
            raise ValueError(f"camera fps must be between 0 and 120, got {self.fps}")
        if self.buffer_count < 2:
            raise ValueError(f"camera buffer_count must be at least 2, got {self.buffer_count}")


class Picamera2Source:
    """A libcamera camera read with capture_request; every request is released before read returns."""

    def __init__(self, options: Picamera2Options | None = None):
        self.options = options or Picamera2Options()
        self.options.validate()
        self.name = f"picamera2:{self.options.camera_num}"
        self._camera: Any = None
        self._shape: tuple[int, ...] | None = None
        self._sequence = 0
        self._frames = 0
        self._corrupt = 0
        self._model = ""
        self._last_metadata: dict[str, Any] = {}

    def open(self) -> None:
        picamera2 = _import_picamera2()
        cameras = picamera2.Picamera2.global_camera_info()
        if len(cameras) <= self.options.camera_num:
            raise SourceUnavailable(
                f"{self.name}: no camera {self.options.camera_num} found ({len(cameras)} connected); check the "
                f"ribbon cable and run 'rpicam-hello --list-cameras'"
            )
        self._model = str(cameras[self.options.camera_num].get("Model", ""))

        self._camera = self._create(picamera2)
        try:
            self._configure()
            self._camera.start()
        except RuntimeError as exc:
            self.close()
            raise SourceUnavailable(f"{self.name}: the camera failed to start ({exc}); check 'rpicam-hello' works") from exc
        self._shape = None
        _log.info("opened %s (%s): main %dx%d %s, lores %s, %.0f fps, autofocus %s", self.name, self._model or "?",
                  *self.options.main_size, self.options.main_format,
                  f"{self.options.lores_size[0]}x{self.options.lores_size[1]}" if self.options.lores_size else "off",
                  self.options.fps, self.options.af_mode)

    def _create(self, picamera2) -> Any:
        try:
            return picamera2.Picamera2(self.options.camera_num)
        except IndexError as exc:
            # picamera2 up to 0.3.36 indexes the camera list before its own check when no camera is found.
            raise SourceUnavailable(f"{self.name}: camera {self.options.camera_num} not found ({exc}); check the "
                                    f"ribbon cable and run 'rpicam-hello --list-cameras'") from exc
        except RuntimeError as exc:
            raise SourceUnavailable(
                f"{self.name}: the camera is busy or failed to initialise ({exc}); another process may hold it "
                f"(libcamera logs 'Pipeline handler in use by another process'): stop it and retry"
            ) from exc

    def _configure(self) -> None:
        options = self.options
        frame_us = int(round(1_000_000 / options.fps))
        main = {"size": tuple(options.main_size), "format": options.main_format}
        lores = {"size": tuple(options.lores_size), "format": options.lores_format} if options.lores_size else None
        config = self._camera.create_video_configuration(
            main=main, lores=lores, buffer_count=options.buffer_count,
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        self._camera.configure(config)
        controls = self._focus_controls()
        if controls:
            self._camera.set_controls(controls)

    def _focus_controls(self) -> dict[str, Any]:
        if self.options.af_mode == "off":
            return {}
        if "AfMode" not in getattr(self._camera, "camera_controls", {}):
            _log.info("%s has no autofocus (fixed-focus lens); af_mode %s ignored", self.name, self.options.af_mode)
            return {}

        af_mode, af_trigger = _af_enums()
        if self.options.af_mode == "continuous":
            return {"AfMode": af_mode.Continuous}
        if self.options.af_mode == "auto":
            return {"AfMode": af_mode.Auto, "AfTrigger": af_trigger.Start}
        return {"AfMode": af_mode.Manual, "LensPosition": float(self.options.lens_position)}

    def trigger_autofocus(self) -> None:
        """Start one autofocus scan (af_mode auto); the lens settles over the next few frames."""
        if self._camera is None or self.options.af_mode != "auto":
            return
        _, af_trigger = _af_enums()
        self._camera.set_controls({"AfTrigger": af_trigger.Start})

    def read(self, timeout: float) -> Frame:
        if self._camera is None:
            raise SourceUnavailable(f"{self.name} is not open; call open() first")

        try:
            request = self._camera.capture_request(wait=timeout)
        except TimeoutError:
            raise CaptureTimeout(f"{self.name}: no frame within {timeout:.2f} s") from None
        except RuntimeError as exc:
            raise SourceUnavailable(f"{self.name}: capture failed ({exc})") from exc

        try:
            main, lores, metadata = self._arrays(request)
        finally:
            request.release()  # picamera2 stalls once every buffer is held by an unreleased request

        self._last_metadata = metadata
        self._shape = main.shape
        self._frames += 1
        self._sequence += 1
        return Frame(main, now(), self._sequence - 1, lores, metadata)

    def _arrays(self, request) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        try:
            main = _TO_BGR[self.options.main_format](request.make_array("main"))
            main = check_frame(main, self.name, self._shape)
            lores = None
            if self.options.lores_size:
                lores = _TO_BGR[self.options.lores_format](request.make_array("lores"))
            metadata = dict(request.get_metadata() or {})
        except (ValueError, cv2.error, CorruptFrame) as exc:
            # make_array reshapes the raw buffer; a torn or short buffer fails here.
            self._corrupt += 1
            raise CorruptFrame(f"{self.name}: unusable frame ({exc}); skipped") from None
        return main, lores, metadata

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for step in ("stop", "close"):
            try:
                getattr(camera, step)()
            except Exception as exc:  # the camera may already be gone; closing must still finish
                _log.warning("%s: camera %s() failed while closing: %s", self.name, step, exc)

    def health(self) -> SourceHealth:
        state = "ok" if self._camera is not None else "closed"
        extra = {"model": self._model, "af_mode": self.options.af_mode,
                 "af_state": self._last_metadata.get("AfState"),
                 "lens_position": self._last_metadata.get("LensPosition")}
        return SourceHealth(state, "", self._frames, self._corrupt, 0, extra)


def _import_picamera2():
    try:
        import picamera2
    except ImportError as exc:
        # A missing package does not appear while pokedge runs, so the supervisor does not retry this error.
        raise SourceUnusable(f"picamera2 is not installed ({exc}); on a Raspberry Pi {INSTALL_FIX}. "
                             f"{OTHER_SOURCES}") from exc
    return picamera2


def _af_enums():
    """Return libcamera's AfModeEnum and AfTriggerEnum, or plain integer stand-ins when libcamera is missing."""
    try:
        from libcamera import controls

        return controls.AfModeEnum, controls.AfTriggerEnum
    except ImportError:
        _log.debug("libcamera Python module missing; using the numeric autofocus control values")
        return _AfMode, _AfTrigger


class _AfMode:
    # Values from libcamera control_ids_core.yaml.
    Manual = 0
    Auto = 1
    Continuous = 2


class _AfTrigger:
    Start = 0
    Cancel = 1
