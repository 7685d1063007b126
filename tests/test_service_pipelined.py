"""Tests of the daemon with pipelined recognition.

They check that it publishes the same events as sequential recognition, stops within 5 s, logs a
frame error with the frame id, and stops the watchdog pings when recognition hangs.
"""

from __future__ import annotations

import logging
import re
import threading

import pytest

from pokedge.recognition.runtime import RuntimeSources
from pokedge.service import daemon as daemon_module
from pokedge.service.config import ServiceConfig
from pokedge.service.daemon import Daemon, recognition_mode
from pokedge.service.notify import Watchdog
from service_support import load_soak, small_video, stack_video  # noqa: F401

soak = load_soak()

DECISIONS = ("confirmed", "unknown_card", "low_confidence", "left")


@pytest.fixture
def loader(tiny_contract, tiny_gallery):
    return soak.loader_for(RuntimeSources(tiny_contract, tiny_gallery, version="test-version"), threads=1)


def play_to_end(video, loader, data_dir, recognition: str):
    """Play a video file once through the daemon and return the RunningDaemon after it stops."""
    config = soak.service_config(f"file:{video.path}", data_dir, realtime=False, recognition=recognition)
    running = soak.RunningDaemon(config, loader).start()
    assert running.wait_until(lambda: running.daemon.source_ended, timeout=120), "the video did not finish"
    running.stop()
    return running


def decisions(running) -> list[tuple]:
    """Return the tracker's decision events as (kind, card, track, frame, frames, score), without wall-clock times."""
    return [(kind, data["card_id"], data["track_id"], data["frame"], data.get("frames"), data.get("score"))
            for _, kind, data in running.events if kind in DECISIONS]


def test_pipelined_events_match_sequential(stack_video, loader, tmp_path):
    sequential = play_to_end(stack_video, loader, tmp_path / "sequential", "sequential")
    pipelined = play_to_end(stack_video, loader, tmp_path / "pipelined", "pipelined")

    assert sequential.daemon.recognition == "sequential"
    assert pipelined.daemon.recognition == "pipelined"
    assert sequential.daemon.frames == stack_video.frames
    assert pipelined.daemon.frames == stack_video.frames
    confirmed = [event[1] for event in decisions(sequential) if event[0] == "confirmed"]
    assert confirmed == [segment.card_id for segment in stack_video.segments]
    assert decisions(pipelined) == decisions(sequential)


def test_pipelined_stop_publishes_frames_in_flight(small_video, loader, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pokedge.recognition.stream")
    config = soak.service_config(f"file:{small_video.path}", tmp_path, realtime=False, loop=True,
                                 recognition="pipelined")
    running = soak.RunningDaemon(config, loader).start()
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.frames >= 10, timeout=60)
    stop_s = running.stop()

    assert stop_s < 5.0
    assert not running._thread.is_alive()
    assert daemon.frames == daemon.source.frames, "frames read before the stop must still be published"
    assert "recognition stream (onnx) started" in caplog.text
    assert re.search(r"recognition stream \(onnx\) stopped after \d+ frames \(0 in flight dropped\)", caplog.text)


def test_pipelined_error_logs_frame_id(small_video, loader, tmp_path, caplog):
    calls = []

    def load():
        loaded = loader()
        detector = loaded.recognizer.detector
        detect = detector.detect

        def detect_or_fail(image):
            calls.append(1)
            if len(calls) == 7:
                raise RuntimeError("detection failed on purpose")
            return detect(image)

        detector.detect = detect_or_fail
        return loaded

    caplog.set_level(logging.ERROR, logger="pokedge.service.daemon")
    config = soak.service_config(f"file:{small_video.path}", tmp_path, realtime=False, recognition="pipelined")
    running = soak.RunningDaemon(config, load).start()
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.source_ended, timeout=120)
    running.stop()

    assert daemon.metrics.frame_errors.value() == 1
    assert daemon.frames == small_video.frames - 1
    assert daemon.errors_in_row == 0
    logged = re.findall(r"frame (\d+): recognition failed \(1 in a row\), frame skipped: RuntimeError: detection "
                        r"failed on purpose", caplog.text)

    # Frame ids start at 0, so "6" is the 7th frame read. The single detection worker takes frames in order.
    assert logged == ["6"], caplog.text


class CountingNotifier:
    """Fake systemd notifier that counts the watchdog pings."""

    def __init__(self):
        self.pings = 0

    def watchdog(self) -> bool:
        self.pings += 1
        return True

    def __getattr__(self, name):
        return lambda *args, **kwargs: True


def test_watchdog_stops_when_recognition_hangs(small_video, loader, tmp_path, caplog):
    hang = threading.Event()
    release = threading.Event()

    def load():
        loaded = loader()
        backend = loaded.recognizer.backend
        embed = backend.embed

        def embed_or_hang(batch):
            if hang.is_set():
                release.wait(60)
            return embed(batch)

        backend.embed = embed_or_hang
        return loaded

    caplog.set_level(logging.INFO, logger="pokedge.service.daemon")
    notifier = CountingNotifier()
    config = soak.service_config(f"file:{small_video.path}", tmp_path, realtime=False, loop=True,
                                 recognition="pipelined")
    running = soak.RunningDaemon(config, load)
    daemon = running.daemon
    daemon.watchdog = Watchdog(notifier, timeout=0.4)  # pings at most every timeout / 4 = 0.1 s
    try:
        running.start()
        assert running.wait_until(lambda: daemon.frames >= 5, timeout=60)
        assert running.wait_until(lambda: notifier.pings >= 2, timeout=10)

        hang.set()
        assert running.wait_until(lambda: "watchdog pings stop" in caplog.text, timeout=30)
        pings = notifier.pings
        frames = daemon.frames
        assert not running.wait_until(lambda: notifier.pings > pings, timeout=1.0), "pinged while hung"
        assert daemon.frames == frames

        stop_s = running.stop()
        assert stop_s < 5.0, "the stop must not wait for hung recognition threads"
        assert not running._thread.is_alive()
        assert "still in recognition after" in caplog.text
    finally:
        release.set()


@pytest.mark.parametrize("cores,expected", [(1, "sequential"), (2, "pipelined"), (4, "pipelined")])
def test_auto_recognition_follows_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(daemon_module, "usable_cores", lambda: cores)
    assert recognition_mode("auto") == expected
    assert recognition_mode("sequential") == "sequential"
    assert recognition_mode("pipelined") == "pipelined"


@pytest.mark.parametrize("recognition,threads,expected", [("pipelined", None, 1), ("pipelined", 3, 3),
                                                          ("sequential", None, None)])
def test_pipelined_onnx_threads(small_video, tmp_path, recognition, threads, expected):
    config = ServiceConfig(source=f"file:{small_video.path}", data_dir=tmp_path, recognition=recognition,
                           threads=threads)
    daemon = Daemon(config)
    assert daemon.recognition == recognition
    assert daemon._load.args[-1] == expected  # threads, the last positional argument
    assert daemon._load.keywords == {"read_numbers": True, "strip_extensions": True}
