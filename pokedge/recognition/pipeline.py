"""The per-frame recognition pipeline: detect, warp, embed, search, decide."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from pokedge.backends.base import Backend
from pokedge.detection import CardDetector, Detection
from pokedge.detection import geometry
from pokedge.gallery.index import GalleryIndex, Hit
from pokedge.gallery.store import Gallery
from pokedge.preprocess import prepare_batch
from pokedge.recognition import blur_check
from pokedge.recognition.decision import MATCH, NOT_A_CARD, UNKNOWN, Decision, Thresholds, decide
from pokedge.recognition.printed_number import NumberCheck, PrintedNumber

_log = logging.getLogger(__name__)

STAGES = ("detect", "preprocess", "embed", "search", "number")  # "number" only with a NumberCheck


@dataclass
class CardResult:
    """One recognized (or unknown) card in a frame."""

    quad: np.ndarray  # float32 [4, 2], TL TR BR BL as the card reads upright, frame pixels
    status: str  # "match" or "unknown"
    score: float  # cosine similarity of the top-1 card
    margin: float  # top-1 score minus the best card with another name
    hits: list[Hit]
    same_art: list[str]
    detection_score: float
    strategy: str
    upside_down: bool
    blur: float
    glare: float
    crop: np.ndarray | None = None  # the warped BGR card, kept only when asked
    printed_number: str | None = None  # the collector number read from the card, as "2/102"
    blur_matched: bool = False  # matched against the blurred references (pokedge.recognition.blur_check)
    embedding: np.ndarray | None = field(default=None, repr=False)  # the chosen crop's embedding

    @property
    def card_id(self) -> str | None:
        return self.hits[0].card_id if self.hits else None


@dataclass
class FrameResult:
    cards: list[CardResult]
    timings_ms: dict[str, float] = field(default_factory=dict)
    rejected: int = 0  # quads that matched no card front well enough to report


@dataclass
class _Crop:
    detection_index: int
    quad: np.ndarray
    upside_down: bool
    image: np.ndarray
    embedding: np.ndarray | None = None  # set when the crop is embedded


class Recognizer:
    """Recognizes every card in a frame with one backend call per frame, two when a card needs a second look."""

    def __init__(self, backend: Backend, gallery: Gallery, thresholds: Thresholds,
                 detector: CardDetector | None = None, index: GalleryIndex | None = None,
                 top_k: int = 5, max_quads_per_card: int = 3, keep_crops: bool = False,
                 number_check: NumberCheck | None = None, strip_extensions: bool = True):
        self.backend = backend
        self.gallery = gallery
        self.thresholds = thresholds
        self.detector = detector or CardDetector()
        self.index = index or GalleryIndex(gallery)
        self.top_k = top_k
        self.max_quads_per_card = max_quads_per_card
        self.keep_crops = keep_crops
        self.number_check = number_check
        self.strip_extensions = strip_extensions

    def recognize(self, frame: np.ndarray) -> FrameResult:
        """Find, embed and identify every card in a BGR frame.

        The main quad of every detection is embedded first, in both
        orientations and in one backend call. Only the detections that this
        leaves without a match get a second call for their alternative
        quads, so a frame of clearly seen cards costs two crops a card.
        """
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        detections = self.detector.detect(frame)
        add_stage_ms(timings, "detect", clock)

        crops = self.main_crops(frame, detections)
        hits = self._embed_and_search(crops, timings)

        unsure = self.unsure(detections, crops, hits)
        if unsure:
            second = self.alternative_crops(frame, detections, unsure)
            crops += second
            hits += self._embed_and_search(second, timings)

        cards, rejected = self.choose(detections, crops, hits, frame, timings)
        return FrameResult(cards, timings, rejected)

    def _embed_and_search(self, crops: list["_Crop"], timings: dict[str, float]) -> list[list[Hit]]:
        """Preprocess, embed and search crops in one backend call, adding each stage's time to `timings`."""
        clock = time.perf_counter()
        batch = prepare_batch([c.image for c in crops], self.backend.contract)
        add_stage_ms(timings, "preprocess", clock)
        return self.search_crops(crops, batch, timings)

    def search_crops(self, crops: list["_Crop"], batch: np.ndarray, timings: dict[str, float]) -> list[list[Hit]]:
        """Embed the prepared batch of `crops`, keep each crop's embedding and search the index.

        The embed and search times are added to `timings`.
        """
        clock = time.perf_counter()
        embeddings = self.backend.embed(batch) if len(batch) else np.zeros((0, self.gallery.dim), np.float32)
        clock = add_stage_ms(timings, "embed", clock)
        keep_embeddings(crops, embeddings)

        hits = self.index.search(embeddings, max(self.top_k, 5)) if len(embeddings) else []
        add_stage_ms(timings, "search", clock)
        return list(hits)

    def unsure(self, detections: list[Detection], crops: list["_Crop"], hits: list[list[Hit]]) -> list[int]:
        """Return the indices of detections whose main quad gave no match and that have other quads to try.

        Other quads are the detector's alternatives and, when the main quad's
        decision is unknown (not below the card floor) and `strip_extensions`
        is on, the card quads that it could be a strip of
        (`geometry.strip_extensions`).
        """
        if self.max_quads_per_card < 2:
            return []
        best = self._best(crops, hits)
        unsure = []
        for i, detection in enumerate(detections):
            status = decide(best[i][1], self.gallery, self.thresholds).status if i in best else NOT_A_CARD
            if status == MATCH:
                continue
            if detection.alternatives or (status == UNKNOWN and self.strip_extensions):
                unsure.append(i)
        return unsure

    def identify_crops(self, cards_bgr: list[np.ndarray]) -> list[Decision]:
        """Identify already-warped upright card images (no detection, one orientation)."""
        batch = prepare_batch(cards_bgr, self.backend.contract)
        embeddings = self.backend.embed(batch)
        return [decide(h, self.gallery, self.thresholds) for h in self.index.search(embeddings, max(self.top_k, 5))]

    def main_crops(self, frame: np.ndarray, detections: list[Detection]) -> list["_Crop"]:
        """Warp the main quad of every detection in both orientations (0 and 180 degrees)."""
        return self._crops(frame, [(i, d.quad) for i, d in enumerate(detections)])

    def alternative_crops(self, frame: np.ndarray, detections: list[Detection], indices: list[int]) -> list["_Crop"]:
        """Warp the alternative quads and strip extensions of the detections at `indices` in both orientations."""
        quads = []
        for i in indices:
            quads += [(i, quad) for quad in detections[i].alternatives[: self.max_quads_per_card - 1]]
            if self.strip_extensions:
                quads += [(i, quad) for quad in geometry.strip_extensions(detections[i].quad, frame.shape)]
        return self._crops(frame, quads)

    @staticmethod
    def _crops(frame: np.ndarray, quads: list[tuple[int, np.ndarray]]) -> list["_Crop"]:
        crops: list[_Crop] = []
        for i, quad in quads:
            upright = geometry.warp_card(frame, quad)
            crops.append(_Crop(i, quad, False, upright))
            crops.append(_Crop(i, geometry.rotate_quad_180(quad), True, np.ascontiguousarray(upright[::-1, ::-1])))
        return crops

    @staticmethod
    def _best(crops: list["_Crop"], hits: list[list[Hit]]) -> dict[int, tuple["_Crop", list[Hit]]]:
        """Return, per detection index, the crop and hits with the highest top-1 score."""
        best: dict[int, tuple[_Crop, list[Hit]]] = {}
        for crop, crop_hits in zip(crops, hits):
            top = crop_hits[0].score if crop_hits else -1.0
            current = best.get(crop.detection_index)
            if current is None or top > (current[1][0].score if current[1] else -1.0):
                best[crop.detection_index] = (crop, crop_hits)
        return best

    def choose(self, detections: list[Detection], crops: list["_Crop"], hits: list[list[Hit]],
               frame: np.ndarray | None = None, timings: dict[str, float] | None = None) -> tuple[list[CardResult], int]:
        """Keep, per detection, the quad and orientation whose top-1 score is highest, and decide on it.

        Given the frame, a matched card also gets the printed-number check
        (when the recognizer has one), timed as the "number" stage.
        """
        best = self._best(crops, hits)
        if self.number_check is not None and frame is not None and timings is not None:
            timings.setdefault("number", 0.0)

        cards: list[CardResult] = []
        rejected = 0
        for i, detection in enumerate(detections):
            if i not in best:
                continue
            crop, crop_hits = best[i]
            decision = decide(crop_hits, self.gallery, self.thresholds)
            if decision.status == NOT_A_CARD:
                rejected += 1
                continue
            if crop.embedding is not None:
                decision = blur_check.check(decision, crop.embedding, self.gallery, self.thresholds)
            decision, printed = self._check_number(decision, frame, crop, timings)
            cards.append(self._card_result(detection, crop, decision, printed))
        return _drop_overlaps(cards), rejected

    def _check_number(self, decision: Decision, frame: np.ndarray | None, crop: "_Crop",
                      timings: dict[str, float] | None) -> tuple[Decision, PrintedNumber | None]:
        if self.number_check is None or frame is None or decision.status != MATCH:
            return decision, None
        clock = time.perf_counter()
        checked = self.number_check.apply(decision, frame, crop.quad)
        if timings is not None:
            add_stage_ms(timings, "number", clock)
        return checked

    def _card_result(self, detection: Detection, crop: _Crop, decision: Decision,
                     printed: PrintedNumber | None = None) -> CardResult:
        top = decision.hits[0]
        return CardResult(
            quad=crop.quad,
            status=decision.status,
            score=top.score,
            margin=decision.margin,
            hits=decision.hits[: self.top_k],
            same_art=decision.same_art,
            detection_score=detection.score,
            strategy=detection.strategy,
            upside_down=crop.upside_down,
            blur=round(geometry.blur_score(crop.image), 1),
            glare=round(geometry.glare_fraction(crop.image), 4),
            crop=crop.image if self.keep_crops else None,
            printed_number=str(printed) if printed else None,
            blur_matched=decision.blur_matched and decision.status == MATCH,
            embedding=crop.embedding,
        )


def keep_embeddings(crops: list[_Crop], embeddings: np.ndarray) -> None:
    """Store each crop's embedding on it, for the blurred-reference check of the chosen crop."""
    for crop, embedding in zip(crops, embeddings):
        crop.embedding = embedding


def _drop_overlaps(cards: list[CardResult]) -> list[CardResult]:
    """Keep one result per physical card when two detections ended on the same quad."""
    kept: list[CardResult] = []
    for card in sorted(cards, key=lambda c: (c.status == MATCH, c.score), reverse=True):
        if all(geometry.quad_iou(card.quad, k.quad) < 0.5 for k in kept):
            kept.append(card)
    order = {id(c): n for n, c in enumerate(cards)}
    return sorted(kept, key=lambda c: order[id(c)])


def add_stage_ms(timings: dict[str, float], stage: str, start: float) -> float:
    """Add the ms since `start` to `timings[stage]` and return the current time."""
    now = time.perf_counter()
    timings[stage] = round(timings.get(stage, 0.0) + (now - start) * 1000.0, 2)
    return now
