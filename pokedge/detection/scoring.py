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
from pokedge.detection.types import CARD_ASPECT

MIN_AREA_FRACTION = 0.006  # smaller quads (under 0.6% of the frame) are not scored
FULL_SIZE_FRACTION = 0.02  # quads at least this share of the frame get no size penalty

_SAMPLES_PER_SIDE = 28
_NORMAL_OFFSETS = np.arange(-2, 3, dtype=np.float32)  # px searched on both sides of a side, for fit error
_CLUTTER_OFFSETS = np.array([-7, 7], dtype=np.float32)  # px, where the background gradient next to a side is read
_CORNER_MARGIN = 0.07  # share of each side left out at both ends: card corners are rounded
_ASPECT_TOLERANCE = 0.16  # relative aspect error at which the aspect factor falls to 1/e
# Corner angles: a 35 degree tilt bends corners by up to about 25 degrees, so
# deviations up to _ANGLE_FREE_DEG cost nothing. The factor then falls to 1/e
# over another _ANGLE_TOLERANCE_DEG.
_ANGLE_FREE_DEG = 20.0
_ANGLE_TOLERANCE_DEG = 20.0
# Window beyond each corner where a side must not go on, as shares of the side length.
_CONTINUATION_STEPS = np.linspace(0.025, 0.09, 6, dtype=np.float32)
_CONTINUATION_OFFSETS = np.arange(-1, 2, dtype=np.float32)
_TEXTURE_FULL = 14.0  # grey-level standard deviation inside a quad that counts as printed detail
_TEXTURE_PATCH = (21, 29)  # px, size of the patch warped out of the quad to measure detail


