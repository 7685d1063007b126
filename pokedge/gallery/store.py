"""Reference gallery on disk, in the original project's database format.

A gallery folder holds:

- `embeddings.npy`: float32 [N, D], one row per reference scan, unit norm.
- `index.json`: object mapping the row number (as a string) to a card id.
- `metadata.json`: object keyed by card id: name, set, number and more.
- `gallery.json`: pokedge's gallery manifest; names the model that produced
  the embeddings (`producer`), the dimension and the row count.
- `thresholds.json` (optional): the calibrated unknown-card thresholds.

The first three files are what the original tooling writes, so a gallery
built on a device and one built by the training side are interchangeable.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pokedge.errors import GalleryError

_log = logging.getLogger(__name__)

SCHEMA = "pokedge.gallery/1"
EMBEDDINGS = "embeddings.npy"
INDEX = "index.json"
METADATA = "metadata.json"
MANIFEST = "gallery.json"
THRESHOLDS = "thresholds.json"


@dataclass
class CardInfo:
    card_id: str
    name: str
    set_id: str
    number: str
    set_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """Return the entry in the original metadata.json shape (`set` is the set code)."""
        entry = {"id": self.card_id, "name": self.name, "set": self.set_id, "number": self.number}
        if self.set_name:
            entry["set_name"] = self.set_name
        entry.update(self.extra)
        return entry


@dataclass
class Gallery:
    """Reference embeddings with their card ids and card facts."""

    embeddings: np.ndarray
    card_ids: list[str]
    cards: dict[str, CardInfo]
    manifest: dict[str, Any]
    path: Path | None = None
    duplicate_ids: int = 0

    @property
    def producer(self) -> str:
        return str(self.manifest.get("producer", "unknown"))

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.card_ids)


def load_gallery(path: Path | str, mmap: bool = False) -> Gallery:
    """Load and validate a gallery folder; raise GalleryError naming the file and the fault."""
    path = Path(path)
    if not path.is_dir():
        raise GalleryError(f"gallery folder not found: {path}")

    embeddings = _load_embeddings(path / EMBEDDINGS, mmap)
    index = _load_json(path / INDEX, dict)
    metadata = _load_json(path / METADATA, dict)
    manifest = _load_manifest(path / MANIFEST, embeddings)

    card_ids = _rows_to_ids(index, len(embeddings), path / INDEX)
    cards = _cards_from_metadata(metadata, card_ids, path / METADATA)
    duplicates = len(card_ids) - len(set(card_ids))
    if duplicates:
        _log.info("gallery %s has %d extra rows for card ids already present (%d rows, %d cards)",
                  path, duplicates, len(card_ids), len(set(card_ids)))

    norms = np.linalg.norm(embeddings[: min(len(embeddings), 4096)], axis=1)
    if len(norms) and not np.allclose(norms, 1.0, atol=1e-3):
        raise GalleryError(
            f"{path / EMBEDDINGS}: rows are not unit norm (norms {norms.min():.3f} to {norms.max():.3f}); "
            f"rebuild the gallery with 'pokedge gallery build'"
        )

    return Gallery(np.asarray(embeddings), card_ids, cards, manifest, path, duplicates)


def check_compatible(gallery: Gallery, producer: str, dim: int, model_sha256: str | None = None) -> None:
    """Reject a gallery whose embeddings come from another model or have another size.

    When both the gallery manifest and the caller know the model file's
    sha256, they must agree too: a model rebuilt under the same id is another model.
    """
    if gallery.dim != dim:
        raise GalleryError(
            f"gallery {gallery.path} contains {gallery.dim}-dim embeddings made by {gallery.producer}, "
            f"but model {producer} outputs {dim} values; use the gallery built for this model"
        )
    if gallery.producer != producer:
        raise GalleryError(
            f"gallery {gallery.path} was built by model {gallery.producer}, but the active model is "
            f"{producer}; rebuild it with 'pokedge gallery build' or select the matching model"
        )
    built_with = gallery.manifest.get("producer_sha256")
    if model_sha256 and built_with and built_with != model_sha256:
        raise GalleryError(
            f"gallery {gallery.path} was built by model {producer} with sha256 {built_with[:12]}..., but the model "
            f"file has sha256 {model_sha256[:12]}...; rebuild the gallery with 'pokedge gallery build'"
        )


def save_gallery(path: Path | str, embeddings: np.ndarray, card_ids: list[str], cards: dict[str, CardInfo],
                 producer: str, extra: dict[str, Any] | None = None) -> Path:
    """Write a gallery folder; each file is written to a temporary name and renamed into place."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(embeddings) != len(card_ids):
        raise GalleryError(f"{len(embeddings)} embeddings but {len(card_ids)} card ids")

    missing = sorted(set(card_ids) - set(cards))
    if missing:
        raise GalleryError(f"no card facts for {len(missing)} ids, for example {missing[:3]}")

    manifest = {
        "schema": SCHEMA,
        "producer": producer,
        "dim": int(embeddings.shape[1]),
        "count": len(card_ids),
        "cards": len(set(card_ids)),
        "metric": "inner_product",
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(extra or {}),
    }
    index = {str(row): card_id for row, card_id in enumerate(card_ids)}
    metadata = {card_id: cards[card_id].to_metadata() for card_id in sorted(set(card_ids))}

    _atomic_write(path / EMBEDDINGS, lambda f: np.save(f, embeddings))
    _atomic_write_json(path / INDEX, index)
    _atomic_write_json(path / METADATA, metadata)
    _atomic_write_json(path / MANIFEST, manifest)
    return path


