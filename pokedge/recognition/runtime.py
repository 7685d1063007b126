"""Assembling a Recognizer from files: which model, which gallery, which backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pokedge import paths
from pokedge.backends.select import open_backend
from pokedge.contract import ModelContract, load_contract
from pokedge.errors import BackendError, GalleryError
from pokedge.gallery.store import Gallery, check_compatible, load_gallery
from pokedge.ocr import OCR_DIR, TextReader
from pokedge.recognition.decision import load_thresholds
from pokedge.recognition.pipeline import Recognizer
from pokedge.recognition.printed_number import NumberCheck, RecentReads

_log = logging.getLogger(__name__)


@dataclass
class RuntimeSources:
    """The files a recognizer is built from, and where they came from."""

    onnx_contract: Path
    gallery_dir: Path
    hef_contract: Path | None = None
    version: str = "shipped-default"
    galleries: dict[str, Path] | None = None  # producer model id -> gallery folder


def resolve_sources(model: Path | None = None, gallery: Path | None = None,
                    data_dir: Path | None = None) -> RuntimeSources:
    """Pick the model and gallery: explicit paths, else the active synced version, else the shipped defaults."""
    if model is None and gallery is None:
        active = _active_version(data_dir)
        if active is not None:
            return active

    onnx_contract = Path(model) if model else paths.DEFAULT_CONTRACT
    gallery_dir = Path(gallery) if gallery else paths.DEFAULT_GALLERY
    return RuntimeSources(onnx_contract, gallery_dir, version="explicit" if (model or gallery) else "shipped-default")


def _active_version(data_dir: Path | None) -> RuntimeSources | None:
    from pokedge.sync.versions import resolve_active

    active = resolve_active(Path(data_dir) if data_dir else paths.data_dir())
    if active is None:
        return None
    onnx = load_contract(active.onnx_contract)
    gallery_dir = active.galleries.get(onnx.model_id) or next(iter(active.galleries.values()), None)
    if gallery_dir is None:
        raise GalleryError(f"active version {active.version_id} at {active.path} has no gallery; run 'pokedge sync'")
    return RuntimeSources(active.onnx_contract, gallery_dir, active.hef_contract, active.version_id,
                          dict(active.galleries))


def open_recognizer(sources: RuntimeSources, backend: str = "auto", threads: int | None = None,
                    top_k: int = 5, keep_crops: bool = False, read_numbers: bool = True,
                    reuse_reads_s: float = 0.0, strip_extensions: bool = True) -> Recognizer:
    """Load the contract, backend, gallery and thresholds, checking that they belong together.

    With `read_numbers` and the OCR models present, matched cards also get
    the printed-number check (pokedge.recognition.printed_number). With
    `reuse_reads_s` above 0, a number read is reused that many seconds for
    the same card at the same place, as in a stream of frames. Without
    `strip_extensions`, the second look of an unknown card tries only the
    detector's alternative quads (fewer crops on a CPU-only device).
    """
    onnx_contract = load_contract(sources.onnx_contract)
    hef_contract = load_contract(sources.hef_contract) if sources.hef_contract else None
    engine = open_backend(backend, onnx_contract, hef_contract, threads=threads)

    try:
        gallery_dir = _gallery_for(engine.contract, sources)
        gallery = load_gallery(gallery_dir)
        _check_gallery(gallery, engine)
        thresholds = load_thresholds(gallery_dir, gallery.producer)
    except Exception:
        engine.close()
        raise

    _log.info("recognizer ready: backend %s, model %s, gallery %s (%d rows, %d cards, version %s)",
              engine.name, engine.contract.model_id, gallery_dir, len(gallery), len(gallery.cards), sources.version)
    number_check = _number_check(gallery, reuse_reads_s) if read_numbers else None
    return Recognizer(engine, gallery, thresholds, top_k=top_k, keep_crops=keep_crops, number_check=number_check,
                      strip_extensions=strip_extensions)


def _number_check(gallery: Gallery, reuse_reads_s: float = 0.0) -> NumberCheck | None:
    """Return the printed-number check, or None with a warning when the OCR models are missing or unreadable."""
    if not TextReader.available():
        _log.warning("OCR models not found in %s: printed numbers are not read", OCR_DIR)
        return None
    try:
        reader = TextReader()
    except BackendError as exc:
        _log.warning("printed-number check disabled, recognition continues without it: %s", exc)
        return None
    _log.info("printed-number check on, with the totals of %d sets", len(gallery.printed_totals))
    recent = RecentReads(reuse_reads_s) if reuse_reads_s > 0 else None
    return NumberCheck(reader, gallery, gallery.printed_totals, recent)


def _gallery_for(contract: ModelContract, sources: RuntimeSources) -> Path:
    if sources.galleries and contract.model_id in sources.galleries:
        return sources.galleries[contract.model_id]
    return sources.gallery_dir


def _check_gallery(gallery: Gallery, engine) -> None:
    """Reject a gallery from another model; a Hailo backend may use the ONNX gallery only with a passing parity record."""
    contract = engine.contract
    if gallery.producer == contract.model_id or contract.format != "hef":
        check_compatible(gallery, contract.model_id, contract.output.dim, contract.derived_from or contract.sha256)
        return

    from pokedge.parity import gallery_allowed

    gallery_allowed(gallery, engine, contract.model_path.parent)

