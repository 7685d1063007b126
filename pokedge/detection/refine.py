"""Corner refinement: move each side of a quad onto the strongest nearby edge.

Contour-based quads put corners inside the card's rounded corners and
sides a pixel or two off the edge. Each side is refitted as a straight line
through the strongest gradient found along its normal, and the corners
become the intersections of the refitted sides.
"""

from __future__ import annotations

import numpy as np

from pokedge.detection import geometry
from pokedge.detection.frame import WorkFrame

_SAMPLES = 24
_SEARCH_SHARE = 0.02  # search distance along the normal, as a share of the side length
_SEARCH_MIN_PX = 2
_SEARCH_MAX_PX = 6
_MIN_EDGE_SHARE = 0.5  # edge points need this share of the frame's edge threshold
_MIN_POINTS = 8  # fewer edge points than this leave the side as it was
_MAX_CORNER_SHIFT_SHARE = 0.06  # refined corners may move at most this share of the quad's shorter side


def refine_quad(quad: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Return the quad with each side refitted to its edge, or the input quad when refitting fails."""
    quad = np.asarray(quad, dtype=np.float32)
    lines = [_refit_side(quad[i], quad[(i + 1) % 4], work) for i in range(4)]

    corners = []
    for i in range(4):
        point = geometry.intersect(lines[i - 1], lines[i])
        if point is None:
            return quad
        corners.append(point)
    refined = np.asarray(corners, dtype=np.float32)

    sides = np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
    shift = np.linalg.norm(refined - quad, axis=1).max()
    if shift > _MAX_CORNER_SHIFT_SHARE * sides.min() or not geometry.is_convex(refined):
        return quad
    return refined


def _refit_side(start: np.ndarray, end: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Homogeneous line fitted to the strongest aligned gradient near the side from `start` to `end`."""
    gx, gy = work.gradients
    height, width = work.shape
    direction = end - start
    length = float(np.linalg.norm(direction))
    if length < 1:
        return geometry.line_through(start, end)
    direction = direction / length
    normal = np.array([-direction[1], direction[0]], dtype=np.float32)

    reach = int(np.clip(round(_SEARCH_SHARE * length), _SEARCH_MIN_PX, _SEARCH_MAX_PX))
    offsets = np.arange(-reach, reach + 1, dtype=np.float32)
    t = np.linspace(0.1, 0.9, _SAMPLES, dtype=np.float32)
    base = start[None, :] + t[:, None] * (end - start)[None, :]
    points = base[:, None, :] + offsets[None, :, None] * normal[None, None, :]
    xs = np.rint(points[..., 0]).astype(np.int32)
    ys = np.rint(points[..., 1]).astype(np.int32)
    inside = (xs >= 1) & (xs < width - 1) & (ys >= 1) & (ys < height - 1)
    xs, ys = np.clip(xs, 0, width - 1), np.clip(ys, 0, height - 1)

    response = np.abs(gx[ys, xs] * normal[0] + gy[ys, xs] * normal[1]) * inside
    best = response.argmax(axis=1)
    strong = response[np.arange(_SAMPLES), best] >= _MIN_EDGE_SHARE * work.edge_threshold
    if strong.sum() < _MIN_POINTS:
        return geometry.line_through(start, end)

    found = points[np.arange(_SAMPLES), best][strong].astype(np.float64)
    return _fit_line(found, geometry.line_through(start, end))


def _fit_line(points: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Total least squares line through points, refitted once without the worst outliers."""
    for _ in range(2):
        centre, normal = _principal_axis(points)
        residual = np.abs((points - centre) @ normal)
        inliers = residual <= max(1.0, 2.0 * float(np.median(residual)))
        if inliers.sum() < _MIN_POINTS:
            return fallback
        points = points[inliers]

    centre, normal = _principal_axis(points)
    return np.array([normal[0], normal[1], -float(normal @ centre)])


def _principal_axis(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and unit normal of the best-fitting line through points."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre)
    return centre, vt[1]
