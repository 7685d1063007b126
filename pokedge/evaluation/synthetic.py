"""Accuracy on synthetic camera scenes rendered from the reference scans.

Each scene shows one gallery card under a mix of camera conditions. The
recognized card that overlaps the rendered card's true quad is scored
against the card id (exact) and the card name (name-level, which accepts a
same-art reprint from another set).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from pokedge import synth
from pokedge.capture.image import read_image
from pokedge.detection import geometry
from pokedge.gallery.build import ScanRow
from pokedge.recognition.decision import MATCH
from pokedge.recognition.pipeline import CardResult, Recognizer

_log = logging.getLogger(__name__)

FRAME_SIZE = (960, 720)


@dataclass
class RenderedCase:
    row: ScanRow
    scene: "synth.Scene"


@dataclass
class ConditionTally:
    n: int = 0
    detected: int = 0
    top1: int = 0
    top1_name: int = 0
    top5: int = 0

    def add(self, detected: bool, top1: bool, top1_name: bool, top5: bool) -> None:
        self.n += 1
        self.detected += detected
        self.top1 += top1
        self.top1_name += top1_name
        self.top5 += top5

    def as_dict(self) -> dict[str, Any]:
        rate = (lambda k: round(k / self.n, 4) if self.n else None)
        return {"n": self.n, "detected": rate(self.detected), "top1": rate(self.top1),
                "top1_name": rate(self.top1_name), "top5": rate(self.top5)}


@dataclass
class SyntheticReport:
    overall: ConditionTally = field(default_factory=ConditionTally)
    by_condition: dict[str, ConditionTally] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.overall.as_dict(),
                "by_condition": {k: v.as_dict() for k, v in sorted(self.by_condition.items())}}


class ScanCache:
    """Reads reference scans on first use and keeps them."""

    def __init__(self) -> None:
        self._images: dict[str, np.ndarray] = {}

    def get(self, row: ScanRow) -> np.ndarray:
        key = str(row.image)
        if key not in self._images:
            self._images[key] = read_image(row.image)
        return self._images[key]


def render_cases(rows: list[ScanRow], count: int, seed: int, conditions: tuple[str, ...] | None = None,
                 cache: ScanCache | None = None, frame_size: tuple[int, int] = FRAME_SIZE) -> Iterator[RenderedCase]:
    """Yield `count` single-card scenes of cards drawn at random (seeded) from `rows`."""
    rng = np.random.default_rng(seed)
    cache = cache or ScanCache()
    for _ in range(count):
        row = rows[int(rng.integers(len(rows)))]
        scene = synth.render_scene(cache.get(row), rng, conditions, frame_size=frame_size)
        yield RenderedCase(row, scene)


def match_to_truth(cards: list[CardResult], truth_quad: np.ndarray) -> CardResult | None:
    """Return the recognized card whose quad overlaps the true quad most (IoU at least 0.3), else None."""
    best, best_iou = None, 0.3
    for card in cards:
        iou = geometry.quad_iou(card.quad, truth_quad)
        if iou >= best_iou:
            best, best_iou = card, iou
    return best


def evaluate_synthetic(recognizer: Recognizer, rows: list[ScanRow], count: int, seed: int,
                       progress: Callable[[int, int], None] | None = None) -> SyntheticReport:
    """Render `count` scenes and tally exact, name-level and top-5 accuracy per condition."""
    report = SyntheticReport()
    gallery = recognizer.gallery
    for n, case in enumerate(render_cases(rows, count, seed), 1):
        truth = case.row.card.card_id
        truth_name = case.row.card.name
        cards = recognizer.recognize(case.scene.frame).cards
        card = match_to_truth(cards, case.scene.quads[0])

        detected = card is not None
        matched = detected and card.status == MATCH
        top1 = matched and card.card_id == truth
        top1_name = matched and gallery.cards[card.card_id].name == truth_name
        top5 = detected and any(h.card_id == truth for h in card.hits[:5])

        report.overall.add(detected, top1, top1_name, top5)
        for condition in case.scene.conditions:
            report.by_condition.setdefault(condition, ConditionTally()).add(detected, top1, top1_name, top5)
        if progress:
            progress(n, count)
    return report


def self_retrieval(recognizer: Recognizer, rows: list[ScanRow], batch: int = 64,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Embed every clean reference scan and check that its own card comes back first."""
    correct = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        decisions = recognizer.identify_crops([read_image(row.image) for row in chunk])
        correct += sum(d.hits and d.hits[0].card_id == row.card.card_id for d, row in zip(decisions, chunk))
        if progress:
            progress(min(start + batch, len(rows)), len(rows))
    return {"n": len(rows), "top1": round(correct / len(rows), 4) if rows else None}


def evaluate_held_out(recognizer: Recognizer, rows: list[ScanRow], names: set[str], count: int, seed: int,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Render `count` scenes of the cards named in `names`, search a gallery without those names, count matches.

    Every print of a held-out name leaves the gallery, so whatever the
    recognizer matches is a wrong card. The whole pipeline runs with the
    recognizer's thresholds, second look included, but without the
    printed-number check, which needs the full gallery.
    """
    from pokedge.evaluation.calibration import split_holdout, subset_gallery
    from pokedge.gallery.index import GalleryIndex

    gallery_rows, held_out_rows = split_holdout(rows, 0.0, seed, names)
    if not held_out_rows or not gallery_rows:
        raise ValueError(f"invalid held-out names: they match {len(held_out_rows)} of {len(rows)} cards; "
                         "give names of some cards of the cards CSV, not of all")
    reduced = subset_gallery(recognizer.gallery, {row.card.card_id for row in gallery_rows})
    held_out = Recognizer(recognizer.backend, reduced, recognizer.thresholds, recognizer.detector,
                          GalleryIndex(reduced, cache=False), top_k=recognizer.top_k,
                          max_quads_per_card=recognizer.max_quads_per_card,
                          strip_extensions=recognizer.strip_extensions)

    detected = 0
    matched: list[str] = []  # the wrong cards matched, one per scene
    for n, case in enumerate(render_cases(held_out_rows, count, seed), 1):
        card = match_to_truth(held_out.recognize(case.scene.frame).cards, case.scene.quads[0])
        detected += card is not None
        if card is not None and card.status == MATCH:
            matched.append(card.card_id)
        if progress:
            progress(n, count)
    return {"n": count, "names": len({row.card.name for row in held_out_rows}), "detected": round(detected / count, 4),
            "matched": round(len(matched) / count, 4), "matched_n": len(matched), "matched_cards": matched}
