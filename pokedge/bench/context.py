"""Shared state of one benchmark run: the model, gallery, backends and recognizers built from them.

Backends and indexes are opened once and reused, so every section and both
sides of a comparison measure the same objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pokedge.bench.frames import card_crops
from pokedge.bench.models import BenchInputs, open_hailo, quantize_int8
from pokedge.contract import load_contract
from pokedge.errors import ContractError
from pokedge.detection import CardDetector
from pokedge.gallery.index import GalleryIndex
from pokedge.gallery.index_choice import IndexSpec, choose_index, parse_spec
from pokedge.gallery.store import load_gallery
from pokedge.preprocess import prepare_batch
from pokedge.recognition.decision import load_thresholds
from pokedge.recognition.pipeline import Recognizer

_log = logging.getLogger(__name__)

FP32 = "onnx-fp32"
INT8 = "onnx-int8"
HAILO_LABELS = ("hailo", "hailo-double")
CALIBRATION_CROPS = 32  # rendered card crops that set the INT8 model's activation ranges


@dataclass
class BenchContext:
    inputs: BenchInputs
    workdir: Path
    threads: int | None = None  # ONNX Runtime intra-op threads; None lets ORT use every core
    notes: list[str] = field(default_factory=list)
    hailo_label: str | None = None  # "hailo" for a device, "hailo-double" for the HailoRT test double
    _backends: dict = field(default_factory=dict)
    _indexes: dict = field(default_factory=dict)
    _int8_failed: str | None = None
    _hailo_tried: bool = False
    _hailo_reason: str = "not opened yet"

    def __post_init__(self):
        self.contract = load_contract(self.inputs.onnx_contract)
        self.gallery = load_gallery(self.inputs.gallery_dir)
        self.thresholds = load_thresholds(self.inputs.gallery_dir, self.gallery.producer)
        self.detector = CardDetector()
        self.notes.extend(self.inputs.notes)

    def backend(self, label: str = FP32, threads: int | None = None):
        """Return the backend named `label` (onnx-fp32, onnx-int8, hailo or hailo-double), opened once per thread count."""
        from pokedge.backends.onnx import OnnxBackend

        threads = threads if threads is not None else self.threads
        key = (label, threads)
        if key in self._backends:
            return self._backends[key]

        if label == FP32:
            backend = OnnxBackend(self.contract, threads=threads)
        elif label == INT8:
            backend = OnnxBackend(load_contract(self.int8_contract()), threads=threads)
        elif label in HAILO_LABELS:
            backend = self.hailo_backend()
            if backend is None:
                raise ValueError(f"no Hailo backend in this run: {self._hailo_reason}")
        else:
            raise ValueError(f"unknown backend {label!r}; choose onnx-fp32, onnx-int8, hailo or hailo-double")
        self._backends[key] = backend
        return backend

    def int8_contract(self) -> Path:
        """Return the INT8 model's contract: the one shipped beside the fp32 model, else a quantized copy.

        A shipped INT8 copy counts only when its contract names this fp32
        model's sha256 in `derived_from`.
        """
        shipped = shipped_int8(self.contract)
        if shipped is not None:
            return shipped
        crops = card_crops(CALIBRATION_CROPS)
        return quantize_int8(self.contract, prepare_batch(crops, self.contract))

    def hailo_backend(self):
        """Return the Hailo backend (real or test double) once opened, or None with the reason in notes."""
        if not self._hailo_tried:
            self._hailo_tried = True
            backend, label, note = open_hailo(self.inputs, self.workdir)
            if note:
                self.notes.append(note)
                self._hailo_reason = note
            if backend is not None:
                self._backends[(label, None)] = backend
                self.hailo_label = label
        return next((b for (label, _), b in self._backends.items() if label in HAILO_LABELS), None)

    def extra_backends(self, labels: list[str]) -> dict:
        """Open the extra embedding backends that can be opened; note each one that cannot."""
        opened = {}
        for label in labels:
            try:
                backend = self.backend(label)
            except Exception as exc:  # a missing quantizer or device skips one backend, not the run
                if not (label in HAILO_LABELS and self._hailo_reason in self.notes):  # noted once already
                    self.notes.append(f"{label} not measured: {exc}")
                continue
            opened[self.hailo_label if label in HAILO_LABELS else label] = backend
        return opened

    def index(self, spec: IndexSpec | str | None = None) -> GalleryIndex:
        """Return the gallery index for `spec` ("auto" or None: pokedge's choice for this gallery size)."""
        if spec is None or spec == "auto":
            spec = choose_index(len(self.gallery))
        elif isinstance(spec, str):
            spec = parse_spec(spec)
        if spec not in self._indexes:
            self._indexes[spec] = GalleryIndex(self.gallery, threads=1, spec=spec, cache_folder=self.workdir / "index")
        return self._indexes[spec]

    def recognizer(self, backend: str = FP32, threads: int | None = None,
                   index: IndexSpec | str | None = None) -> Recognizer:
        # NOTE: without the printed-number check; `pokedge eval` and `pokedge scan` report its "number" stage ms.
        return Recognizer(self.backend(backend, threads), self.gallery, self.thresholds, detector=self.detector,
                          index=self.index(index))

    def close(self) -> None:
        unique = {id(backend): backend for backend in self._backends.values()}  # one backend may sit under two keys
        for backend in unique.values():
            backend.close()
        self._backends.clear()


def shipped_int8(contract) -> Path | None:
    """Return the contract of an INT8 copy beside the fp32 model (`<stem>-int8.contract.json`), if it is one."""
    if contract.source is None or not contract.sha256:
        return None
    stem = Path(contract.file).stem
    path = contract.source.parent / f"{stem}-int8.contract.json"
    if not path.is_file():
        return None
    try:
        candidate = load_contract(path)
    except ContractError as exc:
        _log.warning("ignoring INT8 contract %s: %s", path, exc)
        return None
    return path if candidate.derived_from == contract.sha256 else None
