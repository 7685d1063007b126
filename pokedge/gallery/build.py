"""Building a gallery from reference scans and a cards CSV.

The CSV has at least the columns card_id, name, set_id, number and
image_path (set_name is optional). Image paths may be relative to the scans
folder or to the CSV's folder. Embeddings are computed in chunks that are
saved as they finish, so an interrupted build resumes where it stopped.
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


def build_gallery(rows: list[ScanRow], backend: Backend, out_dir: Path, resume: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Embed every scan with `backend` and write the gallery folder `out_dir`."""
    out_dir = Path(out_dir)
    work = out_dir / ".build"
    key = _build_key(rows, backend)
    if not resume or _read_key(work) != key:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "key").write_text(key)

    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    done = 0
    for n, chunk in enumerate(chunks):
        path = work / f"chunk_{n:05d}.npy"
        if not path.is_file():
            np.save(path, _embed_chunk(chunk, backend))
        done += len(chunk)
        if progress:
            progress(done, len(rows))

    embeddings = np.concatenate([np.load(work / f"chunk_{n:05d}.npy") for n in range(len(chunks))])
    cards = {row.card.card_id: row.card for row in rows}
    save_gallery(out_dir, embeddings, [row.card.card_id for row in rows], cards,
                 producer=backend.contract.model_id, extra=_producer_facts(backend))
    shutil.rmtree(work, ignore_errors=True)
    _log.info("gallery written to %s: %d rows, %d cards", out_dir, len(rows), len(cards))
    return out_dir


def _producer_facts(backend: Backend) -> dict[str, str]:
    facts = {"built_by": "pokedge gallery build"}
    if backend.contract.sha256:
        facts["producer_sha256"] = backend.contract.sha256
    return facts


def _embed_chunk(chunk: list[ScanRow], backend: Backend) -> np.ndarray:
    images = []
    for row in chunk:
        try:
            images.append(read_image(row.image))
        except InputError as exc:
            raise GalleryError(f"reference scan for {row.card.card_id} is unreadable: {exc}") from None
    batch = prepare_batch(images, backend.contract)
    return backend.embed(batch)


def _build_key(rows: list[ScanRow], backend: Backend) -> str:
    digest = hashlib.sha256(backend.contract.model_id.encode())
    for row in rows:
        digest.update(f"{row.card.card_id}\t{row.image}\n".encode())
    return digest.hexdigest()


def _read_key(work: Path) -> str | None:
    try:
        return (work / "key").read_text()
    except OSError:
        return None
