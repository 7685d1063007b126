"""Card tracks across frames: confirmation after K agreeing frames, unknown and low-confidence reports."""

from __future__ import annotations

import numpy as np
import pytest

from pokedge.gallery.index import Hit
from pokedge.recognition.decision import Thresholds
from pokedge.recognition.pipeline import CardResult
from pokedge.service.tracker import (CONFIRMED, LEFT, LOW_CONFIDENCE, NO_CARD, STABILIZING, UNKNOWN_CARD,
                                     CardTracker, TrackerConfig)

THRESHOLDS = Thresholds(match_score=0.8, match_margin=0.05, card_floor=0.3)


def quad(x: float = 100.0, y: float = 100.0, width: float = 120.0, height: float = 168.0) -> np.ndarray:
    return np.array([[x, y], [x + width, y], [x + width, y + height], [x, y + height]], np.float32)


def card(card_id: str | None, score: float = 0.9, margin: float = 0.2, at: np.ndarray | None = None,
         status: str | None = None) -> CardResult:
    hits = [Hit(card_id, score, 0)] if card_id else []
    status = status or ("match" if score >= THRESHOLDS.match_score and margin >= THRESHOLDS.match_margin else "unknown")
    return CardResult(quad=quad() if at is None else at, status=status, score=score, margin=margin, hits=hits,
                      same_art=[], detection_score=0.9, strategy="edges", upside_down=False, blur=100.0, glare=0.0,
                      crop=np.zeros((8, 8, 3), np.uint8))


class Clock:
    """Feeds frames to a tracker with increasing frame numbers and timestamps (10 fps)."""

    def __init__(self, tracker: CardTracker):
        self.tracker = tracker
        self.frame = 0
        self.events = []

    def step(self, *cards: CardResult) -> list:
        events = self.tracker.update(self.frame, self.frame / 10.0, list(cards))
        self.frame += 1
        self.events.extend(events)
        return events

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(event.kind, event.card_id) for event in self.events]


def make(**config) -> Clock:
    return Clock(CardTracker(THRESHOLDS, TrackerConfig(**config)))


def test_confirms_after_k_agreeing_frames():
    clock = make(confirm_frames=3)

    assert clock.step(card("base1-4")) == []  # first sighting: not yet known to lie still
    assert clock.tracker.state == STABILIZING
    assert clock.step(card("base1-4")) == []
    assert clock.step(card("base1-4")) == []
    events = clock.step(card("base1-4"))

    assert [(e.kind, e.card_id) for e in events] == [(CONFIRMED, "base1-4")]
    assert events[0].frames == 3
    assert events[0].score == pytest.approx(0.9)
    assert clock.tracker.state == CONFIRMED


def test_confirmed_card_emitted_once_while_present():
    clock = make()
    for _ in range(30):
        clock.step(card("base1-4"))

    assert clock.kinds() == [(CONFIRMED, "base1-4")]


def test_k_is_configurable():
    clock = make(confirm_frames=5, unknown_frames=10)
    for _ in range(5):
        clock.step(card("base1-4"))
    assert clock.events == []
    clock.step(card("base1-4"))
    assert clock.kinds() == [(CONFIRMED, "base1-4")]


def test_flickering_predictions_never_confirm():
    clock = make(unknown_frames=100)
    for i in range(40):
        clock.step(card("base1-4" if i % 2 else "base1-5"))

    assert CONFIRMED not in [kind for kind, _ in clock.kinds()]
    assert clock.tracker.state == STABILIZING


def test_moving_card_does_not_confirm():
    clock = make(confirm_frames=3, unknown_frames=100)
    for i in range(6):  # partial views of a card dragged by hand, all agreeing on one (wrong) card
        clock.step(card("base1-39", at=quad(x=400 - 30 * i)))
    assert clock.events == []

    clock = make(confirm_frames=3, unknown_frames=100, confirm_still_only=False)
    for i in range(6):
        clock.step(card("base1-39", at=quad(x=400 - 30 * i)))
    assert clock.kinds() == [(CONFIRMED, "base1-39")]


def test_one_disagreeing_frame_resets_the_count():
    clock = make(confirm_frames=3)
    clock.step(card("base1-4"))
    clock.step(card("base1-4"))
    clock.step(card("base1-9"))
    clock.step(card("base1-4"))
    assert clock.events == []
    clock.step(card("base1-4"))
    clock.step(card("base1-4"))
    assert clock.kinds() == [(CONFIRMED, "base1-4")]


