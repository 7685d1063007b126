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

import hashlib
import json
import logging
import mmap as mmap_module
import os
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pokedge.errors import GalleryError
from pokedge.gallery.blurred import BlurredRefs, load_blurred
from pokedge.gallery.printed_totals import load_printed_totals
from pokedge.gallery.same_art import load_same_art

_log = logging.getLogger(__name__)

SCHEMA = "pokedge.gallery/1"
EMBEDDINGS = "embeddings.npy"
INDEX = "index.json"
METADATA = "metadata.json"
MANIFEST = "gallery.json"
THRESHOLDS = "thresholds.json"

# Bytes of embedding rows read per block while checking and hashing a mapped file.
ROW_BLOCK_BYTES = 4 << 20


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


class CardTable(Mapping):
    """Card facts by card id, stored as one UTF-8 blob with a row per card; each lookup builds a CardInfo.

    A loaded gallery keeps its facts here instead of as one CardInfo per card:
    for the 17,592-card benchmark catalog that is about 3 MB in place of about
    8 MB of small Python objects (CPython 3.11, x86_64). A row is "S" and the
    name, set id, number and set name joined by ASCII unit separators, or,
    when the card has extra fields or a field contains that separator, "J"
    and a JSON array of the five fields.
    """

    def __init__(self, cards: Iterable[CardInfo] = ()):
        self._positions: dict[str, int] = {}
        rows: list[bytes] = []
        for card in cards:
            self._positions[card.card_id] = len(rows)
            rows.append(_encode_card(card.name, card.set_id, card.number, card.set_name, card.extra))
        self._blob = b"".join(rows)
        self._ends = np.cumsum([len(row) for row in rows], dtype=np.int64)

    def __getitem__(self, card_id: str) -> CardInfo:
        position = self._positions[card_id]
        start = int(self._ends[position - 1]) if position else 0
        row = self._blob[start : int(self._ends[position])].decode("utf-8")
        if row[0] == "S":
            name, set_id, number, set_name = row[1:].split(_UNIT_SEPARATOR)
            return CardInfo(card_id, name, set_id, number, set_name)
        name, set_id, number, set_name, extra = json.loads(row[1:])
        return CardInfo(card_id, name, set_id, number, set_name, extra)

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)

    def __contains__(self, card_id: object) -> bool:
        return card_id in self._positions


_UNIT_SEPARATOR = "\x1f"


def _encode_card(name: str, set_id: str, number: str, set_name: str, extra: dict[str, Any]) -> bytes:
    fields = (name, set_id, number, set_name)
    if not extra and not any(_UNIT_SEPARATOR in text for text in fields):
        return ("S" + _UNIT_SEPARATOR.join(fields)).encode("utf-8")
    return ("J" + json.dumps([*fields, extra], ensure_ascii=False, separators=(",", ":"))).encode("utf-8")


@dataclass
class Gallery:
    """Reference embeddings with their card ids and card facts."""

    embeddings: np.ndarray
    card_ids: list[str]
    cards: Mapping[str, CardInfo]
    manifest: dict[str, Any]
    path: Path | None = None
    duplicate_ids: int = 0
    # embeddings_digest() of the rows as loaded, so the index cache need not read them again
    digest: str | None = None
    row_file: RowFile | None = field(default=None, repr=False)  # set when `embeddings` maps a file
    # card_id -> the other prints that share its artwork (same_art.json; empty without it)
    same_art: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # set_id -> the total printed after the collector number (printed_totals.json; empty without it)
    printed_totals: Mapping[str, int] = field(default_factory=dict)
    # each card's embeddings under a few camera blurs (blurred.npy; None without it)
    blurred: BlurredRefs | None = field(default=None, repr=False)

    def rows(self, numbers: np.ndarray) -> np.ndarray:
        """Return the embedding rows at `numbers` (row numbers of any shape) as float32 [*numbers.shape, D].

        A mapped gallery reads them from its file, so that rows touched at
        random do not map their neighbours into the process (see RowFile).
        """
        numbers = np.asarray(numbers, dtype=np.int64)
        if self.row_file is not None:
            return self.row_file.read(numbers)
        return np.asarray(self.embeddings[numbers], dtype=np.float32)

    @property
    def producer(self) -> str:
        return str(self.manifest.get("producer", "unknown"))

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.card_ids)


