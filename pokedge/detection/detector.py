"""Classical card detector: several strategies propose quads, one score ranks them all.

No single OpenCV recipe finds cards on every background, so every strategy
in `pokedge.detection.strategies` proposes quads on a shared downscaled
working copy (`WorkFrame`), and `scoring.score_quads` ranks them together:

- `lines`: straight edge lines grouped into quads, or three sides completed
  from the card aspect (fingers over an edge, card cut off by the frame).
- `edges`, `background`, `border`, `adaptive`: outlines in binary masks.
- `full_frame`: the whole image, as an alternative for tight crops and
  flatbed scans.

Overlapping and nested candidates are merged by `selection.suppress`; the
runner-ups of each card (for example the sleeve around it) are kept as
alternatives so the recognizer can pick the one that matches best. Kept
quads are refined onto the nearest edges and mapped back to frame pixels.
Outlines of the `background` mask are refined before they are scored
instead (see `CardDetector.rank`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pokedge.detection import geometry, selection
from pokedge.detection.candidate import Candidate
from pokedge.detection.frame import WORK_SIDE, WorkFrame
from pokedge.detection.refine import refine_quads
from pokedge.detection.scoring import score_quads, texture_factor
from pokedge.detection.strategies import propose_from_contours, propose_from_lines, propose_full_frame
from pokedge.detection.strategies.full_frame import frame_is_card_shaped
from pokedge.detection.types import Detection

_log = logging.getLogger(__name__)

MAX_RANKED = 48  # best-scored candidates that enter suppression, since the rest cannot win
COMPLETION_PENALTY = 0.9  # a side placed from the aspect is a guess, so a found fourth side wins ties
FULL_FRAME_SCORE = 0.45  # score of the whole frame as a card when it encloses printed detail
TIGHT_CROP_MIN_COVER = 0.6  # share of a card-shaped frame that a quad covers in a tight crop or scan
FULL_FRAME_MIN_COVER = 0.25  # a detection this large (share of the frame) takes the full frame as an alternative
# Strategies whose quads are refined before scoring. The background mask is a blurred colour distance,
# thresholded and then opened and closed, so its outline lies a few pixels off a soft card edge, where the
# score finds no edge. The other quads lie on Canny edges already.
REFINED_BEFORE_SCORING = ("background",)


@dataclass
class DetectorConfig:
    max_cards: int = 12
    min_score: float = 0.4  # detections scoring less are dropped
    alternative_floor: float = 0.2  # runner-up quads scoring less are not kept as alternatives
    max_alternatives: int = 2  # the recognizer tries the main quad and this many alternatives
    full_frame: bool = True  # propose the whole frame when it has the card's shape
    work_side: int = WORK_SIDE  # px, longest side of the working copy


class CardDetector:
    """Finds card quads in BGR frames."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Return the cards in `frame`, row by row from the top-left, each with its alternative quads."""
        work = WorkFrame.from_frame(frame, self.config.work_side)

        candidates = self._ranked_candidates(work)
        kept = selection.suppress(candidates, self.config.alternative_floor, self.config.max_alternatives)
        kept = [c for c in kept if c.score >= self._min_score(c, work)][: self.config.max_cards]
        if self.config.full_frame:
            kept = self._with_full_frame(kept, work)

        for candidate in kept:
            _refine([item for item in [candidate, *candidate.alternatives]
                     if item.strategy not in REFINED_BEFORE_SCORING], work)
        kept = selection.reading_order(kept)
        return [self._to_detection(c, frame, work.scale) for c in kept]

    def _ranked_candidates(self, work: WorkFrame) -> list[Candidate]:
        """Propose candidates and return them ranked by `rank`."""
        return self.rank(propose_from_lines(work) + propose_from_contours(work), work)

    def rank(self, candidates: list[Candidate], work: WorkFrame) -> list[Candidate]:
        """Score and deduplicate candidates, and return the best first, without page outlines.

        Quads of the `REFINED_BEFORE_SCORING` strategies are refined onto
        their edges first, because a quad a few pixels off a soft card edge
        scores far below the same quad on the edge. The background outline
        of a motion-blurred card in a synthetic scene scored 0.34 where the
        mask put it and 0.69 on the edge.

        Duplicates are removed after ranking, so the best-scored quad of each
        cluster survives. Strategies propose near copies of one card a few
        pixels apart whose scores differ widely: two copies of one
        motion-blurred card in a synthetic scene scored 0.34 and 0.69.
        """
        _refine([c for c in candidates if c.strategy in REFINED_BEFORE_SCORING], work)
        scores = score_quads([c.quad for c in candidates], work)
        for candidate, score in zip(candidates, scores):
            candidate.score = float(score) * (COMPLETION_PENALTY if candidate.completed else 1.0)

        ranked = [c for c in candidates if c.score >= self.config.alternative_floor]
        ranked.sort(key=lambda c: c.score, reverse=True)
        ranked = selection.remove_duplicates(ranked, float(np.hypot(*work.shape)))
        return selection.drop_groups(ranked[:MAX_RANKED])

    def _min_score(self, candidate: Candidate, work: WorkFrame) -> float:
        """Return the score a detection needs, which is lower for a quad that fills a card-shaped frame.

        In a tight crop or scan, the card's sides lie on or next to the frame
        border, where their edges are cut off and score little.
        """
        fills_frame = geometry.quad_area(candidate.quad) >= TIGHT_CROP_MIN_COVER * work.area
        if fills_frame and frame_is_card_shaped(work.shape):
            return self.config.alternative_floor
        return self.config.min_score

    def _with_full_frame(self, kept: list[Candidate], work: WorkFrame) -> list[Candidate]:
        """Add the whole frame as an alternative of a card that covers much of a card-shaped frame.

        In a tight crop or a scan the card outline is the frame border, where
        no edge can be found, so the largest quad found is usually the art box
        or the inner border. The full frame is reported on its own only when
        nothing else was kept. A 4:3 camera frame is not card-shaped
        (`frame_is_card_shaped`), so an empty desk in a camera frame never
        becomes a card this way.
        """
        proposals = propose_full_frame(work)
        if not proposals:
            return kept
        full = proposals[0]
        if not kept:
            return self._full_frame_alone(full, work)
        largest = max(kept, key=lambda c: geometry.quad_area(c.quad))
        if geometry.quad_area(largest.quad) < FULL_FRAME_MIN_COVER * work.area:
            return kept
        if any(geometry.quad_iou(full.quad, q.quad) >= selection.DISTINCT_IOU for q in [largest, *largest.alternatives]):
            return kept

        full.score = FULL_FRAME_SCORE * texture_factor(full.quad, work)
        largest.alternatives = largest.alternatives[: self.config.max_alternatives - 1] + [full]
        return kept

    def _full_frame_alone(self, full: Candidate, work: WorkFrame) -> list[Candidate]:
        """Return the whole card-shaped frame as the only card when it encloses printed detail.

        A blurred tight crop leaves no edge to find, and its card fills most
        of the frame (at least 90% in the synthetic tight crops), so the frame
        outline is used as the card's.
        NOTE: a card-shaped image of a textured surface without a card is
        reported too, and only the recognizer's card floor rejects it.
        """
        full.score = FULL_FRAME_SCORE * texture_factor(full.quad, work)
        return [full] if full.score >= self.config.min_score else []

    def _to_detection(self, candidate: Candidate, frame: np.ndarray, scale: float) -> Detection:
        quad = (candidate.quad / scale).astype(np.float32)
        card = geometry.warp_card(frame, quad)
        return Detection(
            quad=quad,
            score=round(float(candidate.score), 4),
            strategy=candidate.strategy,
            blur=round(geometry.blur_score(card), 1),
            glare=round(geometry.glare_fraction(card), 4),
            full_frame=candidate.strategy == "full_frame",
            completed=candidate.completed,
            alternatives=[(alt.quad / scale).astype(np.float32) for alt in candidate.alternatives],
        )


def _refine(candidates: list[Candidate], work: WorkFrame) -> None:
    """Refine the quads of `candidates`, except whole-frame quads, in place."""
    movable = [c for c in candidates if c.strategy != "full_frame"]
    if not movable:
        return
    refined = refine_quads(np.stack([c.quad for c in movable]), work)
    for candidate, quad in zip(movable, refined):
        candidate.quad = geometry.order_corners(quad)
