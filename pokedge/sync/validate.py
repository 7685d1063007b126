"""Validation of a staged version before activation: the models load and each gallery belongs to its model.

The ONNX model is loaded with the same backend `pokedge scan` uses and run
once on a grey image, so a model whose real output size differs from its
contract is caught even when the graph declares a dynamic shape. Galleries
get the integrity checks of `load_gallery` and the producer and dimension
check of `check_compatible`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pokedge.contract import ModelContract, load_contract
from pokedge.errors import BackendError, ContractError, GalleryError
from pokedge.gallery.store import check_compatible, load_gallery
from pokedge.sync.errors import ValidationError
from pokedge.sync.versions import VersionInfo

_log = logging.getLogger(__name__)


def validate_version(folder: Path, info: VersionInfo) -> None:
    """Raise ValidationError naming the version, the file and the fault; return when the version is usable."""
    try:
        onnx = _load_contract(folder / info.onnx_contract, "onnx")
        dim = _run_onnx(onnx)
        _check_gallery(folder, info, onnx.model_id, dim, required=True)

        if info.hef_contract:
            hef = _load_contract(folder / info.hef_contract, "hef")
            if not hef.model_path.is_file():
                raise ValidationError(f"HEF file {hef.model_path} is missing")
            # NOTE: the HEF itself is not loaded here; that needs HailoRT and the chip, so its first load
            # happens in the daemon. Its contract, checksum and gallery are checked.
            _check_gallery(folder, info, hef.model_id, hef.output.dim, required=False)
    except (ContractError, BackendError, GalleryError) as exc:
        raise ValidationError(f"version {info.version_id} failed validation: {exc}") from None
    except ValidationError as exc:
        raise ValidationError(f"version {info.version_id} failed validation: {exc}") from None


def _load_contract(path: Path, expected_format: str) -> ModelContract:
    contract = load_contract(path)
    if contract.format != expected_format:
        raise ValidationError(f"{path} describes a {contract.format} model where a {expected_format} model belongs")
    return contract


def _run_onnx(contract: ModelContract) -> int:
    """Load the model and embed one grey image; return the real embedding size."""
    from pokedge.backends.onnx import OnnxBackend

    backend = OnnxBackend(contract, threads=1)
    try:
        spec = contract.input
        grey = np.full((1, spec.height, spec.width, 3), 128, dtype=np.uint8)
        embedding = backend.embed(grey)
    finally:
        backend.close()

    if embedding.shape != (1, contract.output.dim) or not np.isfinite(embedding).all():
        raise ValidationError(f"model {contract.model_path.name} returned {list(embedding.shape)} "
                              f"(finite: {bool(np.isfinite(embedding).all())}), expected [1, {contract.output.dim}]")
    _log.info("model %s loads and outputs %d values", contract.model_id, embedding.shape[1])
    return int(embedding.shape[1])


def _check_gallery(folder: Path, info: VersionInfo, model_id: str, dim: int, required: bool) -> None:
    relative = info.galleries.get(model_id)
    if relative is None:
        if required:
            raise ValidationError(f"no gallery made by {model_id} is in this version")
        _log.info("%s has no gallery of its own; the runtime decides whether it may use another", model_id)
        return

    gallery = load_gallery(folder / relative, mmap=True)
    check_compatible(gallery, model_id, dim)
    _log.info("gallery %s: %d rows of %d values from %s", relative, len(gallery), gallery.dim, gallery.producer)
