"""A second decision for a card left unknown: its crop against blurred copies of its candidates.

Motion blur and defocus pull a card's embedding away from its clean scan,
so a blurred card of the gallery can score like a card the gallery lacks.
The gallery's blurred references (`pokedge.gallery.blurred`) hold every
scan embedded under a few camera blurs. For a card that the main
thresholds leave unknown, each of its top-5 candidates is rescored with
the best cosine over its clean row and its blurred rows. The rescored
list is then decided with the check's own score and margin, fitted by
`pokedge calibrate` on the same held-out scenes as the main pair.

A blurred card of the gallery finds its own blurred copy much closer than
it found the clean scan. A card missing from the gallery finds no
candidate much closer, so in synthetic scenes its rescored top-1 rarely
passes the check's score.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pokedge.gallery.index import Hit
from pokedge.gallery.store import Gallery
from pokedge.recognition.decision import MATCH, UNKNOWN, Decision, Thresholds, decide

CANDIDATES = 5  # top hits rescored


def enabled(gallery: Gallery, thresholds: Thresholds) -> bool:
    """Return True when the gallery has blurred references and the thresholds hold the check's pair."""
    return gallery.blurred is not None and thresholds.blur_score is not None and thresholds.blur_margin is not None


def rescore(hits: list[Hit], query: np.ndarray, gallery: Gallery) -> list[Hit]:
    """Return the top CANDIDATES hits, each scored with its best clean or blurred cosine, best first."""
    candidates = hits[:CANDIDATES]
    blurred = gallery.blurred.similarities([hit.card_id for hit in candidates], query)
    best = np.maximum(np.array([hit.score for hit in candidates], dtype=np.float32), blurred.max(axis=1))
    rescored = [Hit(hit.card_id, float(score), hit.row) for hit, score in zip(candidates, best)]
    return sorted(rescored, key=lambda hit: hit.score, reverse=True)


def check(decision: Decision, query: np.ndarray, gallery: Gallery, thresholds: Thresholds) -> Decision:
    """Return a match on the rescored candidates when they pass the check's pair, else `decision` unchanged."""
    if decision.status != UNKNOWN or not decision.hits or not enabled(gallery, thresholds):
        return decision
    rescored = rescore(decision.hits, query, gallery)
    pair = replace(thresholds, match_score=thresholds.blur_score, match_margin=thresholds.blur_margin)
    second = decide(rescored, gallery, pair)
    return replace(second, blur_matched=True) if second.status == MATCH else decision
