"""Same-art prints: cards of one name in several sets that share their artwork.

Base Set 2 reprints Base Set card for card, Evolutions and the Celebrations
classic collection reprint Base Set art, and Champion's Path repeats Sword &
Shield cards. Such prints differ only in the set symbol, the collector number
and the frame, so the result for one of them lists the others.

`pokedge gallery build` finds the groups by comparing the art boxes of the
reference scans, pixel by pixel and by matched ORB keypoints, and stores them as `same_art.json` beside the
gallery. The recognizer lists the group of its top-1 card under `same_art`.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import cv2
import numpy as np

from pokedge.errors import GalleryError
from pokedge.gallery.sidecar import REBUILD, read_sidecar

if TYPE_CHECKING:
    from pokedge.gallery.build import ScanRow

_log = logging.getLogger(__name__)

FILENAME = "same_art.json"
SCHEMA = "pokedge.same_art/1"

# The art box of a card warped to 252x352, in pixels (x0, y0, x1, y1): it
# contains the artwork in every layout from Base Set to Scarlet & Violet.
ART_BOX = (25, 40, 227, 170)
ART_SIZE = (64, 40)  # the art box is compared at this size (width, height)
# Normalized cross-correlation of two art boxes at or above which two prints share the art.
# Among the 2,568 pairs of one name in two sets in the 2,726 reference scans, most
# correlations lie below 0.55 (new art) or above 0.8 (reprints), with about 90 pairs between.
SAME_ART_NCC = 0.8
# Holo reprints can keep the drawing but change the foil background (Base Set against
# Evolutions Charizard), which breaks the pixel comparison. ORB keypoint matches that
# agree on one homography find those. Among the same pairs, 81% have under 15 such
# inliers and 11% have 100 or more.
# NOTE: between 20 and 60 inliers some pairs are only alike in layout (V cards, shiny
# variants). The threshold of 30 is a judgement on a sample, not a calibrated value.
SAME_ART_INLIERS = 30
ORB_FEATURES = 400
ORB_CARD_SIZE = (504, 704)  # the scan is enlarged to this size (width, height) first


@dataclass(frozen=True)
class ReprintPair:
    first: "ScanRow"
    second: "ScanRow"
    similarity: float  # normalized cross-correlation of the art boxes


def art_signature(image: np.ndarray) -> np.ndarray:
    """Return the zero-mean, unit-norm grey art box of a card image, for comparing artwork."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    card = cv2.resize(grey, (252, 352), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = ART_BOX
    art = cv2.resize(card[y0:y1, x0:x1].astype(np.float32), ART_SIZE, interpolation=cv2.INTER_AREA)
    art -= art.mean()
    return art / max(float(np.linalg.norm(art)), 1e-9)


@dataclass
class ArtFeatures:
    """The features by which two art boxes are compared: grey pixels and ORB keypoints."""

    signature: np.ndarray
    points: np.ndarray  # float32 [K, 2] keypoint positions
    descriptors: np.ndarray | None  # uint8 [K, 32] ORB descriptors, None without keypoints


