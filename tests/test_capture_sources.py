"""Video file, webcam/stream and folder sources, and parsing --source specs."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from pokedge.capture.base import CaptureTimeout, CorruptFrame, EndOfStream, SourceUnavailable, check_frame
from pokedge.capture.folder import FolderSource
from pokedge.capture.opencv import OpenCVCameraSource, VideoFileSource
from pokedge.capture.pacing import Pacer
from pokedge.capture.sources import SourceSpec, build_source, parse_source_spec
from pokedge.errors import InputError
from service_support import corrupt_video_frame, damaged_bytes, frame_index, numbered_frame, write_video


def read_all(source, timeout: float = 1.0) -> tuple[list, int]:
    """Read until EndOfStream; return the frames and the number of CorruptFrame errors."""
    frames, corrupt = [], 0
    while True:
        try:
            frames.append(source.read(timeout))
        except CorruptFrame:
            corrupt += 1
        except EndOfStream:
            return frames, corrupt


@pytest.mark.parametrize("spec, expected", [
    ("picamera2", SourceSpec("picamera2", 0)),
    ("picamera2:1", SourceSpec("picamera2", 1)),
    ("opencv:0", SourceSpec("opencv", 0)),
    ("opencv:/dev/video2", SourceSpec("opencv", "/dev/video2")),
    ("opencv:rtsp://127.0.0.1:8554/cam", SourceSpec("opencv", "rtsp://127.0.0.1:8554/cam")),
    ("rtsp://127.0.0.1:8554/cam", SourceSpec("opencv", "rtsp://127.0.0.1:8554/cam")),
    ("file:/tmp/a.avi", SourceSpec("file", "/tmp/a.avi")),
    ("dir:frames", SourceSpec("dir", "frames")),
])
def test_source_spec_parses(spec, expected):
    assert parse_source_spec(spec) == expected


@pytest.mark.parametrize("spec, fragment", [
    ("webcam", "unknown source"),
    ("file:", "nothing after"),
    ("picamera2:front", "camera number"),
])
def test_source_spec_rejects_bad_values(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_source_spec(spec)


def test_video_file_delivers_every_frame_in_bgr(tmp_path):
    path = write_video(tmp_path / "v.avi", 12)
    source = VideoFileSource(path, realtime=False)
    source.open()

    frames, corrupt = read_all(source)

    assert corrupt == 0
    assert [frame_index(f.image) for f in frames] == list(range(12))
    assert [f.sequence for f in frames] == list(range(12))
    red = frames[0].image[4, 4]
    assert red[2] > 200, f"corner should be red in BGR order, got {red}"
    assert red[0] < 60, f"corner should be red in BGR order, got {red}"
    assert source.health().state == "ended"
    source.close()
    assert source.health().state == "closed"


def test_video_file_loops(tmp_path):
    path = write_video(tmp_path / "v.avi", 5)
    source = VideoFileSource(path, loop=True, realtime=False)
    source.open()

    indexes = [frame_index(source.read(1.0).image) for _ in range(12)]

    assert indexes == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert source.health().extra["loop"] is True
    source.close()


def test_video_file_plays_at_native_rate(tmp_path):
    path = write_video(tmp_path / "v.avi", 10, fps=20.0)
    source = VideoFileSource(path, realtime=True)
    source.open()

    started = time.monotonic()
    frames, _ = read_all(source)
    elapsed = time.monotonic() - started

    assert len(frames) == 10
    assert elapsed >= 9 / 20 - 0.02, f"10 frames at 20 fps took only {elapsed:.3f} s"
    source.close()


def test_video_file_drops_frames_for_slow_reader(tmp_path):
    path = write_video(tmp_path / "v.avi", 30, fps=30.0)
    source = VideoFileSource(path, realtime=True)
    source.open()

    delivered = []
    while True:
        try:
            delivered.append(frame_index(source.read(1.0).image))
        except EndOfStream:
            break
        time.sleep(0.1)  # a recognizer at 10 fps behind a 30 fps recording

    assert len(delivered) < 15
    assert delivered == sorted(delivered)
    assert source.health().dropped_frames == 30 - len(delivered)
    source.close()


def test_video_file_skips_corrupt_frame(tmp_path):
    path = write_video(tmp_path / "v.avi", 20)
    corrupt_video_frame(path, 8)
    source = VideoFileSource(path, realtime=False)
    source.open()

    frames, corrupt = read_all(source)

    assert corrupt == 1
    assert source.health().corrupt_frames == 1
    indexes = [frame_index(f.image) for f in frames]
    assert 8 not in indexes
    assert indexes[-1] == 19
    source.close()


def test_video_file_missing(tmp_path):
    with pytest.raises(SourceUnavailable, match="not found"):
        VideoFileSource(tmp_path / "absent.avi").open()


def test_video_file_not_a_video(tmp_path):
    path = tmp_path / "text.avi"
    path.write_text("not a video")
    with pytest.raises(SourceUnavailable, match="cannot open"):
        VideoFileSource(path).open()


class PacedCapture:
    """A VideoCapture that delivers at most 50 frames a second, like a webcam."""

    def __init__(self, target):
        self._capture = RealVideoCapture(target)

    def read(self):
        time.sleep(0.02)
        return self._capture.read()

    def __getattr__(self, name):
        return getattr(self._capture, name)


RealVideoCapture = cv2.VideoCapture


def test_opencv_camera_reads_on_its_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", PacedCapture)
    path = write_video(tmp_path / "v.avi", 6)
    source = OpenCVCameraSource(str(path))
    source.open()

    first = source.read(2.0)
    assert first.image.shape == (120, 160, 3)

    # After the last frame every read fails: a few count as corrupt, then the device counts as gone.
    outcome = None
    for _ in range(30):
        try:
            source.read(1.0)
        except CorruptFrame:
            continue
        except (SourceUnavailable, CaptureTimeout) as exc:
            outcome = exc
            break
    assert isinstance(outcome, SourceUnavailable), f"expected the device to be reported gone, got {outcome!r}"
    assert "gone" in str(outcome)
    source.close()
    assert source.health().state == "closed"


def test_opencv_camera_absent_device():
    source = OpenCVCameraSource("/dev/video-absent", open_timeout=5.0)
    with pytest.raises(SourceUnavailable, match="cannot open"):
        source.open()
    source.close()


def test_folder_source_in_name_order(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), numbered_frame(i))
    (tmp_path / "notes.txt").write_text("ignored")
    source = FolderSource(tmp_path, realtime=False)
    source.open()

    frames, corrupt = read_all(source)

    assert corrupt == 0
    assert [frame_index(f.image) for f in frames] == [0, 1, 2]
    assert [f.metadata["file"] for f in frames] == ["frame0.png", "frame1.png", "frame2.png"]


def test_folder_source_skips_unreadable_image(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), numbered_frame(1))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    cv2.imwrite(str(tmp_path / "c.png"), numbered_frame(3))
    source = FolderSource(tmp_path, realtime=False)
    source.open()

    frames, corrupt = read_all(source)

    assert corrupt == 1
    assert source.health().corrupt_frames == 1
    assert [frame_index(f.image) for f in frames] == [1, 3]


def test_folder_source_loops(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), numbered_frame(i))
    source = FolderSource(tmp_path, loop=True, realtime=False)
    source.open()

    assert [frame_index(source.read(1.0).image) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_folder_source_empty(tmp_path):
    with pytest.raises(SourceUnavailable, match="no image files"):
        FolderSource(tmp_path).open()


def test_folder_source_paced(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), numbered_frame(i))
    source = FolderSource(tmp_path, realtime=True, fps=20.0)
    source.open()

    started = time.monotonic()
    frames, _ = read_all(source)

    assert len(frames) == 4
    assert time.monotonic() - started >= 3 / 20 - 0.02


def test_pacer_skips_when_behind():
    pacer = Pacer(100.0)
    assert pacer.plan(0) == (0, 0.0)
    time.sleep(0.05)
    index, wait = pacer.plan(1)
    assert index >= 4
    assert wait == 0.0


def test_pacer_rejects_zero_fps():
    with pytest.raises(ValueError, match="positive"):
        Pacer(0.0)


@pytest.mark.parametrize("image, fragment", [
    (np.zeros((120, 160), np.uint8), "expected uint8"),
    (np.zeros((120, 160, 3), np.float32), "expected uint8"),
    (np.zeros((8, 8, 3), np.uint8), "too small"),
    ("frame", "not an image array"),
])
def test_check_frame_rejects(image, fragment):
    with pytest.raises(CorruptFrame, match=fragment):
        check_frame(image, "test")


def test_check_frame_rejects_size_change():
    with pytest.raises(CorruptFrame, match="this session delivered"):
        check_frame(np.zeros((120, 160, 3), np.uint8), "test", (240, 320, 3))


def test_build_source_kinds(tmp_path):
    write_video(tmp_path / "v.avi", 3)
    cv2.imwrite(str(tmp_path / "still.jpg"), numbered_frame(0))
    assert isinstance(build_source(parse_source_spec(f"file:{tmp_path}/v.avi")), VideoFileSource)
    assert isinstance(build_source(parse_source_spec(f"file:{tmp_path}/still.jpg")), VideoFileSource)
    assert isinstance(build_source(parse_source_spec(f"dir:{tmp_path}")), FolderSource)
    assert isinstance(build_source(parse_source_spec("opencv:0")), OpenCVCameraSource)


@pytest.mark.parametrize("spec, message", [
    ("file:{tmp}/absent.avi", "not found"),
    ("dir:{tmp}/absent", "not found"),
    ("file:{tmp}", "is a folder; use dir:"),
    ("dir:{tmp}/v.avi", "is not a folder; use file:"),
])
def test_build_source_rejects_invalid_paths(tmp_path, spec, message):
    (tmp_path / "v.avi").write_bytes(b"")
    with pytest.raises(InputError, match=message):
        build_source(parse_source_spec(spec.format(tmp=tmp_path)))


def damaged_content(folder, kind: str) -> bytes:
    """Return a damaged file's content: empty, an MJPG .avi cut after 3000 bytes, or one of damaged_bytes."""
    if kind == "empty":
        return b""
    if kind == "video_header":
        return write_video(folder / "whole.avi", 10).read_bytes()[:3000]
    return damaged_bytes(kind)


@pytest.mark.parametrize("name, kind, fragment", [
    ("noise.jpg", "noise", "cannot be decoded as an image or video"),
    ("noise.avi", "noise", "cannot be decoded as an image or video"),
    ("header_only.jpg", "header", "cannot be decoded as an image or video"),
    ("half.jpg", "half", "JPEG data is truncated"),
    ("empty.avi", "empty", "cannot be decoded as an image or video"),
    ("header_only.avi", "video_header", "cannot be decoded as an image or video"),
])
def test_build_source_rejects_damaged_file(tmp_path, name, kind, fragment):
    path = tmp_path / name
    path.write_bytes(damaged_content(tmp_path, kind))

    with pytest.raises(InputError) as error:
        build_source(parse_source_spec(f"file:{path}"))

    assert fragment in str(error.value)
    assert f"source file:{path}" in str(error.value)
