"""Quad geometry: corner order, card aspect, warping and per-card quality scores."""

from __future__ import annotations

import cv2
import numpy as np

from pokedge.detection.types import CARD_ASPECT, CARD_HEIGHT, CARD_WIDTH


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


def contains(outer: np.ndarray, inner: np.ndarray, margin: float = 2.0) -> bool:
    """True when every corner of `inner` lies inside `outer` (or within `margin` px of it)."""
    contour = np.asarray(outer, dtype=np.float32).reshape(-1, 1, 2)
    return all(cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= -margin for x, y in inner)
