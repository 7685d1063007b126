"""Quads from straight edge lines: two roughly parallel pairs meeting at roughly right angles.

Segments come from the Canny edge map: each edge contour is simplified to a
polyline and its long pieces are kept, which costs far less than a line
segment detector at the same resolution. Collinear segments are merged into
lines; each line keeps a histogram of where along it edge pixels were seen.

A quad is any choice of two near-parallel lines crossed by two more
near-parallel lines. Its sides need not be fully visible, only covered
well enough by their lines' segments, so a card whose corner or edge is
hidden by fingers, glare or a sleeve seam still yields its quad. When only
three sides are found (a card cut off by the frame, or held by its lower
edge) the fourth is placed from the 63:88 card aspect and the candidate is
marked `completed`.
"""

from __future__ import annotations

import cv2
import numpy as np

from pokedge.detection import geometry
from pokedge.detection.candidate import Candidate
from pokedge.detection.frame import WorkFrame
from pokedge.detection.scoring import MIN_AREA_FRACTION
from pokedge.detection.types import CARD_ASPECT

_MIN_SEGMENT_SHARE = 0.03  # shortest segment kept, as a share of the working copy's longest side
_MAX_SEGMENTS = 220
_MAX_LINES = 36
_POLYLINE_EPSILON = 1.5  # px, tolerance of the polyline fitted to each edge contour
_MERGE_ANGLE_DEG = 2.5  # segments this close in angle and
_MERGE_OFFSET = 2.5  # this close in px to a line belong to it
_BIN_PX = 3.0  # resolution of each line's coverage histogram
_PARALLEL_DEG = 30.0  # opposite card sides under a 35 degree tilt stay within this angle
_MIN_CROSS_SIN = 0.72  # adjacent sides meet at 46-134 degrees
_MIN_SIDE_SHARE = 0.04  # shortest quad side, as a share of the working copy's shorter side
_CORNER_MARGIN = 0.08  # share of each side left out at both ends when measuring coverage
_MAX_QUADS = 60
_MAX_COMPLETIONS = 12
_MIN_COVERAGE = 0.3  # a full quad needs three sides at least this well covered
_MIN_COMPLETION_COVERAGE = 0.45  # each of the three sides of a completed quad needs this


