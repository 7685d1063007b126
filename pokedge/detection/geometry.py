"""Quad geometry: corner order, card aspect, warping and per-card quality scores."""

from __future__ import annotations

import cv2
import numpy as np

from pokedge.detection.types import CARD_ASPECT, CARD_HEIGHT, CARD_WIDTH


# Focal length assumed when it cannot be solved from the quad, as a share of the
# longest frame side: about a 60 degree field of view, typical of phone and Pi cameras.
ASSUMED_FOCAL_SHARE = 0.85


def order_corners(points: np.ndarray) -> np.ndarray:
    """Order four points as TL, TR, BR, BL for a portrait card.

    Points are first sorted clockwise around their centre; the start is then
    chosen so that the first edge (TL to TR) is a short side, which makes the
    warp portrait. Which of the two short sides is the top is decided later
    by the orientation check.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(4, 2)
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    pts = pts[np.argsort(angles)]  # clockwise in image coordinates (y down)

    # Start at the point nearest the top-left so that an upright card keeps its natural order.
    start = int(np.argmin(pts[:, 0] + pts[:, 1]))
    pts = np.roll(pts, -start, axis=0)
    if _side(pts, 0) + _side(pts, 2) > _side(pts, 1) + _side(pts, 3):
        # TL->TR is a long side: the card lies on its side; start one corner later.
        pts = np.roll(pts, -1, axis=0)
    return pts


def rotate_quad_180(quad: np.ndarray) -> np.ndarray:
    """Return the same quad with its corner order turned by 180 degrees."""
    return np.roll(np.asarray(quad, dtype=np.float32), 2, axis=0)


def _side(pts: np.ndarray, i: int) -> float:
    return float(np.linalg.norm(pts[(i + 1) % 4] - pts[i]))


def quad_aspect(quad: np.ndarray) -> float:
    """Width over height of an ordered quad, from the mean of opposite sides."""
    width = (_side(quad, 0) + _side(quad, 2)) / 2
    height = (_side(quad, 1) + _side(quad, 3)) / 2
    return width / max(height, 1e-6)


def strip_extensions(quad: np.ndarray, frame_shape: tuple[int, ...], min_ratio: float = 1.2,
                     max_ratio: float = 3.0) -> list[np.ndarray]:
    """Return the card quads of which a quad could be a full-width strip, at the card's top or bottom.

    A detector can outline a card's upper part (name and art box) or its
    text box instead of the whole card. Such a strip spans the card's width
    along its long side. It is wider for its height than a card by
    `min_ratio` to `max_ratio`, so a strip of about half the card looks like
    a card on its side. The card shares the strip's edge on one long side
    and extends across the other to the card's aspect. The strip's aspect is
    measured with perspective undone (`rectified_aspect` in a frame of
    `frame_shape`), and its own homography carries the extension. The quads
    are ordered with the strip's long side as the card's width.
    """
    strip = np.asarray(quad, dtype=np.float32)
    if quad_aspect(strip) < 1.0:
        strip = np.roll(strip, -1, axis=0)  # the long side first
    ratio = rectified_aspect(strip, frame_shape) / CARD_ASPECT
    if not min_ratio <= ratio <= max_ratio:
        return []
    unit = np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])
    homography = cv2.getPerspectiveTransform(unit, strip)

    cards = []
    for top in (0.0, 1.0 - ratio):
        corners = np.float32([[0, top], [1, top], [1, top + ratio], [0, top + ratio]])
        card = cv2.perspectiveTransform(corners[None], homography)[0]
        if np.isfinite(card).all() and is_convex(card):
            cards.append(card.astype(np.float32))
    return cards


def quad_area(quad: np.ndarray) -> float:
    return float(abs(cv2.contourArea(np.asarray(quad, dtype=np.float32))))


def is_convex(quad: np.ndarray) -> bool:
    return bool(cv2.isContourConvex(np.asarray(quad, dtype=np.float32).reshape(-1, 1, 2)))


def corner_angles(quad: np.ndarray) -> np.ndarray:
    """Interior angles in degrees at each corner."""
    angles = []
    for i in range(4):
        a = quad[i - 1] - quad[i]
        b = quad[(i + 1) % 4] - quad[i]
        cos = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-6))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.asarray(angles)


def aspect_error(quad: np.ndarray) -> float:
    """Relative distance of the quad's aspect from the card's 63:88."""
    return abs(quad_aspect(quad) - CARD_ASPECT) / CARD_ASPECT


def warp_card(frame: np.ndarray, quad: np.ndarray, size: tuple[int, int] = (CARD_WIDTH, CARD_HEIGHT)) -> np.ndarray:
    """Warp the ordered quad to an upright card image of `size` (width, height)."""
    width, height = size
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(np.asarray(quad, dtype=np.float32), target)
    return cv2.warpPerspective(frame, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def blur_score(card: np.ndarray) -> float:
    """Variance of the Laplacian of the grey card; under about 100 the card is blurred."""
    grey = cv2.cvtColor(card, cv2.COLOR_BGR2GRAY) if card.ndim == 3 else card
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def glare_fraction(card: np.ndarray) -> float:
    """Share of pixels that are near white and unsaturated (specular highlights)."""
    hsv = cv2.cvtColor(card, cv2.COLOR_BGR2HSV)
    glare = (hsv[..., 2] >= 245) & (hsv[..., 1] <= 40)
    return float(glare.mean())


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two convex quads."""
    area, _ = cv2.intersectConvexConvex(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))
    union = quad_area(a) + quad_area(b) - area
    return float(area / union) if union > 0 else 0.0


