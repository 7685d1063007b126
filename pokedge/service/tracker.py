"""Per-card tracks across frames, and when a card counts as confirmed, unknown or low confidence.

Each card in view gets a track, continued from frame to frame by the IoU of
its quad. A track is in one state:

- `stabilizing`: seen, but no decision yet.
- `confirmed`: the same card id was top-1 in `confirm_frames` (K) consecutive
  frames in which the card lay still, and the fused score (the mean of those
  K top-1 scores, and of their name margins) reaches the calibrated match
  threshold. Predictions that change from frame to frame never confirm, and
  neither does a card still moving under the hand, whose partial views can
  agree on a wrong card.
- `low_confidence`: the card lay still for `unknown_frames` frames without
  confirming, but its last K frames agree on one card whose fused score is
  just below the threshold (within `low_confidence_band`) or whose margin
  over another name is too small.
- `unknown_card`: the card lay still for `unknown_frames` frames without
  confirming, and its best guesses disagree or score well below the threshold.

With no track the frame state is `no_card`. Each decision is emitted once
per track, so a card lying under the camera is reported once and again only
after it has left (unseen for `leave_frames` frames) and come back. An
unknown or low-confidence card may still confirm later (the first frames
were blurred), which emits the confirmation too. If a confirmed track starts
agreeing on another card (the next card of a stack laid on the same spot),
the old card leaves and a new track confirms the new one. If instead the track lies
still for `unknown_frames` frames without the confirmed card among its top-1
guesses (an unknown card laid on the same spot), the old card leaves and the
new one is reported unknown or low confidence.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pokedge.detection.geometry import quad_iou
from pokedge.recognition.decision import MATCH, Thresholds
from pokedge.recognition.pipeline import CardResult

_log = logging.getLogger(__name__)

NO_CARD = "no_card"
STABILIZING = "stabilizing"
CONFIRMED = "confirmed"
UNKNOWN_CARD = "unknown_card"
LOW_CONFIDENCE = "low_confidence"
STATES = (NO_CARD, STABILIZING, CONFIRMED, UNKNOWN_CARD, LOW_CONFIDENCE)
LEFT = "left"  # event kind when a track ends


@dataclass
class TrackerConfig:
    """How many frames make a decision, and how quads are matched between frames."""

    confirm_frames: int = 3
    # Only frames in which the quad did not move count towards a confirmation; False also counts moving ones.
    confirm_still_only: bool = True
    # Frames a card must lie still without confirming before it is reported unknown or low confidence.
    unknown_frames: int = 6
    match_iou: float = 0.3  # minimum quad IoU that continues a track in the next frame
    settle_iou: float = 0.85  # IoU with the previous frame's quad at or above which the card lies still
    leave_frames: int = 4  # frames unseen after which the card has left
    # NOTE: not calibrated; a fused score this far below the match threshold still counts as low confidence.
    low_confidence_band: float = 0.05
    # An unknown at the spot of an earlier unknown with the same best guess is not reported again for this
    # long, so a background pattern the detector keeps finding does not flood the scan log.
    unknown_repeat_s: float = 10.0

    def validate(self) -> None:
        if self.confirm_frames < 1:
            raise ValueError(f"confirm_frames must be at least 1, got {self.confirm_frames}")
        if self.unknown_frames < self.confirm_frames:
            raise ValueError(f"unknown_frames ({self.unknown_frames}) must be at least confirm_frames "
                             f"({self.confirm_frames})")
        if self.leave_frames < 1:
            raise ValueError(f"leave_frames must be at least 1, got {self.leave_frames}")
        for name in ("match_iou", "settle_iou"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")


@dataclass
class Observation:
    """One frame's recognition of a tracked card."""

    frame: int
    timestamp: float
    card_id: str | None  # top-1 card id, matched or not
    status: str  # "match" or "unknown" as the pipeline decided for this frame alone
    score: float
    margin: float
    settled: bool