class RowFile:
    """Reader of chosen rows of a float32 .npy file, with one pread per distinct row.

    A page fault in a memory map of a file that is in the page cache maps up
    to 64 KiB around the faulting page (Linux fault-around). madvise
    MADV_RANDOM did not stop it on kernel 6.18. Re-scoring 6 queries with 64
    candidates each from the map of the 17,592-row catalog added 23 MB of
    RSS for 1.2 MB of rows, which reading the rows avoids.
    """

    def __init__(self, path: Path, descriptor: int, offset: int, rows: int, dim: int):
        self._path = path
        # The file the map was made from, even if its path is replaced later. It is
        # closed by close() or when the RowFile is garbage collected.
        self._descriptor = descriptor
        self._closer = weakref.finalize(self, os.close, descriptor)
        self._offset = offset
        self._rows = rows
        self._dim = dim

    def read(self, numbers: np.ndarray) -> np.ndarray:
        """Return float32 rows [*numbers.shape, D]; raise IndexError for a row number out of range."""
        if numbers.size and (numbers.min() < 0 or numbers.max() >= self._rows):
            raise IndexError(f"row numbers must be in 0..{self._rows - 1}, got {numbers.min()}..{numbers.max()}")
        distinct, positions = np.unique(numbers, return_inverse=True)
        row_bytes = self._dim * 4
        # One pread a row into bytes, joined once: 40 % faster than preadv into array rows.
        data = b"".join([os.pread(self._descriptor, row_bytes, self._offset + row * row_bytes)
                         for row in distinct.tolist()])
        if len(data) != len(distinct) * row_bytes:
            raise GalleryError(f"{self._path} ended before row {distinct.max()}; re-download or rebuild the gallery")
        found = np.frombuffer(data, dtype=np.float32).reshape(len(distinct), self._dim)
        return found[positions.reshape(numbers.shape)]

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Read the consecutive rows from `start` into `out`, a C-contiguous float32 [count, D] array."""
        view = memoryview(out).cast("B")
        if os.preadv(self._descriptor, [view], self._offset + start * self._dim * 4) != view.nbytes:
            raise GalleryError(f"{self._path} ended before row {start + len(out)}; "
                               f"re-download or rebuild the gallery")

    def close(self) -> None:
        self._closer()


def map_embeddings(path: Path) -> tuple[np.ndarray, RowFile]:
    """Map a C-order float32 .npy file read-only; return the [N, D] array and a RowFile on the same file.

    Raise GalleryError when the file is not such an array.
    """
    try:
        with open(path, "rb") as handle:
            shape, fortran_order, dtype = _read_npy_header(handle)
            offset = handle.tell()
            if len(shape) != 2 or dtype != np.float32 or fortran_order or shape[0] == 0:
                order = "Fortran order " if fortran_order else ""
                raise GalleryError(f"{path} must be a non-empty C-order float32 [N, D] array, got {order}{dtype} "
                                   f"{list(shape)}")
            size = shape[0] * shape[1] * 4
            if os.fstat(handle.fileno()).st_size < offset + size:
                raise GalleryError(f"{path} is truncated: its header declares {shape[0]}x{shape[1]} rows and columns; "
                                   f"re-download or rebuild the gallery")
            mapped = mmap_module.mmap(handle.fileno(), offset + size, access=mmap_module.ACCESS_READ)
            row_file = RowFile(path, os.dup(handle.fileno()), offset, shape[0], shape[1])
    except (ValueError, OSError, EOFError) as exc:
        raise GalleryError(f"{path} is not a readable .npy array ({exc}); re-download or rebuild the gallery") from None

    array = np.frombuffer(mapped, dtype=np.float32, count=shape[0] * shape[1], offset=offset).reshape(shape)
    return array, row_file


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Return (shape, Fortran order, dtype) from a .npy header, leaving `handle` at the first data byte."""
    if np.lib.format.read_magic(handle) == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def load_gallery(path: Path | str, mmap: bool = True) -> Gallery:
    """Load and validate a gallery folder; raise GalleryError naming the file and the fault.

    With `mmap` (the default) the embeddings stay a read-only memory map of
    `embeddings.npy`, and only rows that are read count toward the process's
    RSS. An approximate index re-scores a few dozen rows per query, while
    exact search reads them all. Every row is checked while the file is read
    in blocks, so loading does not map the whole file into memory. A file in
    Fortran order, or a platform without os.preadv (Windows), gets the rows
    read into memory instead.
    """
    path = Path(path)
    if not path.is_dir():
        raise GalleryError(f"gallery folder not found: {path}")

    embeddings, digest, row_file = _load_embeddings(path / EMBEDDINGS, mmap)
    index = _load_json(path / INDEX, dict)
    metadata = _load_json(path / METADATA, dict)
    manifest = _load_manifest(path / MANIFEST, embeddings)

    card_ids = _rows_to_ids(index, len(embeddings), path / INDEX)
    cards = _cards_from_metadata(metadata, card_ids, path / METADATA)
    duplicates = len(card_ids) - len(set(card_ids))
    if duplicates:
        _log.info("gallery %s has %d extra rows for card ids already present (%d rows, %d cards)",
                  path, duplicates, len(card_ids), len(set(card_ids)))

    same_art = load_same_art(path, cards)
    totals = load_printed_totals(path)
    producer = str(manifest.get("producer", "unknown"))
    blurred = load_blurred(path, list(dict.fromkeys(card_ids)), producer, int(embeddings.shape[1]))
    return Gallery(embeddings, card_ids, cards, manifest, path, duplicates, digest, row_file, same_art, totals,
                   blurred)


