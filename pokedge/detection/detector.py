"""Classical card detector: several candidate strategies, one quad score.

No single OpenCV recipe finds cards on every background, so each strategy
proposes quads and one scoring function ranks them all:

- `edges`: Canny edges at a few thresholds, closed, then contours.
- `background`: distance of every pixel from the colour of the frame border,
  thresholded with Otsu; finds cards on plain or dark backgrounds where the
  card edge is faint.
- `adaptive`: adaptive threshold of the grey frame; finds the dark card
  outline inside a sleeve or binder pocket.
- `full_frame`: the whole image, for tight crops and flatbed scans that have
  no background to find a contour in.

Overlapping candidates are merged by non-maximum suppression; for each card
the runner-up quads (for example the sleeve around the card) are kept as
alternatives so the recognizer can pick the one that matches best.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from pokedge.detection import geometry
from pokedge.detection.types import Detection

_log = logging.getLogger(__name__)

WORK_SIDE = 960  # longest side of the working copy, px
MIN_AREA_FRACTION = 0.004
MAX_CANDIDATES_PER_CARD = 3


@dataclass
class Candidate:
    quad: np.ndarray  # ordered, in working-copy pixels
    strategy: str
    score: float = 0.0
    alternatives: list["Candidate"] = field(default_factory=list)


@dataclass
class DetectorConfig:
    max_cards: int = 12
    min_score: float = 0.35
    nms_iou: float = 0.35
    full_frame: bool = True


class CardDetector:
    """Finds card quads in BGR frames."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Return the cards in `frame`, row by row from the top-left; alternatives ride along."""
        scale = min(1.0, WORK_SIDE / max(frame.shape[:2]))
        work = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(work, cv2.COLOR_BGR2GRAY)
        gradient = _gradient_magnitude(grey)

        candidates = self._propose(work, grey)
        for candidate in candidates:
            candidate.score = score_quad(candidate.quad, gradient, work.shape)
        kept = _suppress(candidates, self.config)

        if self.config.full_frame and _frame_is_card_shaped(work.shape) and not _covers_frame(kept, work.shape):
            full = _full_frame_candidate(work.shape)
            full.score = 0.5 * max(score_quad(full.quad, gradient, work.shape), 0.6)
            kept.append(full)

        kept = [c for c in kept if c.score >= self.config.min_score]
        kept.sort(key=lambda c: c.score, reverse=True)
        kept = _reading_order(kept[: self.config.max_cards])
        return [self._to_detection(c, scale) for c in kept]

    def _propose(self, work: np.ndarray, grey: np.ndarray) -> list[Candidate]:
        min_area = MIN_AREA_FRACTION * grey.shape[0] * grey.shape[1]
        candidates: list[Candidate] = []
        for strategy, mask in _masks(work, grey):
            for quad in _quads_from_mask(mask, min_area):
                candidates.append(Candidate(quad, strategy))
        return candidates

    def _to_detection(self, candidate: Candidate, scale: float) -> Detection:
        detection = Detection(
            quad=(candidate.quad / scale).astype(np.float32),
            score=round(float(candidate.score), 4),
            strategy=candidate.strategy,
            full_frame=candidate.strategy == "full_frame",
        )
        detection.alternatives = [(alt.quad / scale).astype(np.float32) for alt in candidate.alternatives]
        return detection