def side_support(quads: np.ndarray, work: WorkFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return, per quad and side, the edge support in [0, 1] and the share of the side inside the frame.

    At each sample point the gradient component along the side's normal is
    taken at its best within 2 px of the side, minus the smaller of the same
    component 7 px to either side (so texture and noise, strong everywhere,
    do not count as an edge, but the parallel edge of a sleeve on one side
    does not hide the card edge), and divided by the frame's edge threshold,
    capped at 1. Samples outside the frame are left out, so a side cut off
    by the frame edge has no support and no penalty either; its in-frame
    share tells the caller.
    """
    quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    if len(quads) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)

    gx, gy = work.gradients
    height, width = work.shape
    starts = quads
    ends = np.roll(quads, -1, axis=1)
    direction = ends - starts
    direction = direction / np.maximum(np.linalg.norm(direction, axis=2, keepdims=True), 1e-6)
    normal = np.stack([-direction[..., 1], direction[..., 0]], axis=-1)

    t = np.linspace(_CORNER_MARGIN, 1 - _CORNER_MARGIN, _SAMPLES_PER_SIDE, dtype=np.float32)
    offsets = np.concatenate([_NORMAL_OFFSETS, _CLUTTER_OFFSETS])
    # Shape [quad, side, sample, offset, xy].
    points = starts[:, :, None, :] + t[None, None, :, None] * (ends - starts)[:, :, None, :]
    points = points[:, :, :, None, :] + offsets[None, None, None, :, None] * normal[:, :, None, None, :]
    xs = np.rint(points[..., 0]).astype(np.int32)
    ys = np.rint(points[..., 1]).astype(np.int32)
    inside = (xs >= 1) & (xs < width - 1) & (ys >= 1) & (ys < height - 1)
    xs = np.clip(xs, 0, width - 1)
    ys = np.clip(ys, 0, height - 1)

    along_normal = np.abs(gx[ys, xs] * normal[:, :, None, None, 0] + gy[ys, xs] * normal[:, :, None, None, 1])
    along_normal = np.where(inside, along_normal, 0.0)
    near = along_normal[..., : _NORMAL_OFFSETS.size].max(axis=3)
    clutter = along_normal[..., _NORMAL_OFFSETS.size:].min(axis=3)
    best = np.maximum(near - clutter, 0.0) / work.edge_threshold
    sample_inside = inside[:, :, :, _NORMAL_OFFSETS.size // 2]

    in_frame = sample_inside.mean(axis=2)
    hits = np.minimum(best, 1.0) * sample_inside
    support = hits.sum(axis=2) / np.maximum(sample_inside.sum(axis=2), 1)
    return support.astype(np.float32), in_frame.astype(np.float32)


def continuation(quads: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Return, per quad, how strongly one side runs on past its corners while the other stops, in [0, 1].

    A card's edges stop at its (rounded) corners. A quad cut out of a
    larger rectangle, such as the top half of a card bounded by the art
    box, has two corners where a side goes straight on and the other ends
    (a T junction). Where both sides go on (a + junction) the quad is a
    pocket of a binder page, a valid stand-in for its card, so only the
    difference between the two sides counts. Each side is sampled just
    beyond both ends, in a short window so that the gap to the next card in
    a binder is all that is seen; the quad takes the mean of its two
    strongest corners.
    """
    quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    starts = quads
    ends = np.roll(quads, -1, axis=1)
    steps = _CONTINUATION_STEPS[None, None, :, None] * (ends - starts)[:, :, None, :]
    forward = _aligned_support(ends[:, :, None, :] + steps, ends - starts, work, _CONTINUATION_OFFSETS)
    backward = _aligned_support(starts[:, :, None, :] - steps, ends - starts, work, _CONTINUATION_OFFSETS)

    # Corner k ends side k-1 and starts side k.
    corners = np.abs(np.roll(forward, 1, axis=1) - backward)
    return np.sort(corners, axis=1)[:, 2:].mean(axis=1)


def _aligned_support(points: np.ndarray, sides: np.ndarray, work: WorkFrame, offsets: np.ndarray) -> np.ndarray:
    """Mean gradient along each side's normal at points [n, 4, m, 2], over the frame's edge threshold, capped at 1.

    Points outside the frame count as 0.
    """
    gx, gy = work.gradients
    height, width = work.shape
    direction = sides / np.maximum(np.linalg.norm(sides, axis=2, keepdims=True), 1e-6)
    normal = np.stack([-direction[..., 1], direction[..., 0]], axis=-1)
    shifted = points[:, :, :, None, :] + offsets[None, None, None, :, None] * normal[:, :, None, None, :]
    xs = np.rint(shifted[..., 0]).astype(np.int32)
    ys = np.rint(shifted[..., 1]).astype(np.int32)
    inside = (xs >= 1) & (xs < width - 1) & (ys >= 1) & (ys < height - 1)
    xs = np.clip(xs, 0, width - 1)
    ys = np.clip(ys, 0, height - 1)
    along = np.abs(gx[ys, xs] * normal[:, :, None, None, 0] + gy[ys, xs] * normal[:, :, None, None, 1])
    best = np.where(inside, along, 0.0).max(axis=3) / work.edge_threshold
    return np.minimum(best, 1.0).mean(axis=2)


def continuation_factor(value: np.ndarray) -> np.ndarray:
    """Score factor in [0.5, 1] that falls as sides run on past the corners.

    The floor is 0.5, not lower: in a binder page a quad made of a pocket
    seam and three card edges has T junctions too and is a usable card quad.
    """
    return 1.0 - 0.5 * np.clip((value - 0.3) / 0.5, 0.0, 1.0)


def combine_sides(support: np.ndarray, in_frame: np.ndarray) -> np.ndarray:
    """Combine four side supports into one value per quad, tolerating one hidden side.

    The weakest side weighs less than the other three, so a side covered by
    fingers or cut off by the frame lowers the score without ruling the quad
    out. A side mostly outside the frame counts as half supported: the card
    may go on beyond the frame, but nothing confirms it. A quad with three
    or more such sides gets 0.
    """
    outside = in_frame < 0.3
    effective = np.where(outside, 0.5, support)
    ordered = np.sort(effective, axis=1)
    combined = 0.12 * ordered[:, 0] + 0.88 * ordered[:, 1:].mean(axis=1)
    # Three sides on or beyond the frame border make the frame outline, not a card.
    return np.where(outside.sum(axis=1) >= 3, 0.0, combined)


def shape_factors(quads: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Product of the aspect, right-angle and size factors of ordered quads [n, 4, 2], each in [0, 1].

    Non-convex quads and quads under `MIN_AREA_FRACTION` of the frame get 0.
    """
    quads = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)
    edges = np.roll(quads, -1, axis=1) - quads
    turns = edges[:, :, 0] * np.roll(edges, -1, axis=1)[:, :, 1] - edges[:, :, 1] * np.roll(edges, -1, axis=1)[:, :, 0]
    convex = np.all(turns > 0, axis=1) | np.all(turns < 0, axis=1)
    area = 0.5 * np.abs(np.sum(quads[:, :, 0] * np.roll(quads[:, :, 1], -1, axis=1)
                               - np.roll(quads[:, :, 0], -1, axis=1) * quads[:, :, 1], axis=1))
    fraction = area / work.area

    lengths = np.linalg.norm(edges, axis=2)
    plain = (lengths[:, 0] + lengths[:, 2]) / np.maximum(lengths[:, 1] + lengths[:, 3], 1e-6)
    rectified = rectified_aspects(quads, work.shape)
    error = np.minimum(np.abs(plain - CARD_ASPECT), np.abs(rectified - CARD_ASPECT)) / CARD_ASPECT
    aspect = np.exp(-((error / _ASPECT_TOLERANCE) ** 2))

    incoming = -np.roll(edges, 1, axis=1)
    cos = np.sum(incoming * edges, axis=2) / np.maximum(np.roll(lengths, 1, axis=1) * lengths, 1e-6)
    worst_angle = np.abs(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) - 90.0).max(axis=1)
    angles = np.exp(-((np.maximum(0.0, worst_angle - _ANGLE_FREE_DEG) / _ANGLE_TOLERANCE_DEG) ** 2))

    size = np.minimum(1.0, fraction / FULL_SIZE_FRACTION) ** 0.5
    valid = convex & (fraction >= MIN_AREA_FRACTION)
    return np.where(valid, aspect * angles * size, 0.0).astype(np.float32)


def rectified_aspects(quads: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Vectorized `geometry.rectified_aspect` over ordered quads [n, 4, 2]."""
    height, width = frame_shape[:2]
    points = np.asarray(quads, dtype=np.float64) - np.array([width / 2.0, height / 2.0])
    points = np.concatenate([points, np.ones(points.shape[:2] + (1,))], axis=2)
    tl, tr, br, bl = points[:, 0], points[:, 1], points[:, 2], points[:, 3]

    diagonal = np.cross(tl, br)
    k2 = np.sum(diagonal * bl, axis=1) / _nonzero(np.sum(np.cross(tr, br) * bl, axis=1))
    k3 = np.sum(diagonal * tr, axis=1) / _nonzero(np.sum(np.cross(bl, br) * tr, axis=1))
    n2 = k2[:, None] * tr - tl
    n3 = k3[:, None] * bl - tl

    longest = float(max(width, height))
    denominator = n2[:, 2] * n3[:, 2]
    solved = -(n2[:, 0] * n3[:, 0] + n2[:, 1] * n3[:, 1]) / _nonzero(denominator)
    plausible = (np.abs(denominator) > 1e-12) & (solved > (0.3 * longest) ** 2) & (solved < (5.0 * longest) ** 2)
    focal_sq = np.where(plausible, solved, (geometry.ASSUMED_FOCAL_SHARE * longest) ** 2)

    width_sq = (n2[:, 0] ** 2 + n2[:, 1] ** 2) / focal_sq + n2[:, 2] ** 2
    height_sq = (n3[:, 0] ** 2 + n3[:, 1] ** 2) / focal_sq + n3[:, 2] ** 2
    return np.sqrt(width_sq / np.maximum(height_sq, 1e-12))


def _nonzero(values: np.ndarray) -> np.ndarray:
    return np.where(np.abs(values) < 1e-12, 1e-12, values)


def texture_factor(quad: np.ndarray, work: WorkFrame) -> float:
    """Return how much printed detail the quad encloses, in [0, 1]. A blank surface or a plain box scores low."""
    width, height = _TEXTURE_PATCH
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(np.asarray(quad, dtype=np.float32), target)
    patch = cv2.warpPerspective(work.grey, matrix, (width, height), flags=cv2.INTER_AREA)
    spread = float(patch.std())
    return min(1.0, spread / _TEXTURE_FULL) ** 0.5


def score_quads(quads: list[np.ndarray], work: WorkFrame) -> np.ndarray:
    """Score ordered quads in working-copy pixels, returning float32 [n] in [0, 1]."""
    if not quads:
        return np.zeros(0, np.float32)

    stacked = np.stack(quads).astype(np.float32)
    scores = shape_factors(stacked, work)
    live = np.flatnonzero(scores > 0)
    if live.size == 0:
        return scores

    support, in_frame = side_support(stacked[live], work)
    scores[live] *= combine_sides(support, in_frame)
    scores[live] *= continuation_factor(continuation(stacked[live], work))
    for i in live:
        if scores[i] > 0.1:
            scores[i] *= texture_factor(stacked[i], work)
    return scores
