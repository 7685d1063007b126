"""One-shot recognition from a camera: read frames until one card is confirmed, for `pokedge scan --camera`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pokedge.capture.base import EndOfStream
from pokedge.capture.supervisor import SupervisedSource
from pokedge.recognition.pipeline import FrameResult, Recognizer
from pokedge.service.tracker import CONFIRMED, LEFT, CardTracker, TrackerConfig, TrackEvent

_log = logging.getLogger(__name__)


@dataclass
class OneShot:
    """The decision that ended the wait (None after a timeout), and what was read."""

    event: TrackEvent | None
    result: FrameResult | None  # the deciding frame's result, reduced to the decided card
    frames: int
    elapsed_s: float
    reason: str  # why the wait ended: confirmed, undecided card, timeout, source ended


def wait_for_card(recognizer: Recognizer, source: SupervisedSource, timeout: float,
                  config: TrackerConfig | None = None, unknown_grace: float = 2.0,
                  read_timeout: float = 1.0) -> OneShot:
    """Recognize frames until a card is confirmed or `timeout` seconds pass.

    A card reported unknown or low confidence gets `unknown_grace` more
    seconds to confirm, because its first frames may have been blurred. After
    that, or at the timeout, the unsure decision is returned.
    """
    tracker = CardTracker(recognizer.thresholds, config)
    started = time.monotonic()
    deadline = started + timeout
    unsure: tuple[TrackEvent, FrameResult] | None = None
    frames = 0

    while time.monotonic() < deadline:
        try:
            frame = source.read(min(read_timeout, max(deadline - time.monotonic(), 0.01)))
        except EndOfStream:
            return _finish(unsure, frames, started, "source ended")
        if frame is None:
            continue

        result = recognizer.recognize(frame.image)
        frames += 1
        for event in tracker.update(frame.sequence, frame.timestamp, result.cards):
            if event.kind == CONFIRMED:
                return OneShot(event, _only(result, event), frames, time.monotonic() - started, "confirmed")
            if event.kind != LEFT and unsure is None:
                unsure = (event, _only(result, event))
                deadline = min(deadline, time.monotonic() + unknown_grace)
                _log.info("card %s reported %s; waiting %.1f s for a confirmation", event.card_id, event.kind,
                          unknown_grace)

    return _finish(unsure, frames, started, "undecided card" if unsure else "timeout")


def _finish(unsure, frames: int, started: float, reason: str) -> OneShot:
    event, result = unsure if unsure else (None, None)
    return OneShot(event, result, frames, time.monotonic() - started, reason)


def _only(result: FrameResult, event: TrackEvent) -> FrameResult:
    cards = [event.result] if event.result is not None else []
    return FrameResult(cards, dict(result.timings_ms), result.rejected)
