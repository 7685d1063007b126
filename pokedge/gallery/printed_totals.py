"""The printed total of each set, the "102" of "2/102", read from the reference scans.

The total is what tells Base Set 2/102 from Base Set 2 2/130, and what marks
a reprint from a set that the gallery lacks. Card facts carry the number
but not the total, so `pokedge gallery build` reads the number band of up
to SAMPLE scans of every set with the OCR models. A set gets the total that
at least MIN_VOTES reads and MIN_SHARE of its reads agree on. A set whose
scans are too small to read gets none, so the number check trusts the
number alone there. The result is `printed_totals.json` beside the gallery.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pokedge.capture.image import read_image
from pokedge.errors import GalleryError, InputError
from pokedge.gallery.sidecar import REBUILD, read_sidecar

if TYPE_CHECKING:
    from pokedge.gallery.build import ScanRow
    from pokedge.ocr import TextReader

_log = logging.getLogger(__name__)

FILENAME = "printed_totals.json"
SCHEMA = "pokedge.printed_totals/1"
SAMPLE = 24  # scans read per set
MIN_VOTES = 3
MIN_SHARE = 0.6


def estimate_totals(rows: list["ScanRow"], reader: "TextReader", sample: int = SAMPLE,
                    seed: int = 0) -> dict[str, dict[str, int]]:
    """Read up to `sample` scans of every set; return set_id -> {"total", "votes", "reads"} for the sets that agree."""
    from pokedge.recognition.printed_number import band_from_card, read_printed_number

    by_set: dict[str, list["ScanRow"]] = defaultdict(list)
    for row in rows:
        by_set[row.card.set_id].append(row)

    rng = np.random.default_rng(seed)
    totals = {}
    for set_id, set_rows in sorted(by_set.items()):
        picked = [set_rows[i] for i in rng.permutation(len(set_rows))[:sample]]
        reads = Counter()
        for row in picked:
            try:
                printed = read_printed_number(reader, band_from_card(read_image(row.image)))
            except InputError as exc:
                _log.warning("set %s: cannot read %s for its printed total: %s", set_id, row.image, exc)
                continue
            if printed is not None:
                reads[printed.total] += 1

        total, votes = reads.most_common(1)[0] if reads else (None, 0)
        count = sum(reads.values())
        if total is not None and votes >= MIN_VOTES and votes >= MIN_SHARE * count:
            totals[set_id] = {"total": total, "votes": votes, "reads": count}
        _log.info("set %s: printed total %s (%d of %d reads agree, %d scans read)", set_id, total, votes, count,
                  len(picked))
    return totals


def write_printed_totals(gallery_dir: Path, rows: list["ScanRow"], reader: "TextReader") -> Path:
    """Estimate the printed totals of the sets in `rows` and write them as printed_totals.json."""
    totals = estimate_totals(rows, reader)
    path = Path(gallery_dir) / FILENAME
    document = {"schema": SCHEMA, "method": f"OCR of up to {SAMPLE} scans a set, most common total", "sets": totals}
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    _log.info("printed totals of %d of %d sets written to %s", len(totals), len({r.card.set_id for r in rows}), path)
    return path


def load_printed_totals(gallery_dir: Path) -> dict[str, int]:
    """Read printed_totals.json if present; return set_id -> total (empty without the file)."""
    path = Path(gallery_dir) / FILENAME
    sets = read_sidecar(path, SCHEMA, "sets", dict)
    if sets is None:
        return {}

    totals = {}
    for set_id, entry in sets.items():
        total = entry.get("total") if isinstance(entry, dict) else None
        if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= 999:
            raise GalleryError(f"{path}: set {set_id!r} needs a 'total' between 1 and 999, got {total!r}; "
                               f"{REBUILD}")
        totals[set_id] = total
    return totals
