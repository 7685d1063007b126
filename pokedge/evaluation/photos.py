"""Accuracy on labeled real photos and on photos without cards.

The labels CSV has the columns photo, card_id and conditions. A photo of
several cards lists their ids separated by ';'. The `oog` condition marks a
card that is not in the gallery. Whether a card is in the gallery is decided
by looking its id up in the gallery, never by its set, because some sets are
only partly in the gallery.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pokedge.capture.image import read_image
from pokedge.errors import InputError, PokedgeError
from pokedge.recognition.decision import MATCH
from pokedge.recognition.pipeline import CardResult, Recognizer

_log = logging.getLogger(__name__)

# Condition tags that describe the label, not the photo.
_LABEL_TAGS = ("note:", "label_", "oog", "in_gallery(", "multi(", "mostly_oog")


@dataclass
class PhotoLabel:
    photo: str
    card_ids: list[str]
    conditions: list[str]


@dataclass
class Tally:
    n: int = 0
    top1: int = 0
    top1_name: int = 0
    top5: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "top1": _rate(self.top1, self.n),
            "top1_name": _rate(self.top1_name, self.n),
            "top5": _rate(self.top5, self.n),
        }


@dataclass
class PhotoReport:
    singles: Tally = field(default_factory=Tally)
    by_condition: dict[str, Tally] = field(default_factory=dict)
    oog_n: int = 0
    oog_unknown: int = 0
    multi_cards: int = 0
    multi_found: int = 0
    multi_found_name: int = 0
    negatives_n: int = 0
    negatives_clean: int = 0
    per_photo: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.singles.as_dict(),
            "unknown_rate": _rate(self.oog_unknown, self.oog_n),
            "oog_n": self.oog_n,
            "multi_recall": _rate(self.multi_found, self.multi_cards),
            "multi_recall_name": _rate(self.multi_found_name, self.multi_cards),
            "multi_cards": self.multi_cards,
            "no_card_rate": _rate(self.negatives_clean, self.negatives_n),
            "negatives_n": self.negatives_n,
            "by_condition": {k: v.as_dict() for k, v in sorted(self.by_condition.items())},
        }


def _rate(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def read_labels(path: Path) -> list[PhotoLabel]:
    """Read a labels CSV; raise PokedgeError naming the line of a bad row."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PokedgeError(f"labels file not found: {path}") from None

    labels = []
    for line, record in enumerate(records, start=2):
        if not record.get("photo") or not record.get("card_id"):
            raise PokedgeError(f"{path}, line {line}: needs 'photo' and 'card_id'")
        ids = [part.strip() for part in record["card_id"].split(";") if part.strip()]
        conditions = [c.strip() for c in _split_conditions(record.get("conditions", ""))]
        labels.append(PhotoLabel(record["photo"], ids, conditions))
    return labels


def _split_conditions(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [p for p in parts if p.strip()]


def photo_tags(conditions: list[str]) -> list[str]:
    """Conditions that describe the photo (drop label notes and gallery flags)."""
    return [c for c in conditions if not c.startswith(_LABEL_TAGS)]


def evaluate_photos(recognizer: Recognizer, folder: Path, labels: list[PhotoLabel],
                    report: PhotoReport | None = None) -> PhotoReport:
    """Scan every labeled photo and tally single-card, out-of-gallery and multi-card results."""
    report = report or PhotoReport()
    gallery = recognizer.gallery
    for label in labels:
        try:
            frame = read_image(folder / label.photo)
        except InputError as exc:
            _log.warning("skipping %s: %s", label.photo, exc)
            continue
        cards = recognizer.recognize(frame).cards
        in_gallery = [cid for cid in label.card_ids if cid in gallery.cards]

        if len(label.card_ids) > 1:
            _tally_multi(report, label, cards, in_gallery, gallery)
        elif in_gallery:
            _tally_single(report, label, cards, gallery)
        else:
            report.oog_n += 1
            unknown = not any(c.status == MATCH for c in cards)
            report.oog_unknown += unknown
            report.per_photo.append(_photo_row(label, cards, gallery, kind="oog", ok=unknown))
    return report


def _primary(cards: list[CardResult]) -> CardResult | None:
    """Return the card a single-card photo is about: the best match, else the best unknown."""
    if not cards:
        return None
    return max(cards, key=lambda c: (c.status == MATCH, c.score))


def _tally_single(report: PhotoReport, label: PhotoLabel, cards: list[CardResult], gallery) -> None:
    truth = label.card_ids[0]
    truth_name = gallery.cards[truth].name
    card = _primary(cards)
    matched = card is not None and card.status == MATCH
    top1 = matched and card.card_id == truth
    top1_name = matched and gallery.cards[card.card_id].name == truth_name
    top5 = card is not None and any(h.card_id == truth for h in card.hits[:5])

    for tally in [report.singles, *(report.by_condition.setdefault(t, Tally()) for t in photo_tags(label.conditions))]:
        tally.n += 1
        tally.top1 += top1
        tally.top1_name += top1_name
        tally.top5 += top5
    report.per_photo.append(_photo_row(label, cards, gallery, kind="single", ok=top1, ok_name=top1_name))


def _tally_multi(report: PhotoReport, label: PhotoLabel, cards: list[CardResult], in_gallery: list[str], gallery) -> None:
    matched_ids = {c.card_id for c in cards if c.status == MATCH}
    matched_names = {gallery.cards[cid].name for cid in matched_ids}
    found = sum(cid in matched_ids for cid in in_gallery)
    found_name = sum(gallery.cards[cid].name in matched_names for cid in in_gallery)
    report.multi_cards += len(in_gallery)
    report.multi_found += found
    report.multi_found_name += found_name
    report.per_photo.append(_photo_row(label, cards, gallery, kind="multi", ok=f"{found}/{len(in_gallery)}"))


def _photo_row(label: PhotoLabel, cards: list[CardResult], gallery, kind: str, ok: Any, ok_name: Any = None) -> dict[str, Any]:
    answered = [c.card_id if c.status == MATCH else f"unknown({c.card_id})" for c in cards]
    row = {"photo": label.photo, "kind": kind, "truth": ";".join(label.card_ids), "answer": answered, "ok": ok}
    if ok_name is not None:
        row["ok_name"] = ok_name
    return row


def evaluate_negatives(recognizer: Recognizer, folder: Path, report: PhotoReport | None = None) -> PhotoReport:
    """Scan photos without a Pokemon card front; a photo passes when no card is matched."""
    report = report or PhotoReport()
    images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for path in images:
        try:
            frame = read_image(path)
        except InputError as exc:
            _log.warning("skipping %s: %s", path.name, exc)
            continue
        cards = recognizer.recognize(frame).cards
        clean = not any(c.status == MATCH for c in cards)
        report.negatives_n += 1
        report.negatives_clean += clean
        answered = [c.card_id for c in cards if c.status == MATCH]
        report.per_photo.append({"photo": path.name, "kind": "negative", "answer": answered, "ok": clean})
    return report
