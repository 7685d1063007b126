"""The picamera2 source against the Picamera2 test double (documented API, errors and memory order)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pokedge.capture.base import CaptureTimeout, CorruptFrame, SourceUnavailable
from pokedge.capture.picamera2 import Picamera2Options, Picamera2Source
from service_support import fake_camera  # noqa: F401 - pytest fixture

# A scene in true colour (RGB): left half red, right half blue.
RED_RGB = (220, 20, 10)
BLUE_RGB = (10, 30, 230)


def two_colour_scene(_frame: int) -> np.ndarray:
    scene = np.zeros((240, 320, 3), np.uint8)
    scene[:, :160] = RED_RGB
    scene[:, 160:] = BLUE_RGB
    return scene


def open_source(**options) -> Picamera2Source:
    source = Picamera2Source(Picamera2Options(main_size=(320, 240), **options))
    source.open()
    return source


def assert_bgr(image: np.ndarray) -> None:
    left, right = image[120, 40].astype(int), image[120, 280].astype(int)
    assert abs(left[2] - RED_RGB[0]) < 12, f"left pixel not red in BGR: {left}"
    assert abs(left[0] - RED_RGB[2]) < 12, f"left pixel not red in BGR: {left}"
    assert abs(right[0] - BLUE_RGB[2]) < 12, f"right pixel not blue in BGR: {right}"
    assert abs(right[2] - BLUE_RGB[0]) < 12, f"right pixel not blue in BGR: {right}"


@pytest.mark.parametrize("fmt, first_byte", [("RGB888", 10), ("BGR888", 220), ("XRGB8888", 10), ("XBGR8888", 220)])
def test_fake_follows_documented_memory_order(fake_camera, fmt, first_byte):
    from picamera2 import Picamera2

    fake_camera.scene = two_colour_scene
    camera = Picamera2()
    camera.configure(camera.create_video_configuration(main={"size": (320, 240), "format": fmt}))
    camera.start()
    array = camera.capture_array("main", wait=1.0)
    camera.close()

    assert array.shape[2] == (4 if fmt.startswith("X") else 3)
    assert abs(int(array[120, 40, 0]) - first_byte) < 12


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_main_stream_arrives_as_bgr(fake_camera, fmt):
    fake_camera.scene = two_colour_scene
    source = open_source(main_format=fmt)

    frame = source.read(1.0)

    assert frame.image.shape == (240, 320, 3)
    assert frame.image.flags["C_CONTIGUOUS"]
    assert_bgr(frame.image)
    source.close()


def test_default_request_is_rgb888_video_config(fake_camera):
    source = open_source(fps=20)
    camera = fake_camera.open_cameras[0]

    config = camera.camera_config
    assert config["main"] == {"format": "RGB888", "size": (320, 240)}
    assert config["lores"] is None
    assert config["buffer_count"] == 4
    assert config["controls"]["FrameDurationLimits"] == (50000, 50000)
    source.close()


@pytest.mark.parametrize("lores_format", ["YUV420", "RGB888"])
def test_lores_stream_arrives_as_bgr(fake_camera, lores_format):
    fake_camera.scene = two_colour_scene
    source = Picamera2Source(Picamera2Options(main_size=(320, 240), lores_size=(160, 120), lores_format=lores_format))
    source.open()

    frame = source.read(1.0)

    assert frame.lores.shape == (120, 160, 3)
    left = frame.lores[60, 20].astype(int)
    assert left[2] > 150, f"lores left pixel not red in BGR: {left}"
    assert left[0] < 80, f"lores left pixel not red in BGR: {left}"
    source.close()


def test_continuous_autofocus_requested(fake_camera):
    from libcamera import controls

    source = open_source()
    camera = fake_camera.open_cameras[0]

    assert camera.controls["AfMode"] == controls.AfModeEnum.Continuous
    assert source.read(1.0).metadata["AfState"] == 2
    assert source.health().extra["af_state"] == 2
    source.close()


def test_auto_autofocus_triggers_scan(fake_camera):
    from libcamera import controls

    source = open_source(af_mode="auto")
    camera = fake_camera.open_cameras[0]
    assert camera.controls["AfMode"] == controls.AfModeEnum.Auto
    assert camera.controls["AfTrigger"] == controls.AfTriggerEnum.Start

    source.trigger_autofocus()
    assert camera.control_history[-1] == {"AfTrigger": controls.AfTriggerEnum.Start}
    source.close()


def test_manual_focus_sets_lens_position(fake_camera):
    source = open_source(af_mode="manual", lens_position=5.0)
    camera = fake_camera.open_cameras[0]

    assert camera.controls["AfMode"] == 0
    assert camera.controls["LensPosition"] == 5.0
    source.close()


def test_fixed_focus_camera_skips_autofocus(fake_camera):
    from picamera2._camera_system import IMX219

    fake_camera.plug(IMX219)
    source = open_source()
    camera = fake_camera.open_cameras[0]

    assert "AfMode" not in camera.controls
    assert source.read(1.0).image.shape == (240, 320, 3)
    assert source.health().extra["model"] == "imx219"
    source.close()


def test_requests_are_released(fake_camera):
    source = open_source(buffer_count=2)
    camera = fake_camera.open_cameras[0]

    for _ in range(10):  # more reads than buffers: an unreleased request would stall the third read
        source.read(1.0)

    assert camera._outstanding == 0
    assert camera.frames == 10
    source.close()


def test_camera_absent(fake_camera):
    fake_camera.unplug()
    with pytest.raises(SourceUnavailable, match="no camera 0 found"):
        Picamera2Source().open()


def test_camera_index_error_is_mapped(fake_camera, monkeypatch):
    """picamera2 up to 0.3.36 raises IndexError from its constructor when the camera is missing."""
    from picamera2 import Picamera2

    monkeypatch.setattr(Picamera2, "global_camera_info", staticmethod(lambda: [{"Model": "imx708"}]))
    fake_camera.unplug()
    with pytest.raises(SourceUnavailable, match="not found"):
        Picamera2Source().open()


def test_camera_busy(fake_camera):
    fake_camera.held_elsewhere.add(0)
    with pytest.raises(SourceUnavailable, match="busy"):
        Picamera2Source().open()


def test_camera_open_twice_is_busy(fake_camera):
    first = open_source()
    with pytest.raises(SourceUnavailable, match="busy"):
        open_source()
    first.close()
    second = open_source()
    second.close()


def test_picamera2_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceUnavailable, match="apt install python3-picamera2"):
        Picamera2Source().open()


def test_stalled_camera_times_out(fake_camera):
    source = open_source()
    fake_camera.stall()

    with pytest.raises(CaptureTimeout, match="no frame within"):
        source.read(0.2)
    source.close()


def test_unplugged_camera_times_out(fake_camera):
    source = open_source()
    source.read(1.0)
    fake_camera.unplug()

    with pytest.raises(CaptureTimeout):
        source.read(0.2)
    source.close()


def test_truncated_buffer_is_corrupt(fake_camera):
    source = open_source()
    fake_camera.corrupt(1)

    with pytest.raises(CorruptFrame, match="unusable frame"):
        source.read(1.0)
    assert source.read(1.0).image.shape == (240, 320, 3)
    assert source.health().corrupt_frames == 1
    assert fake_camera.open_cameras[0]._outstanding == 0
    source.close()


def test_close_twice_is_safe(fake_camera):
    source = open_source()
    source.close()
    source.close()
    assert source.health().state == "closed"
    assert fake_camera.open_cameras == {}


@pytest.mark.parametrize("options, fragment", [
    ({"main_format": "YUV420"}, "main format"),
    ({"af_mode": "manual"}, "lens_position"),
    ({"af_mode": "sometimes"}, "af_mode"),
    ({"lores_size": (4000, 3000)}, "must not exceed"),
    ({"fps": 0}, "fps"),
    ({"buffer_count": 1}, "buffer_count"),
])
def test_options_rejected(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        Picamera2Options(**options).validate()