def art_features(image: np.ndarray, orb: "cv2.ORB") -> ArtFeatures:
    """Return the art-box signature and ORB keypoints of a card image."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    large = cv2.resize(grey, ORB_CARD_SIZE, interpolation=cv2.INTER_CUBIC)
    scale_x, scale_y = ORB_CARD_SIZE[0] / 252, ORB_CARD_SIZE[1] / 352
    x0, y0, x1, y1 = ART_BOX
    art = large[int(y0 * scale_y):int(y1 * scale_y), int(x0 * scale_x):int(x1 * scale_x)]
    keypoints, descriptors = orb.detectAndCompute(art, None)
    points = np.float32([point.pt for point in keypoints]).reshape(-1, 2)
    return ArtFeatures(art_signature(grey), points, descriptors)


def keypoint_inliers(a: ArtFeatures, b: ArtFeatures, matcher: "cv2.BFMatcher") -> int:
    """Return how many cross-checked ORB matches of two art boxes fit one homography (RANSAC)."""
    if a.descriptors is None or b.descriptors is None:
        return 0
    matches = matcher.match(a.descriptors, b.descriptors)
    if len(matches) < 8:
        return 0

    source = a.points[[match.queryIdx for match in matches]]
    target = b.points[[match.trainIdx for match in matches]]
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, 6.0)
    return int(mask.sum()) if mask is not None else 0


def same_art_pairs(rows: list["ScanRow"]) -> list[ReprintPair]:
    """Return pairs of prints with one name and two sets whose art boxes correlate or share keypoints."""
    from pokedge.capture.image import read_image

    by_name: dict[str, list["ScanRow"]] = defaultdict(list)
    for row in rows:
        by_name[row.card.name].append(row)

    orb = cv2.ORB_create(nfeatures=ORB_FEATURES, fastThreshold=10)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    pairs = []
    for group in by_name.values():
        if len({row.card.set_id for row in group}) < 2:
            continue
        features = [art_features(read_image(row.image), orb) for row in group]
        for (i, a), (j, b) in itertools.combinations(enumerate(group), 2):
            if a.card.set_id == b.card.set_id:
                continue
            similarity = float(np.sum(features[i].signature * features[j].signature))
            if similarity >= SAME_ART_NCC or keypoint_inliers(features[i], features[j], matcher) >= SAME_ART_INLIERS:
                pairs.append(ReprintPair(a, b, similarity))
    return pairs


def group_pairs(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Join pairs of card ids into groups (connected components), each sorted, the groups sorted too."""
    parent: dict[str, str] = {}

    def root(card_id: str) -> str:
        parent.setdefault(card_id, card_id)
        while parent[card_id] != card_id:
            parent[card_id] = parent[parent[card_id]]
            card_id = parent[card_id]
        return card_id

    for a, b in pairs:
        parent[root(a)] = root(b)

    groups: dict[str, list[str]] = defaultdict(list)
    for card_id in list(parent):
        groups[root(card_id)].append(card_id)
    return sorted(sorted(group) for group in groups.values())


def write_same_art(gallery_dir: Path, rows: list["ScanRow"]) -> Path:
    """Find the same-art groups among `rows` and write them as same_art.json in `gallery_dir`."""
    pairs = same_art_pairs(rows)
    groups = group_pairs((pair.first.card.card_id, pair.second.card.card_id) for pair in pairs)
    path = Path(gallery_dir) / FILENAME
    method = f"art box NCC >= {SAME_ART_NCC} or >= {SAME_ART_INLIERS} ORB homography inliers"
    document = {"schema": SCHEMA, "method": method, "groups": groups}
    path.write_text(json.dumps(document, indent=1) + "\n")
    _log.info("%d same-art groups (%d pairs) written to %s", len(groups), len(pairs), path)
    return path


def load_same_art(gallery_dir: Path, card_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Read same_art.json if present; return card_id -> the other prints of its group.

    A gallery without the file has no groups. Ids that the gallery does not
    contain are dropped with a warning, so a trimmed gallery still loads.
    """
    path = Path(gallery_dir) / FILENAME
    groups = read_sidecar(path, SCHEMA, "groups", list)
    if groups is None:
        return {}
    if not all(isinstance(g, list) and all(isinstance(i, str) for i in g) for g in groups):
        raise GalleryError(f"{path}: 'groups' must be lists of card ids; {REBUILD}")

    known = set(card_ids)
    others: dict[str, tuple[str, ...]] = {}
    dropped = 0
    for group in groups:
        present = [card_id for card_id in group if card_id in known]
        dropped += len(group) - len(present)
        for card_id in present:
            others[card_id] = tuple(other for other in present if other != card_id)
    if dropped:
        _log.warning("%s names %d card ids that the gallery does not contain; they are ignored", path, dropped)
    return {card_id: rest for card_id, rest in others.items() if rest}
