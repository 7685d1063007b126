"""Parity between the ONNX model and its HEF, and the gallery rule that depends on it.

A gallery's embeddings must come from the model that embeds the queries. The
INT8 HEF is a compiled copy of the ONNX model, so a gallery built with one may
serve the other only when a parity record shows that the two agree. The
record compares the same sample crops embedded on both and passes when every
cosine exceeds MIN_COSINE. `pokedge parity` writes
that record as JSON next to the HEF (`<hef stem>.parity.json`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pokedge.contract import ModelContract, file_sha256
from pokedge.errors import GalleryError
from pokedge.gallery.store import Gallery, check_compatible

_log = logging.getLogger(__name__)

SCHEMA = "pokedge.parity/1"
RECORD_SUFFIX = ".parity.json"
# The original project's HEF-vs-ONNX check passed when every cosine exceeded 0.99.
MIN_COSINE = 0.99


@dataclass
class ParityRecord:
    """Agreement of a HEF with the ONNX model it was compiled from, measured on sample crops."""

    reference_model_id: str
    candidate_model_id: str
    count: int
    mean_cosine: float
    min_cosine: float
    top1_agreement: float
    top1_against: str
    passed: bool
    min_required: float = MIN_COSINE
    hef_file: str = ""
    hef_sha256: str | None = None
    hailo_encoding: str | None = None
    hailort_version: str | None = None
    created_at: str = ""
    worst_samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, names: list[str] | None = None,
                       gallery: Gallery | None = None) -> dict[str, Any]:
    """Compare two [N, D] unit-norm embedding sets row by row.

    Top-1 agreement is the share of rows whose nearest gallery card is the same
    for both sets. Without a gallery it is the share of candidate rows whose
    nearest reference row is their own, which is self-retrieval among the samples.
    """
    if reference.shape != candidate.shape or reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"parity needs two non-empty [N, D] arrays of one shape, got {reference.shape} and "
                         f"{candidate.shape}")
    cosines = np.sum(reference * candidate, axis=1)

    if gallery is not None and gallery.dim == reference.shape[1]:
        rows = np.asarray(gallery.embeddings, dtype=np.float32)
        reference_top = [gallery.card_ids[i] for i in np.argmax(reference @ rows.T, axis=1)]
        candidate_top = [gallery.card_ids[i] for i in np.argmax(candidate @ rows.T, axis=1)]
        agreement = float(np.mean([a == b for a, b in zip(reference_top, candidate_top)]))
        against = f"gallery {gallery.path} ({len(gallery)} rows)"
    else:
        nearest = np.argmax(candidate @ reference.T, axis=1)
        agreement = float(np.mean(nearest == np.arange(len(reference))))
        against = f"the {len(reference)} samples themselves"

    order = np.argsort(cosines)[: min(5, len(cosines))]
    worst = [{"sample": names[i] if names else str(i), "cosine": round(float(cosines[i]), 6)} for i in order]
    return {
        "cosines": cosines,
        "mean_cosine": float(np.mean(cosines)),
        "min_cosine": float(np.min(cosines)),
        "top1_agreement": agreement,
        "top1_against": against,
        "worst_samples": worst,
    }


def build_record(reference_contract: ModelContract, candidate_contract: ModelContract, stats: dict[str, Any],
                 hailort_version: str | None = None) -> ParityRecord:
    """Make the record of one parity run; it passes when every cosine exceeds MIN_COSINE."""
    hef_path = candidate_contract.model_path
    return ParityRecord(
        reference_model_id=reference_contract.model_id,
        candidate_model_id=candidate_contract.model_id,
        count=int(len(stats["cosines"])),
        mean_cosine=round(stats["mean_cosine"], 6),
        min_cosine=round(stats["min_cosine"], 6),
        top1_agreement=round(stats["top1_agreement"], 6),
        top1_against=stats["top1_against"],
        passed=bool(stats["min_cosine"] > MIN_COSINE),
        hef_file=hef_path.name,
        hef_sha256=file_sha256(hef_path) if hef_path.is_file() else None,
        hailo_encoding=candidate_contract.input.hailo_encoding,
        hailort_version=hailort_version,
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        worst_samples=stats["worst_samples"],
    )


def record_path(hef_contract: ModelContract) -> Path:
    """Return the path of a HEF's parity record: beside the HEF, named `<hef stem>.parity.json`."""
    hef = hef_contract.model_path
    return hef.with_name(hef.stem + RECORD_SUFFIX)


def save_record(record: ParityRecord, path: Path) -> Path:
    """Write the record atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_record(path: Path) -> ParityRecord | None:
    """Read a parity record; None when it is missing or unreadable (logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _log.warning("ignoring unreadable parity record %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        _log.warning("ignoring parity record %s: schema %r, expected %r", path,
                     data.get("schema") if isinstance(data, dict) else None, SCHEMA)
        return None
    data.pop("schema")
    try:
        return ParityRecord(**data)
    except TypeError as exc:
        _log.warning("ignoring parity record %s: %s", path, exc)
        return None


def find_record(model_dir: Path, model_a: str, model_b: str) -> tuple[ParityRecord, Path] | None:
    """Find the newest record in `model_dir` that compares models `model_a` and `model_b` (either way round)."""
    found: list[tuple[str, ParityRecord, Path]] = []
    if not model_dir.is_dir():
        return None
    for path in model_dir.glob("*" + RECORD_SUFFIX):
        record = load_record(path)
        if record is None:
            continue
        if {record.reference_model_id, record.candidate_model_id} == {model_a, model_b}:
            found.append((record.created_at, record, path))
    if not found:
        return None
    _, record, path = max(found, key=lambda item: item[0])
    return record, path


def gallery_allowed(gallery: Gallery, backend: Any, model_dir: Path | str) -> None:
    """Raise GalleryError unless `backend` may search `gallery`.

    The same model produced both: allowed when the dimensions match. A Hailo
    HEF with a gallery made by the ONNX model (or the reverse): allowed only
    when a passing parity record for exactly these two models is in
    `model_dir`, and the HEF it measured has not changed since.
    """
    contract: ModelContract = backend.contract
    producer = contract.model_id
    if gallery.producer == producer:
        check_compatible(gallery, producer, contract.output.dim)
        return
    if gallery.dim != contract.output.dim:
        check_compatible(gallery, producer, contract.output.dim)

    model_dir = Path(model_dir)
    found = find_record(model_dir, gallery.producer, producer)
    fix = (f"run 'pokedge parity' to compare the two models, rebuild the gallery with the {backend.name} backend, "
           f"or use --backend onnx")
    if found is None:
        raise GalleryError(
            f"gallery {gallery.path} was built by model {gallery.producer}, but the {backend.name} backend runs "
            f"{producer}, and no parity record for the two is in {model_dir}; {fix}"
        )
    record, path = found
    if not record.passed:
        raise GalleryError(
            f"gallery {gallery.path} was built by model {gallery.producer}, and parity record {path} shows "
            f"{producer} disagrees with it (min cosine {record.min_cosine:.4f}, needs > {record.min_required}); {fix}"
        )

    hef = contract.model_path if contract.format == "hef" else model_dir / record.hef_file
    if record.hef_sha256 and record.hef_file:
        if hef.is_file() and file_sha256(hef) != record.hef_sha256:
            raise GalleryError(
                f"parity record {path} measured another {hef.name} (sha256 changed since {record.created_at}); "
                f"run 'pokedge parity' again"
            )
    _log.info("gallery %s (by %s) allowed for %s: parity record %s, min cosine %.4f over %d samples",
              gallery.path, gallery.producer, producer, path, record.min_cosine, record.count)