def share_inside(outer: np.ndarray, inner: np.ndarray) -> float:
    """Return the share of the convex quad `inner`'s area that lies inside the convex quad `outer`, in [0, 1]."""
    area = quad_area(inner)
    if area <= 0:
        return 0.0
    overlap, _ = cv2.intersectConvexConvex(np.asarray(outer, dtype=np.float32), np.asarray(inner, dtype=np.float32))
    return float(min(1.0, overlap / area))


def contains(outer: np.ndarray, inner: np.ndarray, margin: float = 2.0) -> bool:
    """True when every corner of `inner` lies inside `outer` (or within `margin` px of it)."""
    contour = np.asarray(outer, dtype=np.float32).reshape(-1, 1, 2)
    return all(cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= -margin for x, y in inner)


def rectified_aspect(quad: np.ndarray, frame_shape: tuple[int, ...]) -> float:
    """Width over height of the rectangle that an ordered quad shows, undoing perspective.

    Uses the single-view method of Zhang and He ("Whiteboard scanning and
    image enhancement", 2007), which solves for the focal length from the
    quad and assumes the principal point is the frame centre. When the
    focal length has no plausible solution (opposite sides parallel, or a
    cropped photo whose centre is not the principal point), a focal length
    of `ASSUMED_FOCAL_SHARE` times the longest frame side is used instead.
    """
    height, width = frame_shape[:2]
    centre = np.array([width / 2.0, height / 2.0])
    tl, tr, br, bl = (np.append(np.asarray(p, dtype=np.float64) - centre, 1.0) for p in quad)

    # The paper's m1..m4 are the corners (0,0), (w,0), (0,h), (w,h) of the rectangle.
    k2 = np.dot(np.cross(tl, br), bl) / _nonzero(np.dot(np.cross(tr, br), bl))
    k3 = np.dot(np.cross(tl, br), tr) / _nonzero(np.dot(np.cross(bl, br), tr))
    n2 = k2 * tr - tl
    n3 = k3 * bl - tl

    longest = float(max(width, height))
    focal_sq = (ASSUMED_FOCAL_SHARE * longest) ** 2
    if abs(n2[2] * n3[2]) > 1e-12:
        solved = -(n2[0] * n3[0] + n2[1] * n3[1]) / (n2[2] * n3[2])
        if np.isfinite(solved) and (0.3 * longest) ** 2 < solved < (5.0 * longest) ** 2:
            focal_sq = solved

    width_sq = (n2[0] ** 2 + n2[1] ** 2) / focal_sq + n2[2] ** 2
    height_sq = (n3[0] ** 2 + n3[1] ** 2) / focal_sq + n3[2] ** 2
    if not (np.isfinite(width_sq) and np.isfinite(height_sq)) or height_sq <= 0:
        return quad_aspect(quad)
    return float(np.sqrt(width_sq / height_sq))


def _nonzero(value: float) -> float:
    return value if abs(value) > 1e-12 else 1e-12


def card_aspect_error(quad: np.ndarray, frame_shape: tuple[int, ...]) -> float:
    """Relative distance from 63:88 of the quad's aspect, with or without perspective correction.

    The smaller of the two errors is returned, because the perspective
    estimate is only right when the frame centre is the principal point.
    """
    plain = aspect_error(quad)
    corrected = abs(rectified_aspect(quad, frame_shape) - CARD_ASPECT) / CARD_ASPECT
    return min(plain, corrected)


def line_through(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Homogeneous line (a, b, c) with a*x + b*y + c = 0 through two points."""
    return np.cross(np.append(np.asarray(p, dtype=np.float64), 1.0), np.append(np.asarray(q, dtype=np.float64), 1.0))


def intersect(line_a: np.ndarray, line_b: np.ndarray) -> np.ndarray | None:
    """Intersection point of two homogeneous lines, or None when they are parallel."""
    point = np.cross(line_a, line_b)
    if abs(point[2]) < 1e-9:
        return None
    return point[:2] / point[2]