def test_fused_score_decides_not_each_frame():
    clock = make(confirm_frames=3)
    clock.step(card("base1-4", score=0.4))  # lands
    clock.step(card("base1-4", score=0.95))
    clock.step(card("base1-4", score=0.75))  # this frame alone is below the threshold
    clock.step(card("base1-4", score=0.9))   # mean 0.867 >= 0.8

    assert clock.kinds() == [(CONFIRMED, "base1-4")]


def test_low_fused_score_never_confirms():
    clock = make(confirm_frames=3, unknown_frames=100)
    for _ in range(20):
        clock.step(card("base1-4", score=0.7))
    assert clock.events == []


def test_small_margin_never_confirms():
    clock = make(confirm_frames=3, unknown_frames=100)
    for _ in range(20):
        clock.step(card("base1-4", score=0.95, margin=0.01))
    assert clock.events == []


def test_near_miss_reported_low_confidence():
    clock = make(confirm_frames=3, unknown_frames=6, low_confidence_band=0.05)
    for _ in range(10):
        clock.step(card("base1-4", score=0.77))

    assert clock.kinds() == [(LOW_CONFIDENCE, "base1-4")]
    event = clock.events[0]
    assert event.frame == 6  # 6 still frames after the first sighting
    assert event.result.crop is not None
    assert clock.tracker.state == LOW_CONFIDENCE


def test_unknown_card_when_guesses_disagree():
    clock = make(confirm_frames=3, unknown_frames=6)
    for i in range(10):
        clock.step(card(f"base1-{i % 3}", score=0.6))

    assert [kind for kind, _ in clock.kinds()] == [UNKNOWN_CARD]
    assert clock.tracker.state == UNKNOWN_CARD


def test_unknown_card_when_score_far_below():
    clock = make(confirm_frames=3, unknown_frames=6)
    for _ in range(10):
        clock.step(card("base1-4", score=0.5))
    assert clock.kinds() == [(UNKNOWN_CARD, "base1-4")]


def test_moving_card_not_reported_unknown():
    clock = make(confirm_frames=3, unknown_frames=6)
    for i in range(20):
        clock.step(card("base1-4", score=0.5, at=quad(x=100 + 12 * i)))  # slides 12 px a frame
    assert clock.events == []


def test_unknown_card_may_still_confirm():
    clock = make(confirm_frames=3, unknown_frames=6)
    for _ in range(7):
        clock.step(card("base1-4", score=0.4))
    for _ in range(3):
        clock.step(card("base1-4", score=0.95))

    assert clock.kinds() == [(UNKNOWN_CARD, "base1-4"), (CONFIRMED, "base1-4")]


def test_card_leaves_and_returns_confirmed_again():
    clock = make(confirm_frames=3, leave_frames=4)
    for _ in range(5):
        clock.step(card("base1-4"))
    for _ in range(3):
        clock.step()
    assert clock.kinds() == [(CONFIRMED, "base1-4")]  # three unseen frames: still the same card
    clock.step()
    assert clock.kinds()[-1] == (LEFT, "base1-4")
    assert clock.tracker.state == NO_CARD
    for _ in range(4):
        clock.step(card("base1-4"))

    assert clock.kinds() == [(CONFIRMED, "base1-4"), (LEFT, "base1-4"), (CONFIRMED, "base1-4")]
    assert clock.events[0].track_id != clock.events[2].track_id


def test_short_dropout_keeps_the_track():
    clock = make(confirm_frames=3, leave_frames=4)
    for i in range(12):
        if i % 3:
            clock.step(card("base1-4"))
        else:
            clock.step()  # the detector misses every third frame

    assert clock.kinds() == [(CONFIRMED, "base1-4")]


def test_two_cards_tracked_separately():
    clock = make(confirm_frames=3)
    left, right = quad(x=20), quad(x=300)
    for _ in range(4):
        clock.step(card("base1-4", at=left), card("base1-5", at=right))

    assert sorted(clock.kinds()) == [(CONFIRMED, "base1-4"), (CONFIRMED, "base1-5")]
    assert len({event.track_id for event in clock.events}) == 2
    assert len(clock.tracker.tracks) == 2


