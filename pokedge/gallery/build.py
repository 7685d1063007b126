"""Building a gallery from reference scans and a cards CSV.

The CSV has at least the columns card_id, name, set_id, number and
image_path (set_name is optional). Image paths may be relative to the scans
folder or to the CSV's folder. Embeddings are computed in chunks that are
saved as they finish, so an interrupted build resumes where it stopped.

With `views > 0` each card also gets that many extra rows: embeddings of
synthetic camera views of its scan (glare, blur, low light, tilt and so on),
warped back to the upright card as the pipeline warps a detected quad. The
rows of the clean scans come first, so row i < number of cards is still the
scan of CSV line i; view rows follow, grouped by view.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pokedge.backends.base import Backend
from pokedge.capture.image import read_image
from pokedge.errors import GalleryError, InputError
from pokedge.gallery import blurred as blurred_refs
from pokedge.gallery import printed_totals
from pokedge.gallery.same_art import write_same_art
from pokedge.gallery.store import CardInfo, save_gallery
from pokedge.preprocess import prepare_batch

_log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("card_id", "name", "set_id", "number", "image_path")
CHUNK = 128


@dataclass
class ScanRow:
    card: CardInfo
    image: Path


def read_cards_csv(csv_path: Path, scans_dir: Path | None = None) -> list[ScanRow]:
    """Read the cards CSV and resolve each image path; raise GalleryError naming the row."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise GalleryError(f"{csv_path}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}")
            records = list(reader)
    except FileNotFoundError:
        raise GalleryError(f"cards CSV not found: {csv_path}") from None

    rows = []
    for line, record in enumerate(records, start=2):
        card_id = (record.get("card_id") or "").strip()
        if not card_id:
            raise GalleryError(f"{csv_path}, line {line}: empty card_id")
        image = _resolve_image(record["image_path"], csv_path, scans_dir)
        if image is None:
            raise GalleryError(f"{csv_path}, line {line}: image {record['image_path']!r} for {card_id} not found")
        card = CardInfo(card_id, record["name"].strip(), record["set_id"].strip(), record["number"].strip(),
                        (record.get("set_name") or "").strip())
        rows.append(ScanRow(card, image))
    if not rows:
        raise GalleryError(f"{csv_path} lists no cards")
    return rows


def _resolve_image(value: str, csv_path: Path, scans_dir: Path | None) -> Path | None:
    relative = Path(value)
    bases = [b for b in (scans_dir, csv_path.parent, csv_path.parent.parent) if b is not None]
    for base in bases:
        candidate = relative if relative.is_absolute() else base / relative
        if candidate.is_file():
            return candidate
    if scans_dir is not None and (scans_dir / relative.name).is_file():
        return scans_dir / relative.name
    return None


def _write_totals(out_dir: Path, rows: list[ScanRow], read_totals: bool) -> None:
    from pokedge.ocr import OCR_DIR, TextReader

    (out_dir / printed_totals.FILENAME).unlink(missing_ok=True)
    if not read_totals:
        return
    if not TextReader.available():
        _log.warning("OCR models not found in %s: no printed totals; the number check will trust numbers alone",
                     OCR_DIR)
        return
    printed_totals.write_printed_totals(out_dir, rows, TextReader())


