"""One score for every candidate quad, whichever strategy proposed it.

A quad scores high when its four sides lie on image edges that run along
them, its rectified aspect is close to 63:88, its corners are near right
angles, it is not tiny and it encloses printed detail rather than a blank
surface. The score is in [0, 1] and comparable across strategies, so the
candidates of all strategies are ranked together.
"""

from __future__ import annotations

import cv2
import numpy as np

from pokedge.detection import geometry
from pokedge.detection.frame import WorkFrame

MIN_AREA_FRACTION = 0.006  # smaller quads (under 0.6% of the frame) are not scored
FULL_SIZE_FRACTION = 0.02  # quads at least this share of the frame get no size penalty

_SAMPLES_PER_SIDE = 28
_NORMAL_OFFSETS = np.arange(-2, 3, dtype=np.float32)  # px searched on both sides of a side, for fit error
_CORNER_MARGIN = 0.07  # share of each side left out at both ends: card corners are rounded
_ASPECT_TOLERANCE = 0.16  # relative aspect error at which the aspect factor falls to 1/e
# Corner angles: a 35 degree tilt bends corners by up to about 25 degrees, so
# deviations up to _ANGLE_FREE_DEG cost nothing; the factor then falls to 1/e
# over another _ANGLE_TOLERANCE_DEG.
_ANGLE_FREE_DEG = 20.0
_ANGLE_TOLERANCE_DEG = 20.0
_TEXTURE_FULL = 14.0  # grey-level standard deviation inside a quad that counts as printed detail
_TEXTURE_PATCH = (21, 29)  # px, size of the patch warped out of the quad to measure detail


def side_support(quads: np.ndarray, work: WorkFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return, per quad and side, the edge support in [0, 1] and the share of the side inside the frame.

    Support is the mean over sample points of the gradient component along
    the side's normal (the best within 2 px), divided by the frame's edge
    threshold and capped at 1. Samples outside the frame are left out, so
    a side cut off by the frame edge has no support and no penalty either;
    its in-frame share tells the caller.
    """
    quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    count = len(quads)
    if count == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)

    gx, gy = work.gradients
    height, width = work.shape
    starts = quads
    ends = np.roll(quads, -1, axis=1)
    direction = ends - starts
    length = np.linalg.norm(direction, axis=2, keepdims=True)
    direction = direction / np.maximum(length, 1e-6)
    normal = np.stack([-direction[..., 1], direction[..., 0]], axis=-1)

    t = np.linspace(_CORNER_MARGIN, 1 - _CORNER_MARGIN, _SAMPLES_PER_SIDE, dtype=np.float32)
    # Shape [quad, side, sample, offset, xy].
    points = starts[:, :, None, :] + t[None, None, :, None] * (ends - starts)[:, :, None, :]
    points = points[:, :, :, None, :] + _NORMAL_OFFSETS[None, None, None, :, None] * normal[:, :, None, None, :]
    xs = np.rint(points[..., 0]).astype(np.int32)
    ys = np.rint(points[..., 1]).astype(np.int32)
    inside = (xs >= 1) & (xs < width - 1) & (ys >= 1) & (ys < height - 1)
    xs = np.clip(xs, 0, width - 1)
    ys = np.clip(ys, 0, height - 1)

    along_normal = np.abs(gx[ys, xs] * normal[:, :, None, None, 0] + gy[ys, xs] * normal[:, :, None, None, 1])
    along_normal = np.where(inside, along_normal, 0.0)
    best = along_normal.max(axis=3) / work.edge_threshold
    sample_inside = inside[:, :, :, _NORMAL_OFFSETS.size // 2]

    in_frame = sample_inside.mean(axis=2)
    hits = np.minimum(best, 1.0) * sample_inside
    support = hits.sum(axis=2) / np.maximum(sample_inside.sum(axis=2), 1)
    return support.astype(np.float32), in_frame.astype(np.float32)


def combine_sides(support: np.ndarray, in_frame: np.ndarray) -> np.ndarray:
    """Combine four side supports into one value per quad, tolerating one hidden side.

    The weakest side weighs less than the other three, so a side covered by
    fingers or cut off by the frame lowers the score without ruling the quad
    out. A side mostly outside the frame counts as half supported: the card
    may go on beyond the frame, but nothing confirms it.
    """
    effective = np.where(in_frame < 0.3, 0.5, support)
    ordered = np.sort(effective, axis=1)
    return 0.12 * ordered[:, 0] + 0.88 * ordered[:, 1:].mean(axis=1)


def shape_factor(quad: np.ndarray, work: WorkFrame) -> float:
    """Product of the aspect, right-angle and size factors of one ordered quad, each in [0, 1]."""
    if not geometry.is_convex(quad):
        return 0.0
    fraction = geometry.quad_area(quad) / work.area
    if fraction < MIN_AREA_FRACTION:
        return 0.0

    aspect = np.exp(-((geometry.card_aspect_error(quad, work.shape) / _ASPECT_TOLERANCE) ** 2))
    worst_angle = float(np.abs(geometry.corner_angles(quad) - 90.0).max())
    angles = np.exp(-((max(0.0, worst_angle - _ANGLE_FREE_DEG) / _ANGLE_TOLERANCE_DEG) ** 2))
    size = min(1.0, fraction / FULL_SIZE_FRACTION) ** 0.5
    return float(aspect * angles * size)


def texture_factor(quad: np.ndarray, work: WorkFrame) -> float:
    """How much printed detail the quad encloses, in [0, 1]; a blank surface or a plain box scores low."""
    width, height = _TEXTURE_PATCH
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(np.asarray(quad, dtype=np.float32), target)
    patch = cv2.warpPerspective(work.grey, matrix, (width, height), flags=cv2.INTER_AREA)
    spread = float(patch.std())
    return min(1.0, spread / _TEXTURE_FULL) ** 0.5


def score_quads(quads: list[np.ndarray], work: WorkFrame) -> np.ndarray:
    """Score ordered quads in working-copy pixels; returns float32 [n] in [0, 1]."""
    if not quads:
        return np.zeros(0, np.float32)

    shapes = np.array([shape_factor(q, work) for q in quads], dtype=np.float32)
    scores = np.zeros(len(quads), np.float32)
    live = np.flatnonzero(shapes > 0)
    if live.size == 0:
        return scores

    support, in_frame = side_support(np.stack([quads[i] for i in live]), work)
    edges = combine_sides(support, in_frame)
    for j, i in enumerate(live):
        scores[i] = shapes[i] * edges[j] * texture_factor(quads[i], work)
    return scores