def embeddings_digest(embeddings: np.ndarray) -> str:
    """Return the blake2b digest (hex, 16 bytes) of the rows' float32 bytes in row order."""
    digest = hashlib.blake2b(digest_size=16)
    for _, block in _array_blocks(embeddings):
        digest.update(memoryview(block).cast("B"))
    return digest.hexdigest()


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


def _load_embeddings(path: Path, mmap: bool) -> tuple[np.ndarray, str, RowFile | None]:
    """Open the embedding rows, check that every row is finite and unit norm; return them, their digest and RowFile."""
    if not path.is_file():
        raise GalleryError(f"gallery file missing: {path}")
    row_file = None
    # RowFile needs os.pread and os.preadv, which Windows lacks; there the rows are read into memory.
    if mmap and hasattr(os, "preadv") and not _fortran_order(path):
        array, row_file = map_embeddings(path)
        blocks = _file_blocks(path, row_file, array)
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise GalleryError(f"{path} is not a readable .npy array ({exc}); "
                               f"re-download or rebuild the gallery") from None
        if array.ndim != 2 or array.dtype != np.float32 or array.shape[0] == 0:
            raise GalleryError(f"{path} must be a non-empty float32 [N, D] array, got {array.dtype} "
                               f"{list(array.shape)}")
        blocks = _array_blocks(array)

    digest = hashlib.blake2b(digest_size=16)
    try:
        for start, block in blocks:
            _check_rows(path, start, block)
            digest.update(memoryview(block).cast("B"))
    except GalleryError:
        if row_file is not None:
            row_file.close()
        raise
    return array, digest.hexdigest(), row_file


def _fortran_order(path: Path) -> bool:
    """Return True when a .npy header says Fortran order; such a file is read into memory, not mapped."""
    try:
        with open(path, "rb") as handle:
            return bool(_read_npy_header(handle)[1])
    except (ValueError, OSError, EOFError):
        return False  # map_embeddings reports the fault


def _check_rows(path: Path, start: int, block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise GalleryError(f"{path} contains NaN or infinite values in rows {start} to {start + len(block) - 1}; "
                           f"rebuild the gallery")
    norms = np.linalg.norm(block, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise GalleryError(
            f"{path}: rows are not unit norm (norms {norms.min():.3f} to {norms.max():.3f} in rows {start} to "
            f"{start + len(block) - 1}); rebuild the gallery with 'pokedge gallery build'"
        )


def _rows_per_block(array: np.ndarray) -> int:
    return max(1, ROW_BLOCK_BYTES // max(1, array.shape[1] * array.itemsize))


def _array_blocks(array: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, C-contiguous float32 rows) blocks of an in-memory array."""
    step = _rows_per_block(array)
    for start in range(0, len(array), step):
        yield start, np.ascontiguousarray(array[start : start + step], dtype=np.float32)


def _file_blocks(path: Path, row_file: RowFile, array: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield the rows of a mapped .npy file in blocks read into one reused buffer.

    Reading the file, not the map, keeps the checked pages out of this
    process's RSS; they stay in the kernel's page cache.
    """
    step = _rows_per_block(array)
    buffer = np.empty((step, array.shape[1]), dtype=np.float32)
    for start in range(0, len(array), step):
        block = buffer[: min(step, len(array) - start)]
        row_file.read_into(start, block)
        yield start, block


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


def _cards_from_metadata(metadata: dict[str, Any], card_ids: list[str], path: Path) -> CardTable:
    missing = [card_id for card_id in dict.fromkeys(card_ids) if card_id not in metadata]
    if missing:
        raise GalleryError(f"{path} has no entry for {len(missing)} card ids, for example {missing[:3]}")
    return CardTable(_card_facts(metadata, card_ids, path))


def _card_facts(metadata: dict[str, Any], card_ids: list[str], path: Path) -> Iterator[CardInfo]:
    known = {"id", "name", "set", "number", "set_name"}
    for card_id in dict.fromkeys(card_ids):
        entry = metadata[card_id]
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise GalleryError(f"{path}: entry {card_id!r} needs at least a 'name'")
        set_id, _, number = card_id.rpartition("-")
        yield CardInfo(
            card_id=card_id,
            name=entry["name"],
            set_id=str(entry.get("set") or set_id),
            number=str(entry.get("number") or number),
            set_name=str(entry.get("set_name", "")),
            extra={k: v for k, v in entry.items() if k not in known},
        )


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
