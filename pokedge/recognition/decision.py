"""Match, unknown or not a card: the calibrated decision on a card's search hits.

A query is a match only when its top-1 cosine similarity is high enough and
clearly ahead of the best card with another name (the margin). Reprints of
the same art share the name, so they do not eat the margin; they are listed
as alternatives instead. A quad whose best similarity is below the card floor
does not look like any card front and is dropped as "not a card".

The three numbers are fitted by `pokedge calibrate` on held-out synthetic
scenes and stored as `thresholds.json` beside the gallery, together with
the pair of the blurred-reference check (`pokedge.recognition.blur_check`)
when the gallery has blurred references.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pokedge.errors import GalleryError
from pokedge.gallery.index import Hit
from pokedge.gallery.store import Gallery

_log = logging.getLogger(__name__)

SCHEMA = "pokedge.thresholds/1"
FILENAME = "thresholds.json"

MATCH = "match"
UNKNOWN = "unknown"
NOT_A_CARD = "not_a_card"


@dataclass
class Thresholds:
    """Decision thresholds on cosine similarity, for one gallery and its model."""

    match_score: float = 0.6
    match_margin: float = 0.03
    card_floor: float = 0.3
    # score and name margin of the blurred-reference check; None turns the check off
    blur_score: float | None = None
    blur_margin: float | None = None
    producer: str = ""
    calibrated: bool = False
    report: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"schema": SCHEMA, **asdict(self)}, indent=2) + "\n")


def load_thresholds(gallery_dir: Path, producer: str) -> Thresholds:
    """Read thresholds.json beside the gallery; fall back to uncalibrated defaults with a warning."""
    path = Path(gallery_dir) / FILENAME
    if not path.is_file():
        _log.warning("no %s in %s: using uncalibrated defaults; run 'pokedge calibrate'", FILENAME, gallery_dir)
        return Thresholds(producer=producer)

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GalleryError(f"{path} is not valid JSON: {exc}; re-run 'pokedge calibrate'") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise GalleryError(f"{path}: expected schema {SCHEMA!r}; re-run 'pokedge calibrate'")

    thresholds = Thresholds(
        match_score=_number(data, "match_score", path),
        match_margin=_number(data, "match_margin", path),
        card_floor=_number(data, "card_floor", path),
        blur_score=_number(data, "blur_score", path) if data.get("blur_score") is not None else None,
        blur_margin=_number(data, "blur_margin", path) if data.get("blur_margin") is not None else None,
        producer=str(data.get("producer", "")),
        calibrated=bool(data.get("calibrated", False)),
        report=data.get("report", {}) if isinstance(data.get("report"), dict) else {},
    )
    if thresholds.producer and thresholds.producer != producer:
        raise GalleryError(
            f"{path} was calibrated for model {thresholds.producer}, but the gallery is from {producer}; "
            f"re-run 'pokedge calibrate'"
        )
    return thresholds


def _number(data: dict, key: str, path: Path) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 2.0:
        raise GalleryError(f"{path}: field {key!r} must be a number between -1 and 2, got {value!r}")
    return float(value)


@dataclass
class Decision:
    status: str
    hits: list[Hit]
    margin: float
    same_art: list[str]  # card ids of other prints that look the same as the top-1
    blur_matched: bool = False  # matched by the blurred-reference check, on rescored hits


def name_margin(hits: list[Hit], gallery: Gallery) -> float:
    """Top-1 score minus the best score of a card with another name (the whole top-1 score if none)."""
    if not hits:
        return 0.0
    top_name = gallery.cards[hits[0].card_id].name
    for hit in hits[1:]:
        if gallery.cards[hit.card_id].name != top_name:
            return hits[0].score - hit.score
    return hits[0].score


def decide(hits: list[Hit], gallery: Gallery, thresholds: Thresholds, same_art_delta: float = 0.1) -> Decision:
    """Classify one query's hits as match, unknown or not a card.

    The prints that share the top-1 card's artwork in the gallery's same-art
    groups are listed as same-art alternatives, and so are prints of the same
    name within `same_art_delta` of the top-1 score.
    """
    # NOTE: the 0.1 default is an estimate, not calibrated; another artwork of
    # the same Pokemon can fall inside it and be listed as same art.
    if not hits or hits[0].score < thresholds.card_floor:
        return Decision(NOT_A_CARD, hits, 0.0, [])

    margin = name_margin(hits, gallery)
    top = hits[0]
    top_name = gallery.cards[top.card_id].name
    close = [
        hit.card_id for hit in hits[1:]
        if gallery.cards[hit.card_id].name == top_name and top.score - hit.score <= same_art_delta
    ]
    same_art = list(dict.fromkeys([*close, *gallery.same_art.get(top.card_id, ())]))

    # NOTE: sharp and blurred crops share one threshold pair, because in synthetic scenes with motion blur,
    # cards missing from the gallery reach the top-1 scores and margins of known cards.
    if top.score >= thresholds.match_score and margin >= thresholds.match_margin:
        return Decision(MATCH, hits, margin, same_art)
    return Decision(UNKNOWN, hits, margin, same_art)
