"""Publishing card decisions to the event stream, the journal (one line), the scan log and the counters.

The event stream comes first, so events still reach clients when the scan
log cannot be written (disk full).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pokedge.gallery.store import Gallery
from pokedge.service.events import EventBus
from pokedge.service.recognizers import LoadedRecognizer
from pokedge.service.scanlog import ScanLog, iso_time
from pokedge.service.stats import ServiceMetrics
from pokedge.service.tracker import CONFIRMED, LEFT, LOW_CONFIDENCE, STABILIZING, UNKNOWN_CARD, TrackEvent

_log = logging.getLogger(__name__)
_scan_log = logging.getLogger("pokedge.scans")

# Decisions whose warped card is kept as a JPEG for a person to review.
IMAGE_STATES = (UNKNOWN_CARD, LOW_CONFIDENCE)


def scan_record(event: TrackEvent, loaded: LoadedRecognizer, backend: str) -> dict[str, Any]:
    """Describe a decision as the scan log, the journal and /events show it.

    `card_id` is the confirmed card, or the guess of a low-confidence scan;
    an unknown card has none, and its closest cards are in `alternatives`.
    """
    gallery = loaded.recognizer.gallery
    now = time.time()
    card = gallery.cards.get(event.card_id) if event.card_id and event.kind != UNKNOWN_CARD else None
    hits = event.result.hits if event.result is not None else []
    record = {
        "time": now,
        "iso_time": iso_time(now),
        "state": event.kind,
        "card_id": card.card_id if card else None,
        "name": card.name if card else None,
        "set_id": card.set_id if card else None,
        "set_name": card.set_name if card else None,
        "number": card.number if card else None,
        "score": round(event.score, 4),
        "margin": round(event.margin, 4),
        "track_id": event.track_id,
        "frame": event.frame,
        "frames": event.frames,
        "model": loaded.info.get("model"),
        "gallery": loaded.info.get("gallery"),
        "version": loaded.info.get("version"),
        "backend": backend,
        "alternatives": [_alternative(hit, gallery) for hit in hits[:3]],
        "settled_to_decision_s": _seconds(event.settled_since, event.timestamp),
        "seen_to_decision_s": _seconds(event.first_seen, event.timestamp),
    }
    return record


def _alternative(hit, gallery: Gallery) -> dict[str, Any]:
    card = gallery.cards.get(hit.card_id)
    return {"card_id": hit.card_id, "name": card.name if card else None, "score": round(float(hit.score), 4)}


def _seconds(start: float | None, end: float) -> float | None:
    return round(end - start, 3) if start is not None else None


class ResultSink:
    """Publishes tracker events and records decisions."""

    def __init__(self, bus: EventBus, scanlog: ScanLog | None, metrics: ServiceMetrics):
        self.bus = bus
        self.scanlog = scanlog
        self.metrics = metrics
        self.last_event: dict[str, Any] | None = None
        self.decisions = 0

    def emit(self, event: TrackEvent, loaded: LoadedRecognizer, backend: str) -> dict[str, Any] | None:
        """Handle one tracker event; return the scan record for a decision, None for a card leaving."""
        if event.kind == LEFT:
            if event.state != STABILIZING:
                self.bus.publish(LEFT, {"track_id": event.track_id, "card_id": event.card_id, "state": event.state,
                                        "frame": event.frame, "iso_time": iso_time(time.time())})
            return None

        record = scan_record(event, loaded, backend)
        self.bus.publish(event.kind, record)
        _scan_log.info("scan %s", json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        self._count(event.kind)

        image = None
        if event.kind in IMAGE_STATES and event.result is not None:
            image = event.result.crop
        if self.scanlog is not None:
            self.scanlog.add({k: v for k, v in record.items() if k != "iso_time"}, image)
        self.last_event = record
        self.decisions += 1
        return record

    def _count(self, kind: str) -> None:
        if kind == CONFIRMED:
            self.metrics.confirmations.inc()
        elif kind == UNKNOWN_CARD:
            self.metrics.unknowns.inc()
        elif kind == LOW_CONFIDENCE:
            self.metrics.low_confidence.inc()
