"""Reopen with backoff, stall detection, corrupt frames and end of stream in SupervisedSource."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from pokedge.capture.base import EndOfStream, Frame, SourceHealth, SourceUnavailable, SourceUnusable
from pokedge.capture.opencv import VideoFileSource
from pokedge.capture.picamera2 import Picamera2Options, Picamera2Source
from pokedge.capture.supervisor import Backoff, SupervisedSource
from service_support import fake_camera, write_video  # noqa: F401 - pytest fixture

FAST = Backoff(initial=0.05, maximum=0.2)


def camera_source() -> Picamera2Source:
    return Picamera2Source(Picamera2Options(main_size=(160, 120), fps=30))


def read_frame(source: SupervisedSource, within: float, timeout: float = 0.2):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        frame = source.read(timeout)
        if frame is not None:
            return frame
    return None


def test_backoff_doubles_up_to_maximum():
    backoff = Backoff(initial=0.5, maximum=2.0)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_camera_gone_and_back_reopens(fake_camera):
    fake_camera.realtime = True
    source = SupervisedSource(camera_source(), backoff=FAST, stall_reads=2)
    assert source.open()
    assert read_frame(source, 2.0) is not None

    fake_camera.unplug()
    deadline = time.monotonic() + 3.0
    while source.state == "ok" and time.monotonic() < deadline:
        source.read(0.2)
    assert source.state == "degraded"
    assert "stalled" in source.health().detail or "cannot open" in source.health().detail
    for _ in range(5):  # reopen attempts fail while the camera is away
        source.read(0.2)
    assert source.failed_opens >= 1

    fake_camera.plug()
    back = time.monotonic()
    frame = read_frame(source, 5.0)
    recovery = time.monotonic() - back

    assert frame is not None, "no frame within 5 s after the camera came back"
    assert recovery < 5.0
    assert source.state == "ok"
    assert source.reopens == 1
    assert source.health().extra["last_recovery_s"] is not None
    source.close()


def test_stall_triggers_reopen(fake_camera):
    source = SupervisedSource(camera_source(), backoff=FAST, stall_reads=2)
    source.open()
    assert read_frame(source, 1.0) is not None

    fake_camera.stall()
    assert source.read(0.1) is None
    assert source.state == "ok"  # one timeout is not yet a stall
    assert source.read(0.1) is None
    assert source.state == "degraded"
    assert source.timeouts == 2

    fake_camera.stall(False)
    assert read_frame(source, 2.0) is not None
    assert source.reopens == 1
    source.close()


def test_corrupt_frame_skipped_and_counted(fake_camera):
    source = SupervisedSource(camera_source(), backoff=FAST)
    source.open()
    fake_camera.corrupt(2)

    assert source.read(0.5) is None
    assert source.read(0.5) is None
    assert source.read(0.5) is not None
    assert source.corrupt_frames == 2
    assert source.health().corrupt_frames == 2
    assert source.state == "ok"
    assert source.reopens == 0
    source.close()


def test_absent_at_start_keeps_retrying(fake_camera):
    fake_camera.unplug()
    source = SupervisedSource(camera_source(), backoff=FAST)

    assert source.open() is False
    assert source.state == "degraded"
    assert source.read(0.1) is None

    fake_camera.plug()
    assert read_frame(source, 2.0) is not None
    assert source.state == "ok"
    assert source.health().detail == ""
    source.close()


def test_missing_picamera2_not_retried(monkeypatch):
    # A None entry makes `import picamera2` raise ImportError, as on a machine without the package.
    monkeypatch.setitem(sys.modules, "picamera2", None)
    source = SupervisedSource(camera_source(), backoff=FAST)

    started = time.monotonic()
    with pytest.raises(SourceUnusable, match="python3-picamera2"):
        source.open()
    with pytest.raises(SourceUnusable, match="--system-site-packages"):
        source.read(5.0)

    assert time.monotonic() - started < 1.0
    assert source.failed_opens == 2
    assert source.state == "closed"
    assert "opencv:N" in source.last_error


def test_busy_camera_reported(fake_camera):
    fake_camera.held_elsewhere.add(0)
    source = SupervisedSource(camera_source(), backoff=FAST)

    assert source.open() is False
    assert "busy" in source.health().detail
    assert "busy" in source.last_error
    source.close()


def test_end_of_stream_is_final(tmp_path):
    path = write_video(tmp_path / "v.avi", 3)
    source = SupervisedSource(VideoFileSource(path, realtime=False))
    source.open()

    frames = [source.read(1.0) for _ in range(3)]
    assert all(frame is not None for frame in frames)
    with pytest.raises(EndOfStream):
        source.read(1.0)
    with pytest.raises(EndOfStream):
        source.read(1.0)
    assert source.state == "ended"
    source.close()
    assert source.state == "ended"


class ExplodingSource:
    """A source whose driver raises an unexpected exception on the second read."""

    name = "exploding"

    def __init__(self):
        self.opens = 0
        self.reads = 0

    def open(self):
        self.opens += 1

    def read(self, timeout):
        self.reads += 1
        if self.reads == 2:
            raise KeyError("driver bug")
        return Frame(np.zeros((32, 32, 3), np.uint8), time.monotonic(), self.reads)

    def close(self):
        pass

    def health(self):
        return SourceHealth("ok")


def test_unexpected_error_reopens():
    inner = ExplodingSource()
    source = SupervisedSource(inner, backoff=FAST)
    source.open()

    assert source.read(0.1) is not None
    assert source.read(0.1) is None
    assert source.state == "degraded"
    assert "KeyError" in source.last_error
    assert source.read(0.1) is not None
    assert inner.opens == 2
    assert source.reopens == 1


class FailingOpen:
    name = "failing"

    def open(self):
        raise SourceUnavailable("no device")

    def read(self, timeout):
        raise AssertionError("read without open")

    def close(self):
        pass

    def health(self):
        return SourceHealth("closed")


def test_failed_opens_back_off():
    source = SupervisedSource(FailingOpen(), backoff=Backoff(initial=0.2, maximum=0.4))
    source.open()

    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        assert source.read(0.1) is None

    # Attempts at 0, 0.2, 0.6 and 1.0 s: the backoff keeps the count low.
    assert 2 <= source.failed_opens <= 5
