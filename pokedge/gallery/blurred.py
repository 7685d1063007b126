"""Blurred references: each reference scan embedded again under a few camera blurs.

A card seen through a shaking hand or an unfocused lens embeds far from its
clean scan. In synthetic scenes with motion blur, the true card's cosine
fell to 0.35-0.57, where cards missing from the gallery land too, so the
recognizer returns unknown. Blurred the same way, the card's own scan comes
back close (about 0.55 to 0.8 in the scenes measured), while the scans of
other cards move little. `pokedge.recognition.blur_check` uses these
rows to give such a card a second decision.

The blurs are applied to the scan stretched to the detector's warp size,
the same pixels a warped camera crop has. Streaks of 12 px at three angles
and two defocus disks gave nearly the gains of 20 blurs in synthetic
scenes (docs/accuracy.md).

Files beside the gallery, row-aligned with its cards (one row per card, in
the order of their first row in embeddings.npy):

- blurred.npy: int8 [cards, blurs, dim], each vector scaled to the int8 range
- blurred_scales.npy: float32 [cards, blurs], the factor back to unit norm
- blurred.json: schema, producer model id, the blurs and the card count
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from pokedge import synth
from pokedge.backends.base import Backend
from pokedge.capture.image import read_image
from pokedge.detection.types import CARD_HEIGHT, CARD_WIDTH
from pokedge.errors import GalleryError, InputError
from pokedge.gallery.sidecar import read_sidecar
from pokedge.preprocess import prepare_batch

_log = logging.getLogger(__name__)

SCHEMA = "pokedge.blurred/1"
VECTORS = "blurred.npy"
SCALES = "blurred_scales.npy"
MANIFEST = "blurred.json"
FILES = (VECTORS, SCALES, MANIFEST)

# (kind, size, angle in degrees): a straight motion streak of `size` px, or a defocus disk of radius `size` px.
BLURS = (("motion", 12.0, 0.0), ("motion", 12.0, 60.0), ("motion", 12.0, 120.0),
         ("defocus", 2.0, 0.0), ("defocus", 4.0, 0.0))
CHUNK = 64  # scans embedded per backend call group


def blur_kernel(kind: str, size: float, angle: float) -> np.ndarray:
    """Return the normalized float32 kernel of one blur, drawn as the synthetic scenes draw theirs."""
    if kind == "motion":
        return synth.motion_kernel(size, angle)
    if kind == "defocus":
        return synth.disk_kernel(size)
    raise ValueError(f"unknown blur kind {kind!r}; expected 'motion' or 'defocus'")


def blurred_views(scan: np.ndarray, blurs=BLURS) -> list[np.ndarray]:
    """Return the scan at warp size under each blur, as BGR uint8 images."""
    card = cv2.resize(scan, (CARD_WIDTH, CARD_HEIGHT), interpolation=cv2.INTER_AREA)
    return [cv2.filter2D(card, -1, blur_kernel(*blur)) for blur in blurs]


@dataclass
class BlurredRefs:
    """The blurred embeddings of a gallery's cards, looked up by card id."""

    vectors: np.ndarray  # int8 [cards, blurs, dim]
    scales: np.ndarray  # float32 [cards, blurs]
    card_rows: dict[str, int]  # card id -> first axis of vectors

    def similarities(self, card_ids: list[str], query: np.ndarray) -> np.ndarray:
        """Return the cosine of `query` (unit norm) to each blurred view of each card: float32 [cards, blurs].

        A card without blurred rows gets -1 for each blur.
        """
        out = np.full((len(card_ids), self.vectors.shape[1]), -1.0, dtype=np.float32)
        query = np.asarray(query, dtype=np.float32)
        for i, card_id in enumerate(card_ids):
            row = self.card_rows.get(card_id)
            if row is not None:
                out[i] = (self.vectors[row].astype(np.float32) @ query) * self.scales[row]
        return out

    def subset(self, card_ids: set[str]) -> BlurredRefs:
        """Return the rows of the given card ids only, in memory."""
        chosen = sorted((row, card_id) for card_id, row in self.card_rows.items() if card_id in card_ids)
        rows = [row for row, _ in chosen]
        return BlurredRefs(np.ascontiguousarray(self.vectors[rows]), np.ascontiguousarray(self.scales[rows]),
                           {card_id: n for n, (_, card_id) in enumerate(chosen)})


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale unit vectors [..., dim] to int8 with one float32 factor per vector."""
    peak = np.maximum(np.abs(vectors).max(axis=-1), 1e-12)
    values = np.clip(np.rint(vectors / peak[..., None] * 127.0), -127, 127).astype(np.int8)
    return values, (peak / 127.0).astype(np.float32)


def build_blurred(images: list[Path], card_ids: list[str], backend: Backend, out_dir: Path,
                  progress: Callable[[int, int], None] | None = None) -> None:
    """Embed every scan under each blur of BLURS and write the three files into the gallery folder."""
    out_dir = Path(out_dir)
    dim = backend.contract.output.dim
    vectors = np.zeros((len(images), len(BLURS), dim), dtype=np.int8)
    scales = np.zeros((len(images), len(BLURS)), dtype=np.float32)

    for start in range(0, len(images), CHUNK):
        stop = min(start + CHUNK, len(images))
        views = []
        for path, card_id in zip(images[start:stop], card_ids[start:stop]):
            try:
                views += blurred_views(read_image(path))
            except InputError as exc:
                raise GalleryError(f"reference scan for {card_id} is unreadable: {exc}") from None
        embedded = backend.embed(prepare_batch(views, backend.contract)).reshape(stop - start, len(BLURS), dim)
        vectors[start:stop], scales[start:stop] = quantize(embedded)
        if progress:
            progress(stop, len(images))

    np.save(out_dir / VECTORS, vectors)
    np.save(out_dir / SCALES, scales)
    manifest = {"schema": SCHEMA, "producer": backend.contract.model_id, "cards": len(images),
                "blurs": [list(blur) for blur in BLURS]}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    _log.info("blurred references written to %s: %d cards x %d blurs", out_dir, len(images), len(BLURS))


def load_blurred(gallery_dir: Path, card_order: list[str], producer: str, dim: int) -> BlurredRefs | None:
    """Load the blurred references of a gallery folder, or None when it has none.

    `card_order` is the gallery's card ids in the order of their first row.
    Files that do not fit the gallery raise GalleryError naming the file.
    """
    gallery_dir = Path(gallery_dir)
    present = [name for name in FILES if (gallery_dir / name).is_file()]
    if not present:
        return None
    if len(present) < len(FILES):
        missing = sorted(set(FILES) - set(present))
        raise GalleryError(f"{gallery_dir} has {', '.join(present)} but not {', '.join(missing)}; "
                           f"re-run 'pokedge gallery build' or delete the {', '.join(present)}")

    blurs = read_sidecar(gallery_dir / MANIFEST, SCHEMA, "blurs", list)
    built_by = read_sidecar(gallery_dir / MANIFEST, SCHEMA, "producer", str)
    if built_by != producer:
        raise GalleryError(f"{gallery_dir / MANIFEST} is from model {built_by!r}, the gallery from "
                           f"{producer!r}; re-run 'pokedge gallery build'")
    try:
        vectors = np.load(gallery_dir / VECTORS, mmap_mode="r")
        scales = np.load(gallery_dir / SCALES)
    except (OSError, ValueError) as exc:
        raise GalleryError(f"cannot read the blurred references in {gallery_dir}: {exc}; "
                           f"re-run 'pokedge gallery build'") from None

    expected = (len(card_order), len(blurs), dim)
    if vectors.dtype != np.int8 or vectors.shape != expected or scales.shape != expected[:2]:
        raise GalleryError(f"{gallery_dir / VECTORS} is {vectors.dtype} {vectors.shape} and {SCALES} is "
                           f"{scales.shape}, expected int8 {expected} for this gallery; re-run 'pokedge gallery build'")
    return BlurredRefs(vectors, scales.astype(np.float32), {card_id: n for n, card_id in enumerate(card_order)})

