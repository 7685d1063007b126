"""Fitting the unknown-card thresholds on held-out synthetic scenes.

Three kinds of query are collected with the real pipeline:

- known: scenes of cards that are in the gallery. The expected result is a
  match, counted as correct when the top-1 card has the true name.
- unknown: scenes of held-out cards searched against the gallery without
  them (and without every card of the same name), so the nearest card is a
  different card. The expected result is unknown.
- made-up cards: scenes of card-shaped drawings that are no Pokemon card
  (like other games' cards); they join the unknown queries.
- background: frames with no card at all; whatever quads the detector finds
  there should fall below the card floor.

The thresholds are picked by grid search: the most correct matches, with a
penalty for wrong matches, while at most `max_unknown_accept` of the unknown
queries would be matched. When the gallery has blurred references, the
pair of the blurred-reference check is then fitted the same way on the
queries that the main pair leaves unmatched, each rescored against its
candidates' blurred rows (`pokedge.recognition.blur_check`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pokedge import synth
from pokedge.gallery.build import ScanRow
from pokedge.gallery.index import GalleryIndex
from pokedge.gallery.store import Gallery
from pokedge.evaluation.synthetic import ScanCache, match_to_truth, render_cases
from pokedge.recognition import blur_check
from pokedge.recognition.decision import Thresholds, name_margin
from pokedge.recognition.pipeline import CardResult, Recognizer

_log = logging.getLogger(__name__)

# NOTE: with these thresholds every main quad is a match, so no card takes the second look and the samples
# come from main quads only. The pipeline takes the second look, which matches held-out cards more often than
# the fit's report shows. `pokedge eval --held-out` measures the whole pipeline.
PERMISSIVE = Thresholds(match_score=-1.0, match_margin=-1.0, card_floor=-1.0)


@dataclass
class Samples:
    scores: list[float] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    missed: int = 0
    # the same three after the blurred-reference rescoring (empty when the gallery has no blurred rows)
    blur_scores: list[float] = field(default_factory=list)
    blur_margins: list[float] = field(default_factory=list)
    blur_correct: list[bool] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(self.scores), np.asarray(self.margins), np.asarray(self.correct, dtype=bool)

    def blur_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.blur_scores), np.asarray(self.blur_margins),
                np.asarray(self.blur_correct, dtype=bool))

    def add(self, card: CardResult, gallery: Gallery, true_name: str | None) -> None:
        """Record one recognized card; `true_name` None marks a query whose every match is wrong."""
        self.scores.append(card.score)
        self.margins.append(card.margin)
        self.correct.append(true_name is not None and gallery.cards[card.card_id].name == true_name)
        if gallery.blurred is None or card.embedding is None:
            return
        rescored = blur_check.rescore(card.hits, card.embedding, gallery)
        self.blur_scores.append(rescored[0].score)
        self.blur_margins.append(name_margin(rescored, gallery))
        self.blur_correct.append(true_name is not None and gallery.cards[rescored[0].card_id].name == true_name)


def split_holdout(rows: list[ScanRow], fraction: float, seed: int,
                  names: set[str] | None = None) -> tuple[list[ScanRow], list[ScanRow]]:
    """Split rows by card name: every print of a held-out name leaves the gallery together.

    `names` fixes the held-out names; otherwise a seeded random `fraction` of them is held out.
    """
    if names is not None:
        held = set(names)
    else:
        every = sorted({row.card.name for row in rows})
        rng = np.random.default_rng(seed)
        held = set(rng.choice(every, size=max(1, int(len(every) * fraction)), replace=False).tolist())
    kept = [row for row in rows if row.card.name not in held]
    out = [row for row in rows if row.card.name in held]
    return kept, out


def subset_gallery(gallery: Gallery, card_ids: set[str]) -> Gallery:
    """Return a gallery restricted to the given card ids (rows of other ids dropped)."""
    rows = [i for i, cid in enumerate(gallery.card_ids) if cid in card_ids]
    return Gallery(
        embeddings=np.ascontiguousarray(gallery.embeddings[rows]),
        card_ids=[gallery.card_ids[i] for i in rows],
        cards={cid: gallery.cards[cid] for cid in card_ids if cid in gallery.cards},
        manifest=dict(gallery.manifest),
        path=gallery.path,
        blurred=gallery.blurred.subset(card_ids) if gallery.blurred is not None else None,
    )


def collect(recognizer: Recognizer, rows: list[ScanRow], count: int, seed: int,
            progress: Callable[[int, int], None] | None = None) -> Samples:
    """Top-1 score, name margin and name-level correctness of `count` rendered scenes."""
    samples = Samples()
    cache = ScanCache()
    for n, case in enumerate(render_cases(rows, count, seed, cache=cache), 1):
        cards = recognizer.recognize(case.scene.frame).cards
        card = match_to_truth(cards, case.scene.quads[0])
        if card is None:
            samples.missed += 1
        else:
            samples.add(card, recognizer.gallery, case.row.card.name)
        if progress:
            progress(n, count)
    return samples


def collect_made_up(recognizer: Recognizer, count: int, seed: int,
                    frame_size: tuple[int, int] = (960, 720)) -> Samples:
    """Top-1 scores and margins of scenes showing a card drawn by `synth.make_test_card`."""
    rng = np.random.default_rng(seed)
    samples = Samples()
    for _ in range(count):
        scene = synth.render_scene(synth.make_test_card(rng), rng, frame_size=frame_size)
        card = match_to_truth(recognizer.recognize(scene.frame).cards, scene.quads[0])
        if card is None:
            samples.missed += 1
            continue
        samples.add(card, recognizer.gallery, None)
    return samples


def _merge(a: Samples, b: Samples) -> Samples:
    return Samples(a.scores + b.scores, a.margins + b.margins, a.correct + b.correct, a.missed + b.missed,
                   a.blur_scores + b.blur_scores, a.blur_margins + b.blur_margins, a.blur_correct + b.blur_correct)


def collect_background(recognizer: Recognizer, count: int, seed: int,
                       frame_size: tuple[int, int] = (960, 720)) -> Samples:
    """Top-1 scores and margins of whatever the detector finds on card-free synthetic backgrounds."""
    rng = np.random.default_rng(seed)
    samples = Samples()
    for _ in range(count):
        frame = synth.render_background(rng, frame_size)
        for card in recognizer.recognize(frame).cards:
            samples.add(card, recognizer.gallery, None)
    return samples


def fit(known: Samples, unknown: Samples, background: Samples, max_unknown_accept: float = 0.08,
        max_background_accept: float = 0.01, wrong_penalty: float = 2.0) -> tuple[Thresholds, dict[str, Any]]:
    """Grid-search the match score and margin; place the card floor below the cards and above the background.

    Quads on card-free frames count like unknown cards, but must almost never
    be matched (`max_background_accept`).
    """
    k_score, k_margin, k_correct = known.arrays()
    u_score, u_margin, _ = unknown.arrays()
    b_score, b_margin, _ = background.arrays()
    if len(k_score) == 0 or len(u_score) == 0:
        raise ValueError("calibration needs both known and unknown scenes with a detected card")

    best: tuple[float, float, float] | None = None
    for t_score in np.unique(np.quantile(np.concatenate([k_score, u_score]), np.linspace(0.0, 0.99, 100))):
        for t_margin in np.arange(0.0, 0.2, 0.0025):
            accept_known = (k_score >= t_score) & (k_margin >= t_margin)
            accept_unknown = (u_score >= t_score) & (u_margin >= t_margin)
            unknown_rate = accept_unknown.mean()
            background_rate = ((b_score >= t_score) & (b_margin >= t_margin)).mean() if len(b_score) else 0.0
            if unknown_rate > max_unknown_accept or background_rate > max_background_accept:
                continue
            gain = (accept_known & k_correct).mean() - wrong_penalty * (accept_known & ~k_correct).mean() - unknown_rate
            if best is None or gain > best[0]:
                best = (gain, float(t_score), float(t_margin))
    if best is None:
        raise ValueError("no threshold keeps unknown cards below the allowed match rate")
    _, t_score, t_margin = best

    floor = _card_floor(np.concatenate([k_score, u_score]), b_score)
    thresholds = Thresholds(match_score=round(t_score, 4), match_margin=round(t_margin, 4),
                            card_floor=round(floor, 4), calibrated=True)
    return thresholds, _summary(thresholds, known, unknown, background)


def fit_blur_check(thresholds: Thresholds, known: Samples, unknown: Samples, background: Samples,
                   max_unknown_accept: float = 0.01, unknown_penalty: float = 2.0,
                   wrong_penalty: float = 2.0) -> dict[str, Any]:
    """Grid-search the blurred-reference pair on the queries that `thresholds` leave unknown; set it in place.

    A query the main pair matches, or one below the card floor, never
    reaches the check. Unknown cards matched by the check cost twice what a
    gained card is worth, and on ties the higher pair wins. Background quads
    must never be matched. Returns the report entries of the check.
    """
    def reaching(samples: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        score, margin, _ = samples.arrays()
        b_score, b_margin, b_correct = samples.blur_arrays()
        if len(b_score) != len(score):
            raise ValueError("every sample needs blurred-reference scores to fit the check")
        unknown_main = (score >= thresholds.card_floor) & ~((score >= thresholds.match_score)
                                                            & (margin >= thresholds.match_margin))
        return b_score[unknown_main], b_margin[unknown_main], b_correct[unknown_main]

    k_score, k_margin, k_correct = reaching(known)
    u_score, u_margin, _ = reaching(unknown)
    b_score, b_margin, _ = reaching(background)
    known_total, unknown_total = max(len(known.scores), 1), max(len(unknown.scores), 1)

    best: tuple[float, float, float] | None = None
    for t_score in np.arange(0.45, 0.8, 0.01):
        for t_margin in np.arange(0.05, 0.3, 0.01):
            accept_known = (k_score >= t_score) & (k_margin >= t_margin)
            unknown_rate = ((u_score >= t_score) & (u_margin >= t_margin)).sum() / unknown_total
            if unknown_rate > max_unknown_accept or ((b_score >= t_score) & (b_margin >= t_margin)).any():
                continue
            gain = ((accept_known & k_correct).sum() - wrong_penalty * (accept_known & ~k_correct).sum()) / known_total
            gain -= unknown_penalty * unknown_rate
            candidate = (round(float(gain), 6), float(t_score), float(t_margin))
            if best is None or candidate > best:
                best = candidate
    if best is None or best[0] <= 0:
        _log.warning("calibration: no blurred-reference pair gains a card without matching unknown ones; "
                     "the check stays off")
        return {"blur_check": "off"}

    _, t_score, t_margin = best
    thresholds.blur_score, thresholds.blur_margin = round(t_score, 4), round(t_margin, 4)
    accept_known = (k_score >= t_score) & (k_margin >= t_margin)
    return {
        "blur_known_correct_gained": round(float((accept_known & k_correct).sum() / known_total), 4),
        "blur_known_wrong_gained": round(float((accept_known & ~k_correct).sum() / known_total), 4),
        "blur_unknown_matched": round(float(((u_score >= t_score) & (u_margin >= t_margin)).sum() / unknown_total), 4),
    }


def _card_floor(card_scores: np.ndarray, background: np.ndarray) -> float:
    """Keep at least 99% of card quads; drop as many background quads as that allows."""
    card_low = float(np.quantile(card_scores, 0.01))
    if len(background) == 0:
        return card_low * 0.9
    bg_high = float(np.quantile(background, 0.95))
    return min(card_low, (card_low + bg_high) / 2) if bg_high < card_low else card_low


def _summary(t: Thresholds, known: Samples, unknown: Samples, background: Samples) -> dict[str, Any]:
    k_score, k_margin, k_correct = known.arrays()
    u_score, u_margin, _ = unknown.arrays()
    bg, bg_margin, _ = background.arrays()
    accept_known = (k_score >= t.match_score) & (k_margin >= t.match_margin)
    accept_unknown = (u_score >= t.match_score) & (u_margin >= t.match_margin)
    return {
        "known_scenes": len(k_score) + known.missed,
        "known_detected": len(k_score),
        "known_correct_matched": round(float((accept_known & k_correct).mean()), 4),
        "known_wrong_matched": round(float((accept_known & ~k_correct).mean()), 4),
        "unknown_scenes": len(u_score) + unknown.missed,
        "unknown_matched": round(float(accept_unknown.mean()), 4),
        "background_quads": int(len(bg)),
        "background_below_floor": round(float((bg < t.card_floor).mean()), 4) if len(bg) else None,
        "background_matched": round(float(((bg >= t.match_score) & (bg_margin >= t.match_margin)).mean()), 4)
        if len(bg) else None,
    }


def calibrate(recognizer: Recognizer, rows: list[ScanRow], scenes: int, seed: int, holdout: float = 0.2,
              background_frames: int = 300, progress_factory: Callable[[str], Callable] | None = None,
              unknown_names: set[str] | None = None, keep: Thresholds | None = None) -> Thresholds:
    """Collect known, unknown and background samples and fit the thresholds for `recognizer`'s gallery.

    `unknown_names` fixes which card names play the unknown cards (for a model
    trained on the others); without it a seeded `holdout` share of names does.
    With `keep`, its match score, margin and card floor stay, and only the
    blurred-reference pair is fitted; the report describes the kept pair on
    the new samples.
    """
    gallery = recognizer.gallery
    kept, held = split_holdout(rows, holdout, seed, unknown_names)
    reduced = subset_gallery(gallery, {row.card.card_id for row in kept})
    _log.info("calibration: %d known cards, %d held-out cards (%d names)", len(kept), len(held),
              len({r.card.name for r in held}))

    permissive = Recognizer(recognizer.backend, gallery, PERMISSIVE, recognizer.detector, recognizer.index)
    held_out = Recognizer(recognizer.backend, reduced, PERMISSIVE, recognizer.detector, GalleryIndex(reduced))
    make = progress_factory or (lambda label: None)

    known = collect(permissive, kept, scenes, seed + 1, make("known scenes"))
    unknown = collect(held_out, held, max(scenes // 2, 1), seed + 2, make("unknown scenes"))
    made_up = collect_made_up(permissive, max(scenes // 4, 1), seed + 4)
    unknown = _merge(unknown, made_up)
    background = collect_background(permissive, background_frames, seed + 3)

    if keep is None:
        thresholds, report = fit(known, unknown, background)
    else:
        thresholds = Thresholds(keep.match_score, keep.match_margin, keep.card_floor, calibrated=True)
        report = _summary(thresholds, known, unknown, background)
    if gallery.blurred is not None:
        report.update(fit_blur_check(thresholds, known, unknown, background))
    thresholds.producer = gallery.producer
    thresholds.report = {**report, "seed": seed, "scenes": scenes,
                         "holdout": "given names" if unknown_names is not None else holdout,
                         "unknown_names": len({row.card.name for row in held})}
    return thresholds