class _Lines:
    """Merged lines: unit direction, normal offset and a coverage histogram along each."""

    def __init__(self, directions: np.ndarray, offsets: np.ndarray, coverage: np.ndarray, origin: float):
        self.directions = directions  # [n, 2] unit vectors, angle in [0, pi)
        self.normals = np.stack([-directions[:, 1], directions[:, 0]], axis=1)
        self.offsets = offsets  # [n], normal . p for points p on the line
        self.cumulative = np.concatenate([np.zeros((len(coverage), 1)), np.cumsum(coverage, axis=1)], axis=1)
        self.origin = origin  # position along a line of histogram bin 0, px

    def __len__(self) -> int:
        return len(self.offsets)

    def homogeneous(self) -> np.ndarray:
        """[n, 3] lines as (a, b, c) with a*x + b*y + c = 0."""
        return np.concatenate([self.normals, -self.offsets[:, None]], axis=1)

    def covered(self, index: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Share of the span between points `start` and `end` on line `index` that has edge segments."""
        direction = self.directions[index]
        t0 = np.einsum("ij,ij->i", start, direction)
        t1 = np.einsum("ij,ij->i", end, direction)
        low = np.minimum(t0, t1)
        high = np.maximum(t0, t1)
        margin = _CORNER_MARGIN * (high - low)
        bins = self.cumulative.shape[1] - 1
        b0 = np.clip(((low + margin - self.origin) / _BIN_PX).astype(np.int64), 0, bins)
        b1 = np.clip(((high - margin - self.origin) / _BIN_PX).astype(np.int64), 0, bins)
        span = np.maximum(b1 - b0, 1)
        return (self.cumulative[index, b1] - self.cumulative[index, b0]) / span


def propose_from_lines(work: WorkFrame) -> list[Candidate]:
    """Return quads built from four lines, and quads completed from three."""
    segments = _segments(work)
    if len(segments) < 3:
        return []
    lines = _merge_segments(segments, work)
    pairs = _parallel_pairs(lines, work)
    if len(pairs) == 0:
        return []

    candidates = [Candidate(q, "lines") for q in _four_line_quads(lines, pairs, work)]
    candidates += [Candidate(q, "lines", completed=True) for q in _three_line_quads(lines, pairs, work)]
    return candidates


def _segments(work: WorkFrame) -> np.ndarray:
    """Straight pieces of the edge contours as [n, 4] (x0, y0, x1, y1), longest first."""
    min_length = _MIN_SEGMENT_SHARE * max(work.shape)
    contours, _ = cv2.findContours(work.edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    pieces = []
    for contour in contours:
        if len(contour) < min_length:
            continue
        polyline = cv2.approxPolyDP(contour, _POLYLINE_EPSILON, True).reshape(-1, 2).astype(np.float32)
        pieces.append(np.concatenate([polyline, np.roll(polyline, -1, axis=0)], axis=1))
    if not pieces:
        return np.zeros((0, 4), np.float32)

    segments = np.concatenate(pieces)
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    keep = np.argsort(lengths)[::-1]
    keep = keep[lengths[keep] >= min_length][:_MAX_SEGMENTS]
    return segments[keep]


def _merge_segments(segments: np.ndarray, work: WorkFrame) -> _Lines:
    """Merge collinear segments greedily, longest first, into at most `_MAX_LINES` lines."""
    deltas = segments[:, 2:] - segments[:, :2]
    angles = np.mod(np.arctan2(deltas[:, 1], deltas[:, 0]), np.pi)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    normals = np.stack([-directions[:, 1], directions[:, 0]], axis=1)
    midpoints = (segments[:, :2] + segments[:, 2:]) / 2
    offsets = np.einsum("ij,ij->i", normals, midpoints)

    owner = np.full(len(segments), -1)
    line_angles: list[float] = []
    line_ids: list[int] = []
    merge_angle = np.radians(_MERGE_ANGLE_DEG)
    for i in range(len(segments)):
        if line_ids:
            seeds = np.asarray(line_ids)
            gap = np.abs(angles[i] - np.asarray(line_angles))
            gap = np.minimum(gap, np.pi - gap)
            # Distance of both endpoints of segment i from each seed line.
            ends = segments[i].reshape(2, 2)
            distance = np.abs(ends @ normals[seeds].T - offsets[seeds]).max(axis=0)
            match = np.flatnonzero((gap < merge_angle) & (distance < _MERGE_OFFSET))
            if match.size:
                owner[i] = match[0]
                continue
        owner[i] = len(line_ids)
        line_ids.append(i)
        line_angles.append(float(angles[i]))

    diagonal = float(np.hypot(*work.shape))
    bins = int(np.ceil(2 * diagonal / _BIN_PX)) + 1
    coverage = np.zeros((len(line_ids), bins), np.float32)
    seeds = np.asarray(line_ids)
    for i in range(len(segments)):
        line = owner[i]
        direction = directions[seeds[line]]
        t = np.sort(segments[i].reshape(2, 2) @ direction)
        b0, b1 = np.clip(((t + diagonal) / _BIN_PX).astype(np.int64), 0, bins - 1)
        coverage[line, b0:b1 + 1] = 1.0

    strongest = np.argsort(coverage.sum(axis=1))[::-1][:_MAX_LINES]
    chosen = seeds[strongest]
    return _Lines(directions[chosen], offsets[chosen], coverage[strongest], -diagonal)


def _parallel_pairs(lines: _Lines, work: WorkFrame) -> np.ndarray:
    """Index pairs [m, 2] of near-parallel lines far enough apart to be opposite card sides."""
    count = len(lines)
    first, second = np.triu_indices(count, k=1)
    cos = np.abs(np.einsum("ij,ij->i", lines.directions[first], lines.directions[second]))
    parallel = cos >= np.cos(np.radians(_PARALLEL_DEG))

    # Separation measured at the frame centre along the first line's normal.
    centre = np.array([work.shape[1] / 2, work.shape[0] / 2])
    foot = centre - (centre @ lines.normals[second].T - lines.offsets[second])[:, None] * lines.normals[second]
    separation = np.abs(np.einsum("ij,ij->i", foot, lines.normals[first]) - lines.offsets[first])
    apart = separation >= _MIN_SIDE_SHARE * min(work.shape)
    keep = parallel & apart
    return np.stack([first[keep], second[keep]], axis=1)


def _crossing_pair_combinations(lines: _Lines, pairs: np.ndarray) -> np.ndarray:
    """Index pairs into `pairs` whose mean directions cross at near right angles and share no line."""
    mean_direction = lines.directions[pairs[:, 0]] + np.where(
        (np.einsum("ij,ij->i", lines.directions[pairs[:, 0]], lines.directions[pairs[:, 1]]) >= 0)[:, None],
        lines.directions[pairs[:, 1]], -lines.directions[pairs[:, 1]])
    mean_direction /= np.linalg.norm(mean_direction, axis=1, keepdims=True)

    first, second = np.triu_indices(len(pairs), k=1)
    cross = np.abs(mean_direction[first, 0] * mean_direction[second, 1]
                   - mean_direction[first, 1] * mean_direction[second, 0])
    distinct = ~np.any(pairs[first][:, :, None] == pairs[second][:, None, :], axis=(1, 2))
    keep = (cross >= _MIN_CROSS_SIN) & distinct
    return np.stack([first[keep], second[keep]], axis=1)


def _intersections(homogeneous: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Points [n, 2] where lines a[i] and b[i] cross (far away when near parallel)."""
    point = np.cross(homogeneous[a], homogeneous[b])
    w = np.where(np.abs(point[:, 2]) < 1e-9, 1e-9, point[:, 2])
    return point[:, :2] / w[:, None]


def _four_line_quads(lines: _Lines, pairs: np.ndarray, work: WorkFrame) -> list[np.ndarray]:
    combos = _crossing_pair_combinations(lines, pairs)
    if len(combos) == 0:
        return []
    a1, a2 = pairs[combos[:, 0], 0], pairs[combos[:, 0], 1]
    b1, b2 = pairs[combos[:, 1], 0], pairs[combos[:, 1], 1]
    homogeneous = lines.homogeneous()

    # Corners in cyclic order, so that consecutive corners share one line.
    corners = np.stack([
        _intersections(homogeneous, a1, b1), _intersections(homogeneous, b1, a2),
        _intersections(homogeneous, a2, b2), _intersections(homogeneous, b2, a1),
    ], axis=1)
    side_lines = np.stack([b1, a2, b2, a1], axis=1)

    height, width = work.shape
    slack = 0.04 * max(height, width)
    inside = np.all((corners[..., 0] > -slack) & (corners[..., 0] < width + slack)
                    & (corners[..., 1] > -slack) & (corners[..., 1] < height + slack), axis=1)
    corners, side_lines = corners[inside], side_lines[inside]
    if len(corners) == 0:
        return []

    coverage = np.stack([
        lines.covered(side_lines[:, k], corners[:, k], corners[:, (k + 1) % 4]) for k in range(4)
    ], axis=1)
    ordered = np.sort(coverage, axis=1)
    enough = ordered[:, 1] >= _MIN_COVERAGE
    rank = (0.12 * ordered[:, 0] + 0.88 * ordered[:, 1:].mean(axis=1)) * _aspect_prior(corners)
    return _best_shapes(corners[enough], rank[enough], work, _MAX_QUADS)


def _three_line_quads(lines: _Lines, pairs: np.ndarray, work: WorkFrame) -> list[np.ndarray]:
    """Quads from two parallel lines and one crossing line, the fourth side placed by the card aspect."""
    count = len(lines)
    pair_index, cross_line = np.meshgrid(np.arange(len(pairs)), np.arange(count), indexing="ij")
    pair_index, cross_line = pair_index.ravel(), cross_line.ravel()
    a1, a2 = pairs[pair_index, 0], pairs[pair_index, 1]
    crossing = np.abs(lines.directions[a1, 0] * lines.directions[cross_line, 1]
                      - lines.directions[a1, 1] * lines.directions[cross_line, 0])
    keep = (crossing >= _MIN_CROSS_SIN) & (cross_line != a1) & (cross_line != a2)
    a1, a2, b = a1[keep], a2[keep], cross_line[keep]
    if len(b) == 0:
        return []

    homogeneous = lines.homogeneous()
    c0 = _intersections(homogeneous, a1, b)
    c1 = _intersections(homogeneous, a2, b)
    known = np.linalg.norm(c1 - c0, axis=1)
    along1 = lines.directions[a1]
    along2 = lines.directions[a2] * np.sign(np.einsum("ij,ij->i", along1, lines.directions[a2]))[:, None]

    quads, ranks = [], []
    for sign in (1.0, -1.0):
        for ratio in (1.0 / CARD_ASPECT, CARD_ASPECT):
            length = (known * ratio)[:, None]
            c3 = c0 + sign * length * along1
            c2 = c1 + sign * length * along2
            cover = np.stack([
                lines.covered(b, c0, c1), lines.covered(a1, c0, c3), lines.covered(a2, c1, c2),
            ], axis=1)
            enough = cover.min(axis=1) >= _MIN_COMPLETION_COVERAGE
            quads.append(np.stack([c0, c1, c2, c3], axis=1)[enough])
            ranks.append(cover.mean(axis=1)[enough])

    corners = np.concatenate(quads)
    rank = np.concatenate(ranks)
    return _best_shapes(corners, rank, work, _MAX_COMPLETIONS, allow_outside=True)


def _aspect_prior(corners: np.ndarray) -> np.ndarray:
    """Loose preference in (0, 1] for cyclic quads [n, 4, 2] whose side ratio is near 63:88, either way round."""
    lengths = np.linalg.norm(np.roll(corners, -1, axis=1) - corners, axis=2)
    first = lengths[:, 0] + lengths[:, 2]
    second = lengths[:, 1] + lengths[:, 3]
    ratio = np.minimum(first, second) / np.maximum(np.maximum(first, second), 1e-6)
    return np.exp(-(((ratio - CARD_ASPECT) / CARD_ASPECT / 0.3) ** 2))


def _best_shapes(corners: np.ndarray, rank: np.ndarray, work: WorkFrame, limit: int,
                 allow_outside: bool = False) -> list[np.ndarray]:
    """Filter cyclic quads [n, 4, 2] by size and shape, and return at most `limit` ordered quads, best ranked first."""
    if len(corners) == 0:
        return []
    edges = np.roll(corners, -1, axis=1) - corners
    turns = edges[:, :, 0] * np.roll(edges, -1, axis=1)[:, :, 1] - edges[:, :, 1] * np.roll(edges, -1, axis=1)[:, :, 0]
    convex = np.all(turns > 0, axis=1) | np.all(turns < 0, axis=1)
    area = 0.5 * np.abs(np.sum(corners[:, :, 0] * np.roll(corners[:, :, 1], -1, axis=1)
                               - np.roll(corners[:, :, 0], -1, axis=1) * corners[:, :, 1], axis=1))
    lengths = np.linalg.norm(edges, axis=2)
    first = lengths[:, 0] + lengths[:, 2]
    second = lengths[:, 1] + lengths[:, 3]
    ratio = np.minimum(first, second) / np.maximum(np.maximum(first, second), 1e-6)

    good = convex & (area >= MIN_AREA_FRACTION * work.area)
    good &= np.abs(ratio - CARD_ASPECT) / CARD_ASPECT <= 0.45
    good &= lengths.min(axis=1) >= _MIN_SIDE_SHARE * min(work.shape)
    if not allow_outside:
        good &= area <= 1.05 * work.area

    chosen = np.flatnonzero(good)
    chosen = chosen[np.argsort(rank[chosen])[::-1][:limit]]
    return [geometry.order_corners(corners[i]).astype(np.float32) for i in chosen]


def _side_lengths(quad: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