def test_next_card_on_the_same_spot():
    clock = make(confirm_frames=3)
    for _ in range(5):
        clock.step(card("base1-4"))
    for _ in range(5):
        clock.step(card("base1-5"))

    assert clock.kinds() == [(CONFIRMED, "base1-4"), (LEFT, "base1-4"), (CONFIRMED, "base1-5")]
    assert clock.events[0].track_id != clock.events[2].track_id
    assert len(clock.tracker.tracks) == 1


def test_unknown_card_replaces_confirmed():
    clock = make(confirm_frames=3, unknown_frames=6)
    for _ in range(5):
        clock.step(card("base1-4"))
    for _ in range(8):
        clock.step(card("swsh4-1", score=0.4))

    assert clock.kinds() == [(CONFIRMED, "base1-4"), (LEFT, "base1-4"), (UNKNOWN_CARD, "swsh4-1")]
    assert clock.events[0].track_id != clock.events[2].track_id
    assert clock.tracker.state == UNKNOWN_CARD


def test_confirmed_survives_few_bad_frames():
    clock = make(confirm_frames=3, unknown_frames=6)
    for _ in range(5):
        clock.step(card("base1-4"))
    for _ in range(5):
        clock.step(card("swsh4-1", score=0.4))
    clock.step(card("base1-4"))
    for _ in range(5):
        clock.step(card("swsh4-1", score=0.4))

    assert clock.kinds() == [(CONFIRMED, "base1-4")]
    assert clock.tracker.state == CONFIRMED


def test_fast_moving_confirmed_card_followed_by_id():
    clock = make(confirm_frames=3, leave_frames=4)
    for _ in range(4):
        clock.step(card("base1-4", at=quad(x=300)))
    for x in (180, 60, 0):  # slid out 120 px a frame: no quad overlap between frames
        clock.step(card("base1-4", at=quad(x=x)))

    assert clock.kinds() == [(CONFIRMED, "base1-4")]
    assert len(clock.tracker.tracks) == 1


def test_new_track_of_moved_card_merges():
    clock = make(confirm_frames=3, leave_frames=4)
    for _ in range(4):
        clock.step(card("base1-4", at=quad(x=300)))
    clock.step(card("base1-4", score=0.5, status="unknown", at=quad(x=180)))  # blurred: starts a new track
    for _ in range(3):
        clock.step(card("base1-4", at=quad(x=175)))  # sharp again, continuing the new track by IoU

    assert clock.kinds() == [(CONFIRMED, "base1-4")]
    assert len(clock.tracker.tracks) == 1


def test_two_copies_of_a_card_both_confirmed():
    clock = make(confirm_frames=3)
    for _ in range(4):
        clock.step(card("base1-4", at=quad(x=20)), card("base1-4", at=quad(x=300)))

    assert clock.kinds() == [(CONFIRMED, "base1-4"), (CONFIRMED, "base1-4")]


def test_repeated_unknown_at_same_spot_suppressed():
    clock = make(confirm_frames=3, unknown_frames=6, leave_frames=2, unknown_repeat_s=10.0)
    for _ in range(2):
        for _ in range(8):
            clock.step(card("base1-4", score=0.5))
        for _ in range(2):
            clock.step()

    assert [kind for kind, _ in clock.kinds() if kind != LEFT] == [UNKNOWN_CARD]


def test_settle_time_recorded():
    clock = make(confirm_frames=3)
    for i in range(3):
        clock.step(card(None, score=0.4, at=quad(x=100 + 20 * i)))  # sliding in, no guess
    for _ in range(3):
        clock.step(card("base1-4", at=quad(x=140)))  # comes to rest where frame 2 showed it

    event = clock.events[0]
    assert event.kind == CONFIRMED
    assert event.settled_frame == 2
    assert event.settled_since == pytest.approx(0.2)
    assert event.first_seen == pytest.approx(0.0)


def test_no_card_state():
    clock = make()
    assert clock.tracker.state == NO_CARD
    clock.step()
    assert clock.tracker.state == NO_CARD


@pytest.mark.parametrize("config, fragment", [
    ({"confirm_frames": 0}, "confirm_frames"),
    ({"confirm_frames": 4, "unknown_frames": 3}, "unknown_frames"),
    ({"leave_frames": 0}, "leave_frames"),
    ({"match_iou": 0.0}, "match_iou"),
])
def test_config_rejected(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        CardTracker(THRESHOLDS, TrackerConfig(**config))
