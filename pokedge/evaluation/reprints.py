"""Hard negatives: same-art reprints across sets.

Some prints share their artwork with a print of another set (Base Set and
Base Set 2, Base Set and Evolutions, Celebrations' classic collection). They
differ only in the set symbol, the collector number and the frame. This
check takes the pairs that `pokedge.gallery.same_art` finds among the
reference scans, renders camera scenes of each print, and counts how often
the top-1 result is the right print and how often both prints are listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pokedge import synth
from pokedge.capture.image import read_image
from pokedge.evaluation.synthetic import FRAME_SIZE, match_to_truth
from pokedge.gallery.same_art import ReprintPair
from pokedge.recognition.pipeline import Recognizer

_log = logging.getLogger(__name__)


@dataclass
class ReprintReport:
    pairs: int = 0
    queries: int = 0
    detected: int = 0
    right_print: int = 0  # top-1 is the photographed print
    other_print: int = 0  # top-1 is its same-art twin
    both_listed: int = 0  # both prints are among the top-k alternatives or the same-art list
    flagged_same_art: int = 0  # top-1 is one print and `same_art` names the other
    misses: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        rate = (lambda k: round(k / self.queries, 4) if self.queries else None)
        return {"pairs": self.pairs, "queries": self.queries, "detected": rate(self.detected),
                "right_print": rate(self.right_print), "other_print": rate(self.other_print),
                "both_listed": rate(self.both_listed), "flagged_same_art": rate(self.flagged_same_art),
                "misses": self.misses[:20]}


def evaluate_reprints(recognizer: Recognizer, pairs: list[ReprintPair], views: int, seed: int, top_k: int = 5,
                      progress: Callable[[int, int], None] | None = None) -> ReprintReport:
    """Photograph each print of each pair `views` times (synthetic scenes) and tally the results."""
    report = ReprintReport(pairs=len(pairs))
    rng = np.random.default_rng(seed)
    total = 2 * views * len(pairs)

    for pair in pairs:
        for query, twin in ((pair.first, pair.second), (pair.second, pair.first)):
            scan = read_image(query.image)
            for _ in range(views):
                scene = synth.render_scene(scan, rng, frame_size=FRAME_SIZE)
                card = match_to_truth(recognizer.recognize(scene.frame).cards, scene.quads[0])
                _tally(report, card, query.card.card_id, twin.card.card_id, top_k)
                if progress:
                    progress(report.queries, total)
    return report


def _tally(report: ReprintReport, card, truth: str, twin: str, top_k: int) -> None:
    report.queries += 1
    if card is None or not card.hits:
        report.misses.append({"truth": truth, "twin": twin, "answer": None})
        return

    report.detected += 1
    top = card.hits[0].card_id
    listed = [hit.card_id for hit in card.hits[:top_k]] + list(card.same_art)
    report.right_print += top == truth
    report.other_print += top == twin
    report.both_listed += truth in listed and twin in listed
    other = {truth: twin, twin: truth}.get(top)
    report.flagged_same_art += other is not None and other in card.same_art
    if top != truth:
        report.misses.append({"truth": truth, "twin": twin, "answer": top, "score": round(card.hits[0].score, 4)})