@dataclass
class Track:
    track_id: int
    quad: np.ndarray
    first_frame: int
    first_seen: float
    state: str = STABILIZING
    last_frame: int = 0
    last_seen: float = 0.0
    missed: int = 0
    still_frames: int = 0  # consecutive frames in which the quad did not move
    settled_since: float | None = None
    settled_frame: int | None = None
    card_id: str | None = None  # the confirmed card, or the best guess of an unknown
    emitted: set[str] = field(default_factory=set)
    history: deque = field(default_factory=deque)
    result: CardResult | None = None  # the latest frame's result, with its crop when kept

    def summary(self) -> dict:
        last = self.history[-1] if self.history else None
        return {"track_id": self.track_id, "state": self.state, "card_id": self.card_id,
                "guess": last.card_id if last else None, "score": round(last.score, 4) if last else None,
                "frames": len(self.history), "still_frames": self.still_frames,
                "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in self.quad]}


@dataclass
class TrackEvent:
    """A decision (confirmed, unknown_card, low_confidence) or a card leaving (left)."""

    kind: str
    track_id: int
    card_id: str | None
    score: float  # fused top-1 score over the frames that decided
    margin: float
    frames: int  # frames the decision rests on
    frame: int  # frame number at which it was decided
    timestamp: float
    first_seen: float
    settled_since: float | None  # when the card stopped moving, if it had
    settled_frame: int | None
    quad: np.ndarray
    result: CardResult | None = None
    guesses: list[str] = field(default_factory=list)  # top-1 ids of the deciding frames, oldest first
    state: str = STABILIZING  # the track's state after the event; for `left`, the state it ended in


class CardTracker:
    """Turns per-frame card results into per-card decisions; call `update` once per processed frame."""

    def __init__(self, thresholds: Thresholds, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.config.validate()
        self.thresholds = thresholds
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._recent_unknowns: deque = deque(maxlen=32)  # (timestamp, quad, card id)

    @property
    def state(self) -> str:
        """The frame state: no_card, or the state of the most advanced track."""
        if not self.tracks:
            return NO_CARD
        order = {STABILIZING: 0, UNKNOWN_CARD: 1, LOW_CONFIDENCE: 2, CONFIRMED: 3}
        return max((t.state for t in self.tracks), key=lambda s: order[s])

    def update(self, frame: int, timestamp: float, cards: list[CardResult]) -> list[TrackEvent]:
        """Match this frame's cards to tracks, advance each track, and return the events it produced."""
        events: list[TrackEvent] = []
        pairs, new_cards, unseen = self._associate(cards)

        for track, card in pairs:
            events.extend(self._advance(track, card, frame, timestamp))
        for card in new_cards:
            track = self._start(card.quad, frame, timestamp)
            events.extend(self._advance(track, card, frame, timestamp))
        for track in unseen:
            if track not in self.tracks:
                continue  # merged into a track that confirmed the same card in this frame
            track.missed += 1
            if track.missed >= self.config.leave_frames:
                events.append(self._leave(track, frame, timestamp))
        return events

    def reset(self) -> None:
        """Forget every track (the cards in view will be reported again)."""
        self.tracks = []

    def _associate(self, cards: list[CardResult]) -> tuple[list[tuple[Track, CardResult]], list[CardResult], list[Track]]:
        """Pair tracks and cards greedily by quad IoU, highest first, then confirmed tracks by card id.

        The second pass follows a confirmed card that moved too far in one
        frame for its quads to overlap (slid away by hand, or seen only in
        part under a finger in the previous frame).
        """
        candidates = []
        for ti, track in enumerate(self.tracks):
            for ci, card in enumerate(cards):
                iou = quad_iou(track.quad, card.quad)
                if iou >= self.config.match_iou:
                    candidates.append((iou, ti, ci))
        candidates.sort(reverse=True)

        used_tracks: set[int] = set()
        used_cards: set[int] = set()
        pairs = []
        for _, ti, ci in candidates:
            if ti in used_tracks or ci in used_cards:
                continue
            used_tracks.add(ti)
            used_cards.add(ci)
            pairs.append((self.tracks[ti], cards[ci]))

        for ti, track in enumerate(self.tracks):
            if ti in used_tracks or track.state != CONFIRMED:
                continue
            for ci, card in enumerate(cards):
                if ci not in used_cards and card.status == MATCH and card.card_id == track.card_id:
                    used_tracks.add(ti)
                    used_cards.add(ci)
                    pairs.append((track, card))
                    break

        new_cards = [card for ci, card in enumerate(cards) if ci not in used_cards]
        unseen = [track for ti, track in enumerate(self.tracks) if ti not in used_tracks]
        return pairs, new_cards, unseen

    def _start(self, quad: np.ndarray, frame: int, timestamp: float) -> Track:
        track = Track(next(self._ids), np.asarray(quad, np.float32), frame, timestamp, last_frame=frame,
                      last_seen=timestamp, history=deque(maxlen=self.config.unknown_frames))
        self.tracks.append(track)
        _log.debug("track %d started at frame %d", track.track_id, frame)
        return track

    def _advance(self, track: Track, card: CardResult, frame: int, timestamp: float) -> list[TrackEvent]:
        settled = track.last_frame != frame and quad_iou(track.quad, card.quad) >= self.config.settle_iou
        self._observe(track, card, frame, timestamp, settled)

        agreed = self._agreed_card(track)
        if agreed is not None:
            return self._confirm(track, agreed, frame, timestamp)
        if track.state == CONFIRMED and self._replaced(track):
            return self._replace_with_unknown(track, frame, timestamp)
        if track.state == STABILIZING and track.still_frames >= self.config.unknown_frames:
            return self._report_unknown(track, frame, timestamp)
        return []

    def _replaced(self, track: Track) -> bool:
        """Return whether a confirmed track has lain still for `unknown_frames` frames whose top-1 is another card."""
        frames = self.config.unknown_frames
        if track.still_frames < frames or len(track.history) < frames:
            return False
        return all(obs.card_id != track.card_id for obs in list(track.history)[-frames:])

    def _replace_with_unknown(self, track: Track, frame: int, timestamp: float) -> list[TrackEvent]:
        """End the confirmed card's track and report the card now in its place as unknown or low confidence."""
        left = self._leave(track, frame, timestamp)
        _log.debug("track %d: %s replaced by a card that does not confirm at frame %d", track.track_id,
                   track.card_id, frame)

        successor = self._continue_as_new(track, frame)
        return [left, *self._report_unknown(successor, frame, timestamp)]

    def _observe(self, track: Track, card: CardResult, frame: int, timestamp: float, settled: bool) -> None:
        if settled:
            track.still_frames += 1
            if track.settled_since is None:
                track.settled_since = track.last_seen
                track.settled_frame = track.last_frame
        else:
            track.still_frames = 0
            track.settled_since = None
            track.settled_frame = None

        track.quad = np.asarray(card.quad, np.float32)
        track.last_frame = frame
        track.last_seen = timestamp
        track.missed = 0
        track.result = card
        track.history.append(Observation(frame, timestamp, card.card_id, card.status, float(card.score),
                                         float(card.margin), settled))

    def _agreed_card(self, track: Track) -> tuple[str, float, float] | None:
        """Return (card id, fused score, fused margin) when the last K frames confirm one card."""
        k = self.config.confirm_frames
        if len(track.history) < k:
            return None
        window = list(track.history)[-k:]
        card_id = window[0].card_id
        if card_id is None or any(obs.card_id != card_id for obs in window):
            return None
        if self.config.confirm_still_only and not all(obs.settled for obs in window):
            return None

        score = sum(obs.score for obs in window) / k
        margin = sum(obs.margin for obs in window) / k
        if score < self.thresholds.match_score or margin < self.thresholds.match_margin:
            return None
        return card_id, score, margin

    def _confirm(self, track: Track, agreed: tuple[str, float, float], frame: int, timestamp: float) -> list[TrackEvent]:
        card_id, score, margin = agreed
        if track.state == CONFIRMED and track.card_id == card_id:
            return []
        if self._take_over_twin(track, card_id, frame):
            return []

        events: list[TrackEvent] = []
        if track.state == CONFIRMED:
            # Another card now lies where the confirmed one was: the old card has left.
            events.append(self._leave(track, frame, timestamp))
            track = self._continue_as_new(track, frame)

        track.state = CONFIRMED
        track.card_id = card_id
        track.emitted.add(CONFIRMED)
        events.append(self._event(CONFIRMED, track, card_id, score, margin, self.config.confirm_frames, frame, timestamp))
        _log.debug("track %d confirmed %s at frame %d (score %.3f)", track.track_id, card_id, frame, score)
        return events

    def _take_over_twin(self, track: Track, card_id: str, frame: int) -> bool:
        """Merge `track` into a track that confirmed the same card and is not seen in this frame.

        That is the same card, moved faster than quad IoU can follow; it has
        not left, so it is not confirmed again. Two copies of a card in view
        at once are both seen in the frame and stay separate.
        """
        twin = next((t for t in self.tracks if t is not track and t.state == CONFIRMED and t.card_id == card_id
                     and t.last_frame < frame), None)
        if twin is None:
            return False
        self.tracks.remove(twin)
        track.state = CONFIRMED
        track.card_id = card_id
        track.emitted |= twin.emitted
        track.first_seen = twin.first_seen
        _log.debug("track %d continues track %d (%s), which moved out of its quad at frame %d", track.track_id,
                   twin.track_id, card_id, frame)
        return True

    def _continue_as_new(self, old: Track, frame: int) -> Track:
        """Start a track that keeps the old track's last K frames, which show the card now lying there."""
        track = self._start(old.quad, frame, old.history[-self.config.confirm_frames].timestamp)
        for obs in list(old.history)[-self.config.confirm_frames:]:
            track.history.append(obs)
        track.still_frames = old.still_frames
        track.settled_since = old.settled_since
        track.settled_frame = old.settled_frame
        track.result = old.result
        track.last_seen = old.last_seen
        return track

    def _report_unknown(self, track: Track, frame: int, timestamp: float) -> list[TrackEvent]:
        k = self.config.confirm_frames
        window = list(track.history)[-k:]
        guess = window[-1].card_id
        score = sum(obs.score for obs in window) / k
        margin = sum(obs.margin for obs in window) / k
        agree = guess is not None and all(obs.card_id == guess for obs in window)
        near = score >= self.thresholds.match_score - self.config.low_confidence_band
        kind = LOW_CONFIDENCE if agree and near else UNKNOWN_CARD

        track.state = kind
        track.card_id = guess
        if self._reported_here_recently(track, guess, timestamp):
            _log.debug("track %d: %s at frame %d not reported again (same spot and guess as a recent one)",
                       track.track_id, kind, frame)
            return []
        track.emitted.add(kind)
        self._recent_unknowns.append((timestamp, track.quad.copy(), guess))
        frames = len(track.history)
        return [self._event(kind, track, guess, score, margin, frames, frame, timestamp)]

    def _reported_here_recently(self, track: Track, guess: str | None, timestamp: float) -> bool:
        for when, quad, card_id in self._recent_unknowns:
            if (timestamp - when < self.config.unknown_repeat_s and card_id == guess
                    and quad_iou(quad, track.quad) >= 0.5):
                return True
        return False

    def _leave(self, track: Track, frame: int, timestamp: float) -> TrackEvent:
        self.tracks.remove(track)
        last = track.history[-1] if track.history else None
        _log.debug("track %d (%s %s) left at frame %d", track.track_id, track.state, track.card_id, frame)
        return self._event(LEFT, track, track.card_id, last.score if last else 0.0, last.margin if last else 0.0,
                           len(track.history), frame, timestamp)

    def _event(self, kind: str, track: Track, card_id: str | None, score: float, margin: float, frames: int,
               frame: int, timestamp: float) -> TrackEvent:
        guesses = [obs.card_id for obs in list(track.history)[-frames:]]
        return TrackEvent(kind, track.track_id, card_id, float(score), float(margin), frames, frame, timestamp,
                          track.first_seen, track.settled_since, track.settled_frame, track.quad.copy(),
                          track.result, guesses, track.state)
