"""A second look at the collector number printed at the foot of a matched card.

Prints that share their artwork embed almost alike: Base Set and Base Set 2
Blastoise, or the 151 Charmander and its Paldean Fates reprint. Their
collector numbers differ ("2/102" against "2/130", "004/165" against
"007/091"), so once the embedding has matched a card, the bottom band of the
card is warped out of the frame at a higher resolution and read with OCR.

The number/total read then decides among the top-1 card and its same-art
prints:

- a print whose number and set total both agree is taken, ahead of the
  embedding's order;
- a print whose number agrees while its set's total is unknown comes next;
- when no print agrees and the top-1 card is contradicted on both the
  number and its set's total, the card is a print the gallery lacks, and
  the result becomes unknown.

A band that cannot be read (a small, blurred or covered card) changes
nothing. Set totals come from `printed_totals.json` beside the gallery.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import cv2
import numpy as np

from pokedge.detection import geometry
from pokedge.gallery.index import Hit
from pokedge.gallery.store import Gallery
from pokedge.ocr import TextReader
from pokedge.recognition.decision import MATCH, UNKNOWN, Decision

_log = logging.getLogger(__name__)

BAND_WIDTH = 630  # pixels across the card when its band is warped out for OCR
BAND_TOP = 0.86  # the band starts at this share of the card height
CARD_ASPECT = 88 / 63
MIN_CARD_HEIGHT = 300  # frame pixels; below this the number is too small to read
MIN_CONFIDENCE = 0.8  # mean character confidence of a line that is trusted
MAX_LINE_SHARE = 0.35  # a number line is short: at most this share of the band width
MIN_LINE_ASPECT = 1.5  # width / height of a number line, "2/102" the shortest
MAX_LINE_ASPECT = 10.0
MAX_LINES_READ = 4  # lines recognized at most, nearest a bottom corner first
REUSE_MIN_IOU = 0.8  # a read is reused for a card of the same name whose quad overlaps the read one this much
REUSE_MAX_READS = 32  # reads kept at most

# A number and a total: "2/102", "007/091", "110/105". Longer digit runs are misreads, not numbers.
_NUMBER = re.compile(r"(?<!\d)(\d{1,3})\s*/\s*(\d{2,3})(?!\d)")
_LEADING_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class PrintedNumber:
    """A collector number read from a card: number/total, as printed."""

    number: int
    total: int
    text: str  # as printed, such as "007/091"
    confidence: float

    def __str__(self) -> str:
        return self.text


def parse_printed_number(text: str, confidence: float = 1.0) -> PrintedNumber | None:
    """Return the number/total in one line of OCR text, or None."""
    found = _NUMBER.search(text.replace(" ", ""))
    if found is None:
        return None
    return PrintedNumber(int(found.group(1)), int(found.group(2)), found.group(0), confidence)


def is_partial_read(printed: PrintedNumber, number: int, total: int) -> bool:
    """Return True when `printed` could be `number`/`total` with outer digits cut off: "9/16" of "119/165"."""
    return str(number).endswith(str(printed.number)) and str(total).startswith(str(printed.total))


def card_number(info_number: str) -> int | None:
    """Return the leading digits of a gallery number as an int ("004" -> 4, "15_A1" -> 15); None for "SWSH061"."""
    digits = _LEADING_DIGITS.match(info_number)
    return int(digits.group()) if digits else None


def band_from_card(card: np.ndarray) -> np.ndarray:
    """Cut the bottom band out of an upright card image scaled to BAND_WIDTH pixels across."""
    height = round(BAND_WIDTH * CARD_ASPECT)
    scaled = cv2.resize(card, (BAND_WIDTH, height), interpolation=cv2.INTER_AREA if card.shape[1] > BAND_WIDTH
                        else cv2.INTER_CUBIC)
    return scaled[round(height * BAND_TOP):]


def band_from_frame(frame: np.ndarray, quad: np.ndarray) -> np.ndarray | None:
    """Warp the bottom band of the card at `quad` (TL TR BR BL, upright) out of the frame; None if too small."""
    quad = np.asarray(quad, dtype=np.float32)
    if max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])) < MIN_CARD_HEIGHT:
        return None

    height = BAND_WIDTH * CARD_ASPECT
    top = height * BAND_TOP
    target = np.array([[0, -top], [BAND_WIDTH - 1, -top], [BAND_WIDTH - 1, height - 1 - top], [0, height - 1 - top]],
                      dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    return cv2.warpPerspective(frame, matrix, (BAND_WIDTH, round(height - top)), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)


def read_printed_number(reader: TextReader, band: np.ndarray) -> PrintedNumber | None:
    """Read the collector number in a card's bottom band, or None.

    Every layout prints the number near a bottom corner, so short lines are
    read one at a time from the corners inwards, and the first confident
    number/total ends the search.
    """
    height, width = band.shape[:2]
    lines = [box for box in reader.find_lines(band)
             if box[2] <= width * MAX_LINE_SHARE and MIN_LINE_ASPECT <= box[2] / box[3] <= MAX_LINE_ASPECT]
    lines.sort(key=lambda box: math.hypot(min(box[0], width - box[0] - box[2]), height - box[1] - box[3]))

    for x, y, w, h in lines[:MAX_LINES_READ]:
        ((text, confidence),) = reader.recognize([band[y:y + h, x:x + w]])
        printed = parse_printed_number(text, confidence)
        if printed is not None and printed.confidence >= MIN_CONFIDENCE:
            return printed
    return None


@dataclass
class _Read:
    name: str
    quad: np.ndarray
    printed: PrintedNumber
    at: float


class RecentReads:
    """Number reads of the cards in view, so that a card kept in view is read once.

    A read is reused for a card whose top-1 has the same name and whose quad
    overlaps the read quad by REUSE_MIN_IOU. Each reuse renews it, and a read
    not reused for `max_age_s` seconds is dropped. A card taken away and
    replaced by a reprint of the same name is therefore read again, unless
    the swap takes less than `max_age_s`. The frame loop and the pipeline's
    workers share one instance, so it takes a lock.
    """

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_age_s = max_age_s
        self.clock = clock
        self._reads: list[_Read] = []
        self._lock = threading.Lock()

    def find(self, name: str, quad: np.ndarray) -> PrintedNumber | None:
        """Return the newest fresh read of a card named `name` at about `quad` and renew it, or None."""
        with self._lock:
            self._drop_old()
            for read in reversed(self._reads):
                if read.name == name and geometry.quad_iou(read.quad, quad) >= REUSE_MIN_IOU:
                    read.quad = np.asarray(quad, dtype=np.float32)
                    read.at = self.clock()
                    return read.printed
        return None

    def add(self, name: str, quad: np.ndarray, printed: PrintedNumber) -> None:
        with self._lock:
            self._reads.append(_Read(name, np.asarray(quad, dtype=np.float32), printed, self.clock()))
            del self._reads[:-REUSE_MAX_READS]

    def _drop_old(self) -> None:
        oldest = self.clock() - self.max_age_s
        self._reads = [read for read in self._reads if read.at >= oldest]


class NumberCheck:
    """The collector-number check: OCR of matched cards, which settles same-art prints and missing reprints.

    With `recent`, a successful read is reused for the same card in the next
    frames instead of running OCR again (for the device service, where a
    card stays in view). One-shot scans and evaluations read every card.
    """

    def __init__(self, reader: TextReader, gallery: Gallery, totals: Mapping[str, int],
                 recent: RecentReads | None = None):
        self.reader = reader
        self.gallery = gallery
        self.totals = totals
        self.recent = recent

    def apply(self, decision: Decision, frame: np.ndarray, quad: np.ndarray) -> tuple[Decision, PrintedNumber | None]:
        """Return the decision after the number check, and the number read (None when nothing was read)."""
        if decision.status != MATCH:
            return decision, None
        printed = self._read(decision, frame, quad)
        if printed is None:
            return decision, None
        return self.settle(decision, printed), printed

    def _read(self, decision: Decision, frame: np.ndarray, quad: np.ndarray) -> PrintedNumber | None:
        """Read the number at `quad`, or reuse a recent read of the same card at about the same place."""
        name = self.gallery.cards[decision.hits[0].card_id].name
        if self.recent is not None:
            reused = self.recent.find(name, quad)
            if reused is not None:
                return reused

        band = band_from_frame(frame, quad)
        printed = read_printed_number(self.reader, band) if band is not None else None
        if printed is not None and self.recent is not None:
            self.recent.add(name, quad, printed)
        return printed

    def settle(self, decision: Decision, printed: PrintedNumber) -> Decision:
        """Reorder the top-1 card and its same-art prints by how well they agree with `printed`."""
        top = decision.hits[0].card_id
        candidates = [top, *decision.same_art]
        levels = {card_id: self.agreement(card_id, printed) for card_id in candidates}
        best = max(candidates, key=lambda card_id: levels[card_id])  # max keeps the first of equals

        if levels[best] > 0:
            if best != top:
                _log.debug("printed number %s moves %s ahead of %s", printed, best, top)
            return _with_top(decision, best, self.gallery)
        if self.contradicts(top, printed):
            _log.debug("printed number %s contradicts %s: a print the gallery lacks", printed, top)
            return replace(decision, status=UNKNOWN)
        return decision

    def agreement(self, card_id: str, printed: PrintedNumber) -> int:
        """2: number and set total agree; 1: number agrees, set total unknown; 0: otherwise."""
        info = self.gallery.cards[card_id]
        if card_number(info.number) != printed.number:
            return 0
        total = self.totals.get(info.set_id)
        if total is None:
            return 1
        return 2 if total == printed.total else 0

    def contradicts(self, card_id: str, printed: PrintedNumber) -> bool:
        """Return True when the card's number and its set's known total both differ from `printed`.

        A read that is a cut-off piece of the card's own number ("9/16" of
        "119/165", when the text box missed the outer digits) is no
        contradiction.
        """
        info = self.gallery.cards[card_id]
        total = self.totals.get(info.set_id)
        number = card_number(info.number)
        if total is None or number is None or total == printed.total or number == printed.number:
            return False
        return not is_partial_read(printed, number, total)


def _with_top(decision: Decision, card_id: str, gallery: Gallery) -> Decision:
    """Move `card_id` to the top of the hits (added with the top-1 score if missing), keeping the others listed."""
    hits = decision.hits
    if hits[0].card_id == card_id:
        return decision

    chosen = next((hit for hit in hits if hit.card_id == card_id), None)
    if chosen is None:
        chosen = Hit(card_id, hits[0].score, gallery.card_ids.index(card_id))
    reordered = [chosen, *(hit for hit in hits if hit.card_id != card_id)]
    same_art = [hits[0].card_id, *(other for other in decision.same_art if other != card_id)]
    return replace(decision, hits=reordered, same_art=same_art)