def _masks(work: np.ndarray, grey: np.ndarray):
    """Yield (strategy, binary mask) pairs; each mask marks card edges or card area."""
    smooth = cv2.GaussianBlur(grey, (5, 5), 0)
    median = float(np.median(smooth))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    for low, high in ((0.5 * median, 1.2 * median), (30, 90), (60, 180)):
        edges = cv2.Canny(smooth, max(5, int(low)), max(20, int(high)))
        yield "edges", cv2.dilate(edges, kernel, iterations=2)

    distance = _background_distance(work)
    _, fg = cv2.threshold(distance, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel, iterations=2)
    yield "background", cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel, iterations=3)

    block = max(15, (min(grey.shape) // 20) | 1)
    adaptive = cv2.adaptiveThreshold(smooth, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 7)
    yield "adaptive", cv2.morphologyEx(adaptive, cv2.MORPH_CLOSE, kernel, iterations=2)


def _background_distance(work: np.ndarray) -> np.ndarray:
    """Per-pixel Lab distance from the median colour of the frame border, scaled to uint8."""
    lab = cv2.cvtColor(cv2.GaussianBlur(work, (5, 5), 0), cv2.COLOR_BGR2LAB).astype(np.float32)
    h, w = lab.shape[:2]
    band = max(2, min(h, w) // 30)
    border = np.concatenate([
        lab[:band].reshape(-1, 3), lab[-band:].reshape(-1, 3),
        lab[:, :band].reshape(-1, 3), lab[:, -band:].reshape(-1, 3),
    ])
    reference = np.median(border, axis=0)
    distance = np.linalg.norm(lab - reference, axis=2)
    return cv2.normalize(distance, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _quads_from_mask(mask: np.ndarray, min_area: float) -> list[np.ndarray]:
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads = []
    for contour in contours:
        if cv2.contourArea(contour) < min_area:
            continue
        quad = _fit_quad(contour)
        if quad is not None:
            quads.append(quad)
    return quads


def _fit_quad(contour: np.ndarray) -> np.ndarray | None:
    """Fit four corners to a contour: polygon approximation of its hull, else its minimum-area rectangle."""
    hull = cv2.convexHull(contour)
    perimeter = cv2.arcLength(hull, True)
    for epsilon in (0.02, 0.035, 0.05, 0.07):
        approx = cv2.approxPolyDP(hull, epsilon * perimeter, True)
        if len(approx) == 4:
            return geometry.order_corners(approx.reshape(4, 2))
        if len(approx) < 4:
            break

    hull_area = cv2.contourArea(hull)
    box = cv2.boxPoints(cv2.minAreaRect(hull))
    if hull_area < 0.85 * geometry.quad_area(box):
        return None  # not rectangular enough to be a card
    return geometry.order_corners(box)


def score_quad(quad: np.ndarray, gradient: np.ndarray, shape: tuple[int, ...]) -> float:
    """Score in [0, 1] of how card-like a quad is: aspect, right angles, edge support and size."""
    if not geometry.is_convex(quad):
        return 0.0
    frame_area = shape[0] * shape[1]
    area = geometry.quad_area(quad)
    fraction = area / frame_area
    if fraction < MIN_AREA_FRACTION:
        return 0.0

    aspect = np.exp(-((geometry.aspect_error(quad) / 0.16) ** 2))
    angles = np.exp(-((np.abs(geometry.corner_angles(quad) - 90.0).max() / 22.0) ** 2))
    edges = _edge_support(quad, gradient)
    size = min(1.0, fraction / 0.01)
    return float(aspect * angles * (0.3 + 0.7 * edges) * size)


def _edge_support(quad: np.ndarray, gradient: np.ndarray, samples: int = 24) -> float:
    """Share of points along the quad's sides that sit on a strong gradient."""
    h, w = gradient.shape
    hits = 0
    total = 0
    for i in range(4):
        start, end = quad[i], quad[(i + 1) % 4]
        for t in np.linspace(0.1, 0.9, samples):
            x, y = start + t * (end - start)
            xi, yi = int(round(x)), int(round(y))
            if not (1 <= xi < w - 1 and 1 <= yi < h - 1):
                continue
            total += 1
            if gradient[yi - 1 : yi + 2, xi - 1 : xi + 2].max() > 40:
                hits += 1
    return hits / total if total else 0.0


def _gradient_magnitude(grey: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) / 4.0


def _suppress(candidates: list[Candidate], config: DetectorConfig) -> list[Candidate]:
    """Non-maximum suppression; overlapping losers become the winner's alternatives."""
    ordered = sorted((c for c in candidates if c.score > 0), key=lambda c: c.score, reverse=True)
    kept: list[Candidate] = []
    for candidate in ordered:
        winner = next((k for k in kept if _same_card(k.quad, candidate.quad, config.nms_iou)), None)
        if winner is None:
            kept.append(candidate)
            continue
        distinct = all(geometry.quad_iou(alt.quad, candidate.quad) < 0.9 for alt in [winner, *winner.alternatives])
        if distinct and len(winner.alternatives) < MAX_CANDIDATES_PER_CARD - 1 and candidate.score > 0.5 * winner.score:
            winner.alternatives.append(candidate)
    return kept


def _same_card(a: np.ndarray, b: np.ndarray, iou: float) -> bool:
    if geometry.quad_iou(a, b) >= iou:
        return True
    # A quad nested in another (a card in its sleeve, or a card's inner frame) is the same card.
    small, large = (a, b) if geometry.quad_area(a) < geometry.quad_area(b) else (b, a)
    return geometry.contains(large, small, margin=4.0) and geometry.quad_area(small) > 0.45 * geometry.quad_area(large)


def _frame_is_card_shaped(shape: tuple[int, ...]) -> bool:
    h, w = shape[:2]
    return h > w and abs(w / h - 63 / 88) < 0.12


def _covers_frame(kept: list[Candidate], shape: tuple[int, ...]) -> bool:
    frame_area = shape[0] * shape[1]
    return any(c.score > 0.5 and geometry.quad_area(c.quad) > 0.5 * frame_area for c in kept)


def _full_frame_candidate(shape: tuple[int, ...]) -> Candidate:
    h, w = shape[:2]
    inset = 0.005 * max(h, w)
    quad = np.array([[inset, inset], [w - 1 - inset, inset], [w - 1 - inset, h - 1 - inset], [inset, h - 1 - inset]],
                    dtype=np.float32)
    return Candidate(quad, "full_frame")


def _reading_order(candidates: list[Candidate]) -> list[Candidate]:
    """Sort cards into rows (top to bottom), then left to right within a row."""
    if len(candidates) < 2:
        return candidates
    centres = np.array([c.quad.mean(axis=0) for c in candidates])
    heights = np.array([np.ptp(c.quad[:, 1]) for c in candidates])
    row_gap = 0.5 * float(np.median(heights))
    order = np.argsort(centres[:, 1])
    rows: list[list[int]] = []
    for i in order:
        if rows and centres[i, 1] - centres[rows[-1][0], 1] < row_gap:
            rows[-1].append(int(i))
        else:
            rows.append([int(i)])
    return [candidates[i] for row in rows for i in sorted(row, key=lambda j: centres[j, 0])]
