"""Tests of FrameStream, which recognizes frames in overlapping worker threads.

They check that results come back in submission order and equal to Recognizer.recognize, that an error
fails only its own frames, that close() returns after worker failures, and that submit() blocks when full.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from pokedge.recognition.pipeline import STAGES
from pokedge.recognition.stream import FrameStream
from service_support import small_video  # noqa: F401


@pytest.fixture(scope="module")
def video_frames(small_video):
    """Every frame of the three-card video, decoded with OpenCV."""
    capture = cv2.VideoCapture(str(small_video.path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == small_video.frames
    return frames


def card_summary(result) -> list[tuple]:
    """Return the fields that recognition sets on each card, with the quad rounded to 1/1000 px."""
    return [(card.card_id, card.status, card.score, card.margin, card.upside_down, card.strategy,
             card.blur, card.glare, tuple(np.round(card.quad, 3).ravel()), tuple(h.card_id for h in card.hits))
            for card in result.cards]


def run_stream(stream: FrameStream, frames: list[np.ndarray], timeout: float = 60.0) -> list[tuple]:
    """Submit every frame from a second thread and take the results on this one."""
    def submit_all():
        for number, image in enumerate(frames):
            stream.submit(number, image)

    feeder = threading.Thread(target=submit_all)
    feeder.start()
    results = []
    deadline = time.monotonic() + timeout
    while len(results) < len(frames) and time.monotonic() < deadline:
        item = stream.get(timeout=1.0)
        if item is not None:
            results.append(item)
    feeder.join(timeout=10)
    return results


@pytest.mark.parametrize("detect_workers,embed_workers", [(1, 1), (1, 3), (2, 2)])
def test_stream_matches_recognize(tiny_recognizer, video_frames, detect_workers, embed_workers):
    expected = [tiny_recognizer.recognize(image) for image in video_frames]
    stream = FrameStream(tiny_recognizer, detect_workers, embed_workers, depth=2)
    try:
        results = run_stream(stream, video_frames)
    finally:
        assert stream.close()

    assert [tag for tag, _ in results] == list(range(len(video_frames)))
    assert sum(len(result.cards) for result in expected) > 0, "the video must show cards"
    for (tag, outcome), sequential in zip(results, expected):
        assert not isinstance(outcome, BaseException), f"frame {tag}: {outcome!r}"
        assert card_summary(outcome) == card_summary(sequential), f"frame {tag}"
        assert outcome.rejected == sequential.rejected, f"frame {tag}"
        assert list(outcome.timings_ms) == list(STAGES)
        assert all(ms >= 0 for ms in outcome.timings_ms.values())


def test_stream_keeps_crops(tiny_recognizer, video_frames):
    tiny_recognizer.keep_crops = True
    stream = FrameStream(tiny_recognizer, embed_workers=2)
    try:
        results = run_stream(stream, video_frames[:10])
    finally:
        stream.close()
    cards = [card for _, result in results for card in result.cards]
    assert cards
    assert all(card.crop is not None for card in cards)
    assert all(card.crop.ndim == 3 for card in cards)


def test_detection_error_fails_only_its_frame(tiny_recognizer, video_frames, monkeypatch):
    bad = video_frames[5].copy()
    detect = tiny_recognizer.detector.detect

    def detect_or_fail(image):
        if image is bad:
            raise RuntimeError("detection failed on purpose")
        return detect(image)

    monkeypatch.setattr(tiny_recognizer.detector, "detect", detect_or_fail)
    frames = video_frames[:5] + [bad] + video_frames[6:12]
    expected = [tiny_recognizer.recognize(image) for image in video_frames[:12]]
    stream = FrameStream(tiny_recognizer, embed_workers=2)
    try:
        results = run_stream(stream, frames)
    finally:
        stream.close()

    assert [tag for tag, _ in results] == list(range(12))
    errors = [tag for tag, outcome in results if isinstance(outcome, BaseException)]
    assert errors == [5]
    assert "on purpose" in str(results[5][1])
    for tag, outcome in results:
        if tag != 5:
            assert card_summary(outcome) == card_summary(expected[tag]), f"frame {tag}"


def test_embed_error_fails_frames_with_cards(tiny_recognizer, video_frames, monkeypatch):
    def fail(batch):
        raise RuntimeError("embedding failed on purpose")

    monkeypatch.setattr(tiny_recognizer.backend, "embed", fail)
    stream = FrameStream(tiny_recognizer, embed_workers=2)
    try:
        results = run_stream(stream, video_frames[:8])
    finally:
        stream.close()
    with_cards = [n for n, image in enumerate(video_frames[:8]) if tiny_recognizer.detector.detect(image)]

    assert [tag for tag, _ in results] == list(range(8))
    assert with_cards, "some frames must show a card, or nothing is embedded"
    for tag in with_cards:
        assert isinstance(results[tag][1], RuntimeError)


def close_within(stream: FrameStream, seconds: float) -> bool:
    """Run close() on a thread and return whether it returned within `seconds`."""
    closer = threading.Thread(target=stream.close, daemon=True)
    closer.start()
    closer.join(seconds)
    return not closer.is_alive()


def test_close_after_worker_error(tiny_recognizer, video_frames, monkeypatch):
    def fail(batch):
        raise RuntimeError("embedding failed on purpose")

    monkeypatch.setattr(tiny_recognizer.backend, "embed", fail)
    stream = FrameStream(tiny_recognizer, embed_workers=2)
    for number in range(stream.capacity):
        assert stream.submit(number, video_frames[number], timeout=5)

    # One failed frame is fetched, and the others are still in the stream when close() runs.
    assert stream.get(timeout=30) is not None

    assert close_within(stream, 10), "close() hung after a worker error"
    assert not any(thread.is_alive() for thread in stream._threads)


class WorkerKilled(BaseException):
    """Error that is not an Exception subclass, so it ends the worker thread that raises it."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_close_after_worker_dies(tiny_recognizer, video_frames, monkeypatch):
    def die(batch):
        raise WorkerKilled("the worker dies on purpose")

    monkeypatch.setattr(tiny_recognizer.backend, "embed", die)
    stream = FrameStream(tiny_recognizer, embed_workers=1)
    frame = next(image for image in video_frames if tiny_recognizer.detector.detect(image))
    assert stream.submit("dies", frame, timeout=5)
    assert stream.submit("stuck", frame, timeout=5)

    tag, outcome = stream.get(timeout=30)
    assert tag == "dies"
    assert isinstance(outcome, WorkerKilled)
    assert stream.get(timeout=0.5) is None, "no embedding worker is left for the second frame"
    assert close_within(stream, 10), "close() hung after a worker thread died"


