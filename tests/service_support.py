"""Helpers shared by the capture and service tests: videos, the Picamera2 test double, the soak script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FAKE_PICAMERA2 = TESTS / "fake_picamera2"


def load_soak():
    """Import scripts/soak.py (the stack-scan and soak harness) as a module."""
    name = "pokedge_soak_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def numbered_frame(index: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A BGR frame whose blue channel encodes `index` (survives MJPG) and whose corner is pure red."""
    width, height = size
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = (index * 8) % 256
    frame[:16, :16] = (0, 0, 255)
    return frame


def frame_index(frame: np.ndarray) -> int:
    return int(round(float(np.median(frame[40:, 40:, 0])) / 8))


def write_video(path: Path, frames: int, fps: float = 30.0, size: tuple[int, int] = (160, 120)) -> Path:
    """Write an MJPG .avi of numbered frames with OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for i in range(frames):
        writer.write(numbered_frame(i, size))
    writer.release()
    return path


def damaged_bytes(kind: str) -> bytes:
    """Return the content of a damaged file: 20 kB of "noise", or a real JPEG cut at "half" or after its "header"."""
    rng = np.random.default_rng(0)
    if kind == "noise":
        return rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    picture = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (9, 9), 0)
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    cuts = {"half": len(jpeg) // 2, "header": jpeg.index(b"\xff\xda")}  # FF DA starts the compressed data
    return jpeg[: cuts[kind]]


def corrupt_video_frame(path: Path, index: int) -> None:
    """Overwrite frame `index` of an MJPG .avi with random bytes, keeping the container intact."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    start, end = starts[index], starts[index + 1]
    noise = np.random.default_rng(0).integers(0, 256, end - 16 - start, dtype=np.uint8).tobytes()
    data[start:end - 16] = noise
    path.write_bytes(bytes(data))


@pytest.fixture
def fake_camera(monkeypatch):
    """The Picamera2 test double on sys.path, reset to one Camera Module 3; yields its CameraSystem."""
    monkeypatch.syspath_prepend(str(FAKE_PICAMERA2))
    import picamera2  # noqa: F401 - the test double, found first on sys.path
    from picamera2._camera_system import SYSTEM

    assert Path(picamera2.__file__).is_relative_to(FAKE_PICAMERA2), "a real picamera2 shadows the test double"
    SYSTEM.reset()
    yield SYSTEM
    SYSTEM.reset()


@pytest.fixture(scope="session")
def stack_video(tmp_path_factory, synthetic_cards):
    """Four synthetic cards laid under the camera one after another, 640x480 at 15 fps."""
    soak = load_soak()
    cards = soak.read_cards(synthetic_cards / "cards.csv")[:4]
    return soak.make_stack_video(cards, tmp_path_factory.mktemp("video") / "stack.avi", fps=15.0)


@pytest.fixture(scope="session")
def small_video(tmp_path_factory, synthetic_cards):
    """Three cards at 320x240, for tests that need frames flowing rather than accuracy."""
    soak = load_soak()
    cards = soak.read_cards(synthetic_cards / "cards.csv")[4:7]
    return soak.make_stack_video(cards, tmp_path_factory.mktemp("video") / "small.avi", fps=15.0,
                                 frame_size=(320, 240))
