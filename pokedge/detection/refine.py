"""Corner refinement: move each side of a quad onto the strongest nearby edge.

Contour-based quads put corners inside the card's rounded corners and
sides a pixel or two off the edge. Each side is refitted as a straight line
through the strongest gradient found along its normal, and the corners
become the intersections of the refitted sides.

The detector refines some candidates before it scores them, so
`refine_quads` works on many quads at once with array operations.
"""

from __future__ import annotations

import numpy as np

from pokedge.detection.frame import WorkFrame

_SAMPLES = 24
_SEARCH_SHARE = 0.02  # search distance along the normal, as a share of the side length
_SEARCH_MIN_PX = 2
_SEARCH_MAX_PX = 6
_MIN_EDGE_SHARE = 0.5  # edge points need this share of the frame's edge threshold
_MIN_POINTS = 8  # fewer edge points than this leave the side as it was
_MAX_CORNER_SHIFT_SHARE = 0.06  # refined corners may move at most this share of the quad's shorter side
_FIT_ROUNDS = 2  # line fits that drop outliers before the final fit


def refine_quad(quad: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Return the quad with each side refitted to its edge, or the input quad when refitting fails."""
    return refine_quads(np.asarray(quad, dtype=np.float32)[None], work)[0]


def refine_quads(quads: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Refine quads [n, 4, 2] in working-copy pixels, keeping the corner order.

    A quad whose refitted corners move more than `_MAX_CORNER_SHIFT_SHARE`
    of its shorter side, or are no longer convex, is returned unchanged.
    """
    quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    if len(quads) == 0:
        return quads.copy()

    lines = _refit_sides(quads, work)
    corners = np.cross(np.roll(lines, 1, axis=1), lines)  # corner k joins side k-1 and side k
    parallel = np.abs(corners[..., 2]) < 1e-9
    scale = np.where(parallel, 1.0, corners[..., 2])
    refined = (corners[..., :2] / scale[..., None]).astype(np.float32)

    sides = np.linalg.norm(np.roll(quads, -1, axis=1) - quads, axis=2)
    shift = np.linalg.norm(refined - quads, axis=2).max(axis=1)
    usable = ~parallel.any(axis=1) & (shift <= _MAX_CORNER_SHIFT_SHARE * sides.min(axis=1)) & _convex(refined)
    return np.where(usable[:, None, None], refined, quads)


def _refit_sides(quads: np.ndarray, work: WorkFrame) -> np.ndarray:
    """Return homogeneous lines [n, 4, 3] fitted to the strongest aligned gradient near each side.

    A side with fewer than `_MIN_POINTS` strong edge points keeps its own line.
    """
    gx, gy = work.gradients
    height, width = work.shape
    starts = quads.astype(np.float64)
    ends = np.roll(starts, -1, axis=1)
    length = np.linalg.norm(ends - starts, axis=2)
    direction = (ends - starts) / np.maximum(length, 1e-6)[..., None]
    normal = np.stack([-direction[..., 1], direction[..., 0]], axis=-1)

    reach = np.clip(np.rint(_SEARCH_SHARE * length), _SEARCH_MIN_PX, _SEARCH_MAX_PX)
    offsets = np.arange(-_SEARCH_MAX_PX, _SEARCH_MAX_PX + 1, dtype=np.float64)
    t = np.linspace(0.1, 0.9, _SAMPLES)
    # Shape [quad, side, sample, offset, xy].
    base = starts[:, :, None, :] + t[None, None, :, None] * (ends - starts)[:, :, None, :]
    points = base[:, :, :, None, :] + offsets[None, None, None, :, None] * normal[:, :, None, None, :]
    xs = np.rint(points[..., 0]).astype(np.int32)
    ys = np.rint(points[..., 1]).astype(np.int32)
    searched = (xs >= 1) & (xs < width - 1) & (ys >= 1) & (ys < height - 1)
    searched &= np.abs(offsets)[None, None, None, :] <= reach[:, :, None, None]
    xs, ys = np.clip(xs, 0, width - 1), np.clip(ys, 0, height - 1)

    response = np.abs(gx[ys, xs] * normal[:, :, None, None, 0] + gy[ys, xs] * normal[:, :, None, None, 1])
    response = np.where(searched, response, 0.0)
    best = response.argmax(axis=3)
    strong = np.take_along_axis(response, best[..., None], axis=3)[..., 0] >= _MIN_EDGE_SHARE * work.edge_threshold
    found = np.take_along_axis(points, best[..., None, None], axis=3)[:, :, :, 0, :]

    fitted, fitted_ok = _fit_lines(found, strong)
    own = np.cross(np.concatenate([starts, np.ones(starts.shape[:2] + (1,))], axis=2),
                   np.concatenate([ends, np.ones(ends.shape[:2] + (1,))], axis=2))
    return np.where(fitted_ok[..., None], fitted, own)


def _fit_lines(points: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit total least squares lines through the points [..., m, 2] where `mask` is set, refitted without outliers.

    Returns homogeneous lines [..., 3] and a mask of the fits that kept at
    least `_MIN_POINTS` points in every round.
    """
    mask = mask.astype(bool)
    ok = mask.sum(axis=-1) >= _MIN_POINTS
    for _ in range(_FIT_ROUNDS):
        centre, normal = _principal_axes(points, mask)
        residual = np.abs(np.einsum("...mk,...k->...m", points - centre[..., None, :], normal))
        median = _masked_median(residual, mask)
        mask = mask & (residual <= np.maximum(1.0, 2.0 * median)[..., None])
        ok &= mask.sum(axis=-1) >= _MIN_POINTS

    centre, normal = _principal_axes(points, mask)
    lines = np.concatenate([normal, -np.einsum("...k,...k->...", normal, centre)[..., None]], axis=-1)
    return lines, ok


def _principal_axes(points: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return centroids [..., 2] and unit normals [..., 2] of the best-fitting lines through the masked points [..., m, 2]."""
    w = mask.astype(np.float64)
    total = np.maximum(w.sum(axis=-1), 1e-9)
    centre = np.einsum("...m,...mk->...k", w, points) / total[..., None]
    d = points - centre[..., None, :]
    sxx = np.einsum("...m,...m->...", w, d[..., 0] * d[..., 0])
    syy = np.einsum("...m,...m->...", w, d[..., 1] * d[..., 1])
    sxy = np.einsum("...m,...m->...", w, d[..., 0] * d[..., 1])
    angle = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)  # direction of the largest spread, the line itself
    return centre, np.stack([-np.sin(angle), np.cos(angle)], axis=-1)


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the median of `values` [..., m] over the entries where `mask` is set, and 0 where no entry is set."""
    count = mask.sum(axis=-1)
    last = values.shape[-1] - 1
    ordered = np.sort(np.where(mask, values, np.inf), axis=-1)
    low = np.take_along_axis(ordered, np.clip((count - 1) // 2, 0, last)[..., None], axis=-1)[..., 0]
    high = np.take_along_axis(ordered, np.clip(count // 2, 0, last)[..., None], axis=-1)[..., 0]
    return np.where(count > 0, 0.5 * (low + high), 0.0)


def _convex(quads: np.ndarray) -> np.ndarray:
    """Return True per quad [n, 4, 2] whose corners turn the same way at every corner."""
    edges = np.roll(quads, -1, axis=1) - quads
    following = np.roll(edges, -1, axis=1)
    turns = edges[..., 0] * following[..., 1] - edges[..., 1] * following[..., 0]
    return np.all(turns > 0, axis=1) | np.all(turns < 0, axis=1)