def _load_embeddings(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise GalleryError(f"gallery file missing: {path}")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise GalleryError(f"{path} is not a readable .npy array ({exc}); re-download or rebuild the gallery") from None
    if array.ndim != 2 or array.dtype != np.float32 or array.shape[0] == 0:
        raise GalleryError(f"{path} must be a non-empty float32 [N, D] array, got {array.dtype} {list(array.shape)}")
    if not np.isfinite(array[: min(len(array), 4096)]).all():
        raise GalleryError(f"{path} contains NaN or infinite values; rebuild the gallery")
    return array


def _load_json(path: Path, kind: type) -> Any:
    if not path.is_file():
        raise GalleryError(f"gallery file missing: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, kind):
        raise GalleryError(f"{path} must hold a JSON {kind.__name__}, got {type(data).__name__}")
    return data


def _load_manifest(path: Path, embeddings: np.ndarray) -> dict[str, Any]:
    manifest = _load_json(path, dict)
    if manifest.get("schema") != SCHEMA:
        raise GalleryError(f"{path}: unsupported schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    if not isinstance(manifest.get("producer"), str) or not manifest["producer"]:
        raise GalleryError(f"{path}: missing field 'producer' (the model that made the embeddings)")
    dim = manifest.get("dim")
    if dim != embeddings.shape[1]:
        raise GalleryError(f"{path}: field 'dim' is {dim!r}, but {EMBEDDINGS} has {embeddings.shape[1]} columns")
    count = manifest.get("count")
    if count is not None and count != embeddings.shape[0]:
        raise GalleryError(f"{path}: field 'count' is {count!r}, but {EMBEDDINGS} has {embeddings.shape[0]} rows")
    return manifest


def _rows_to_ids(index: dict[str, Any], rows: int, path: Path) -> list[str]:
    if len(index) != rows:
        raise GalleryError(f"{path} maps {len(index)} rows, but {EMBEDDINGS} has {rows}; the files are from different builds")
    card_ids: list[str] = []
    for row in range(rows):
        card_id = index.get(str(row))
        if not isinstance(card_id, str) or not card_id:
            raise GalleryError(f"{path}: row {row} has no card id")
        card_ids.append(card_id)
    return card_ids


def _cards_from_metadata(metadata: dict[str, Any], card_ids: list[str], path: Path) -> dict[str, CardInfo]:
    cards: dict[str, CardInfo] = {}
    missing = [card_id for card_id in dict.fromkeys(card_ids) if card_id not in metadata]
    if missing:
        raise GalleryError(f"{path} has no entry for {len(missing)} card ids, for example {missing[:3]}")

    for card_id in dict.fromkeys(card_ids):
        entry = metadata[card_id]
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise GalleryError(f"{path}: entry {card_id!r} needs at least a 'name'")
        set_id, _, number = card_id.rpartition("-")
        known = {"id", "name", "set", "number", "set_name"}
        cards[card_id] = CardInfo(
            card_id=card_id,
            name=entry["name"],
            set_id=str(entry.get("set") or set_id),
            number=str(entry.get("number") or number),
            set_name=str(entry.get("set_name", "")),
            extra={k: v for k, v in entry.items() if k not in known},
        )
    return cards


def duplicate_summary(card_ids: list[str]) -> Counter:
    """Count rows per card id for ids that appear more than once."""
    return Counter({k: v for k, v in Counter(card_ids).items() if v > 1})


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")))