def test_submit_blocks_when_full(tiny_recognizer, video_frames, monkeypatch):
    release = threading.Event()
    embed = tiny_recognizer.backend.embed

    def embed_when_released(batch):
        release.wait(30)
        return embed(batch)

    monkeypatch.setattr(tiny_recognizer.backend, "embed", embed_when_released)
    stream = FrameStream(tiny_recognizer, embed_workers=1, depth=1)
    frame = next(image for image in video_frames if tiny_recognizer.detector.detect(image))
    try:
        for number in range(stream.capacity):
            assert stream.submit(number, frame, timeout=5)
        assert stream.full
        assert not stream.submit("one too many", frame, timeout=0.2)
        time.sleep(0.3)
        assert stream.stalled_s() >= 0.3

        release.set()
        tags = [stream.get(timeout=30)[0] for _ in range(stream.capacity)]
        assert tags == list(range(stream.capacity))
        assert stream.in_flight == 0
        assert stream.stalled_s() == 0.0
        assert stream.submit("fits again", frame, timeout=5)
    finally:
        release.set()
        stream.close()


def test_close_drops_frames_in_flight(tiny_recognizer, video_frames):
    stream = FrameStream(tiny_recognizer, embed_workers=2)
    for number in range(stream.capacity):
        stream.submit(number, video_frames[number])
    assert close_within(stream, 10)
    with pytest.raises(RuntimeError, match="closed"):
        stream.submit("late", video_frames[0])


@pytest.mark.parametrize("settings,message", [({"detect_workers": 0}, "detect_workers"),
                                              ({"embed_workers": 0}, "embed_workers"),
                                              ({"depth": -1}, "depth")])
def test_stream_rejects_invalid_settings(tiny_recognizer, settings, message):
    with pytest.raises(ValueError, match=message):
        FrameStream(tiny_recognizer, **settings)
