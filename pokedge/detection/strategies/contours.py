"""Quads from the outlines of regions in binary masks.

Each mask marks card edges or card area in a different way, because no
single mask works on every background:

- `edges`: the Canny edge map, closed by one dilation. Works wherever the
  card outline is a continuous edge.
- `background`: colour distance from the frame border, thresholded with
  Otsu. Finds a card on a plain or dark surface even when its edge is soft.
- `border`: the yellow card border in HSV. Finds yellow-bordered cards on
  busy backgrounds, and the card rather than its sleeve.
- `adaptive`: a local-mean threshold of the grey image, which marks the dark
  outline of a card inside a sleeve or binder pocket.

An outline with one side on the frame border is also proposed completed to
the whole card (`complete_at_border`), for a card that runs off the frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from pokedge.detection import geometry
from pokedge.detection.candidate import Candidate
from pokedge.detection.frame import WorkFrame
from pokedge.detection.scoring import MIN_AREA_FRACTION
from pokedge.detection.types import CARD_ASPECT

# Outlines completed past the frame border come only from these masks. In a clean
# synthetic scene the adaptive mask outlined a patch of wood grain at the border,
# and its completion scored as a card.
_COMPLETED_STRATEGIES = ("edges", "border")
_BORDER_PX = 3.0  # a corner this close to a frame edge lies on it
_MIN_EXTENSION = 1.08  # a completion must reach this much further than the visible outline
_MAX_CONTOURS_PER_MASK = 24  # only the largest contours of each mask are fitted, because the rest are clutter
_KERNEL = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))

# Yellow card border in OpenCV HSV (hue 0-180): printed yellow sits near hue
# 25-32, and the saturation floor keeps out beige and skin.
_YELLOW_LOW = (16, 90, 110)
_YELLOW_HIGH = (38, 255, 255)


def propose_from_contours(work: WorkFrame) -> list[Candidate]:
    """Fit quads to the outlines in every mask."""
    min_area = MIN_AREA_FRACTION * work.area
    candidates: list[Candidate] = []
    for strategy, mask, mode in _masks(work):
        for quad in quads_from_mask(mask, min_area, mode):
            candidates.append(Candidate(quad, strategy))
            if strategy in _COMPLETED_STRATEGIES:
                candidates += [Candidate(q, strategy, completed=True) for q in complete_at_border(quad, work.shape)]
    return candidates


def complete_at_border(quad: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Extend an outline that the frame border cuts off to the whole card, from the 63:88 aspect.

    When one side of `quad` lies on a frame border, the card may go on beyond
    it: the opposite side is the card's true edge, and the two sides next to
    it are extended until the quad has the card's aspect. Both ways round are
    tried (short or long side found); only quads longer than the visible part
    are returned.
    """
    height, width = shape[:2]
    completed = []
    for i in range(4):
        start, end = quad[i], quad[(i + 1) % 4]
        if not _on_same_border(start, end, width, height):
            continue
        near_end, near_start = quad[(i + 2) % 4], quad[(i + 3) % 4]  # the found side, opposite the border
        known = float(np.linalg.norm(near_end - near_start))
        towards_start = start - near_start
        towards_end = end - near_end
        visible = max(np.linalg.norm(towards_start), np.linalg.norm(towards_end))
        for ratio in (1.0 / CARD_ASPECT, CARD_ASPECT):
            length = known * ratio
            if length <= _MIN_EXTENSION * visible:
                continue
            new_start = near_start + towards_start / max(np.linalg.norm(towards_start), 1e-6) * length
            new_end = near_end + towards_end / max(np.linalg.norm(towards_end), 1e-6) * length
            corners = np.float32([new_start, new_end, near_end, near_start])
            completed.append(geometry.order_corners(corners).astype(np.float32))
    return completed


def _on_same_border(a: np.ndarray, b: np.ndarray, width: int, height: int) -> bool:
    """True when both points lie on the same edge of a width x height frame."""
    limits = ((0, 0.0), (0, width - 1.0), (1, 0.0), (1, height - 1.0))
    return any(abs(a[axis] - edge) <= _BORDER_PX and abs(b[axis] - edge) <= _BORDER_PX for axis, edge in limits)


def _masks(work: WorkFrame):
    """Yield (strategy, binary mask, contour retrieval mode) triples."""
    yield "edges", cv2.dilate(work.edges, _KERNEL), cv2.RETR_LIST

    yield "background", _background_mask(work), cv2.RETR_EXTERNAL

    yellow = cv2.inRange(work.hsv, _YELLOW_LOW, _YELLOW_HIGH)
    yield "border", cv2.morphologyEx(yellow, cv2.MORPH_CLOSE, _KERNEL, iterations=2), cv2.RETR_CCOMP

    block = max(15, (min(work.shape) // 16) | 1)
    adaptive = cv2.adaptiveThreshold(work.smooth, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 6)
    yield "adaptive", cv2.morphologyEx(adaptive, cv2.MORPH_CLOSE, _KERNEL), cv2.RETR_LIST


def _background_mask(work: WorkFrame) -> np.ndarray:
    """Pixels whose Lab colour is far from the median colour of the frame border (Otsu threshold)."""
    lab = cv2.cvtColor(cv2.GaussianBlur(work.bgr, (5, 5), 0), cv2.COLOR_BGR2LAB)
    height, width = work.shape
    band = max(2, min(height, width) // 40)
    border = np.concatenate([
        lab[:band].reshape(-1, 3), lab[-band:].reshape(-1, 3),
        lab[:, :band].reshape(-1, 3), lab[:, -band:].reshape(-1, 3),
    ])
    reference = np.median(border, axis=0)

    difference = cv2.absdiff(lab, tuple(float(v) for v in reference) + (0.0,))
    distance = cv2.transform(difference, np.ones((1, 3), np.float32))
    distance = cv2.normalize(distance, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, mask = cv2.threshold(distance, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL, iterations=2)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _KERNEL, iterations=3)


def quads_from_mask(mask: np.ndarray, min_area: float, mode: int = cv2.RETR_LIST) -> list[np.ndarray]:
    """Return an ordered quad for each large, roughly quadrilateral contour in a binary mask."""
    contours, _ = cv2.findContours(mask, mode, cv2.CHAIN_APPROX_SIMPLE)
    areas = [cv2.contourArea(c) for c in contours]
    order = np.argsort(areas)[::-1][:_MAX_CONTOURS_PER_MASK]
    quads = []
    for i in order:
        if areas[i] < min_area:
            break
        quad = fit_quad(contours[i])
        if quad is not None:
            quads.append(quad)
    return quads


def fit_quad(contour: np.ndarray) -> np.ndarray | None:
    """Fit four corners to a contour: polygon approximation of its hull, else its minimum-area rectangle."""
    hull = cv2.convexHull(contour)
    perimeter = cv2.arcLength(hull, True)
    for epsilon in (0.02, 0.035, 0.05, 0.07):
        approx = cv2.approxPolyDP(hull, epsilon * perimeter, True)
        if len(approx) == 4:
            return geometry.order_corners(approx.reshape(4, 2))
        if len(approx) < 4:
            break

    # Not a clean quadrilateral: accept the bounding rectangle only when the hull nearly fills it.
    hull_area = cv2.contourArea(hull)
    box = cv2.boxPoints(cv2.minAreaRect(hull))
    if hull_area < 0.85 * geometry.quad_area(box):
        return None
    return geometry.order_corners(box)