def build_gallery(rows: list[ScanRow], backend: Backend, out_dir: Path, resume: bool = True,
                  progress: Callable[[int, int], None] | None = None, views: int = 0, view_seed: int = 0,
                  read_totals: bool = True, blurred: bool = True,
                  blurred_progress: Callable[[int, int], None] | None = None) -> Path:
    """Embed every scan (and `views` synthetic camera views of it) with `backend`; write the gallery folder.

    With `read_totals` and the OCR models present, the printed set totals
    are read from a sample of the scans as well (printed_totals.json).
    With `blurred`, every scan is also embedded under the blurs of
    `pokedge.gallery.blurred` (blurred.npy and its two companion files).
    """
    out_dir = Path(out_dir)
    work = out_dir / ".build"
    key = _build_key(rows, backend, views, view_seed)
    if not resume or _read_key(work) != key:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "key").write_text(key)

    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    done = 0
    for n, chunk in enumerate(chunks):
        path = work / f"chunk_{n:05d}.npy"
        if not path.is_file():
            np.save(path, _embed_chunk(chunk, backend, views, view_seed, first_row=n * CHUNK))
        done += len(chunk)
        if progress:
            progress(done, len(rows))

    # Each chunk file is [1 + views, len(chunk), D]: the scans, then each view.
    parts = [np.load(work / f"chunk_{n:05d}.npy") for n in range(len(chunks))]
    embeddings = np.concatenate([np.concatenate([p[v] for p in parts]) for v in range(1 + views)])
    card_ids = [row.card.card_id for row in rows] * (1 + views)
    cards = {row.card.card_id: row.card for row in rows}
    extra = {**_producer_facts(backend), "views_per_card": views, "view_seed": view_seed}
    save_gallery(out_dir, embeddings, card_ids, cards, producer=backend.contract.model_id, extra=extra)
    write_same_art(out_dir, rows)
    _write_totals(out_dir, rows, read_totals)
    _write_blurred(out_dir, rows, backend, blurred, blurred_progress)
    shutil.rmtree(work, ignore_errors=True)
    _log.info("gallery written to %s: %d rows, %d cards", out_dir, len(card_ids), len(cards))
    return out_dir


def _write_blurred(out_dir: Path, rows: list[ScanRow], backend: Backend, enabled: bool,
                   progress: Callable[[int, int], None] | None) -> None:
    """Write the blurred references of the first scan of every card, or remove old ones when disabled."""
    for name in blurred_refs.FILES:
        (out_dir / name).unlink(missing_ok=True)
    if not enabled:
        return
    first: dict[str, ScanRow] = {}
    for row in rows:
        first.setdefault(row.card.card_id, row)
    blurred_refs.build_blurred([row.image for row in first.values()], list(first), backend, out_dir, progress)


def _producer_facts(backend: Backend) -> dict[str, str]:
    facts = {"built_by": "pokedge gallery build"}
    # A quantized copy records its fp32 model; the gallery names that model's file.
    model_sha256 = backend.contract.derived_from or backend.contract.sha256
    if model_sha256:
        facts["producer_sha256"] = model_sha256
    return facts


def _embed_chunk(chunk: list[ScanRow], backend: Backend, views: int, view_seed: int, first_row: int) -> np.ndarray:
    """Return [1 + views, len(chunk), D] embeddings: the scans, then each synthetic view."""
    images = []
    for row in chunk:
        try:
            images.append(read_image(row.image))
        except InputError as exc:
            raise GalleryError(f"reference scan for {row.card.card_id} is unreadable: {exc}") from None

    sets = [images]
    for view in range(views):
        sets.append([_camera_view(image, view_seed, first_row + i, view) for i, image in enumerate(images)])
    return np.stack([backend.embed(prepare_batch(group, backend.contract)) for group in sets])


def _camera_view(scan: np.ndarray, seed: int, row: int, view: int) -> np.ndarray:
    """Render the scan into a random synthetic scene and warp its true quad back to an upright card."""
    from pokedge import synth
    from pokedge.detection.geometry import warp_card

    rng = np.random.default_rng([seed, row, view])
    scene = synth.render_scene(scan, rng, frame_size=(960, 720))
    return warp_card(scene.frame, scene.quads[0])


def _build_key(rows: list[ScanRow], backend: Backend, views: int, view_seed: int) -> str:
    digest = hashlib.sha256(f"{backend.contract.model_id}\t{views}\t{view_seed}\n".encode())
    for row in rows:
        digest.update(f"{row.card.card_id}\t{row.image}\n".encode())
    return digest.hexdigest()


def _read_key(work: Path) -> str | None:
    try:
        return (work / "key").read_text()
    except OSError:
        return None
