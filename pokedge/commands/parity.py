"""`pokedge parity`: embed sample crops with the ONNX model and its HEF, compare, and store the record."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from pokedge.backends.hailo_options import add_hailo_arguments, hailo_options_from_args
from pokedge.backends.probe import find_hef_contract
from pokedge.backends.select import open_hailo
from pokedge.capture.image import read_image
from pokedge.contract import ModelContract, load_contract
from pokedge.errors import BackendError, GalleryError, InputError, PokedgeError
from pokedge.gallery.store import load_gallery
from pokedge.parity import MIN_COSINE, build_record, compare_embeddings, record_path, save_record
from pokedge.preprocess import prepare_batch

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
BATCH = 16


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "parity", help="compare the HEF on the Hailo device with the ONNX model",
        description="Embed sample card crops on both backends, print mean and min cosine and top-1 agreement, "
        f"and store the result next to the HEF. The HEF passes when every cosine exceeds {MIN_COSINE}; only then "
        "may the Hailo backend search a gallery built with the ONNX model.")
    parser.add_argument("--samples", type=Path, required=True, metavar="DIR",
                        help="folder of card crop images (JPEG, PNG, ...), one card filling each image")
    parser.add_argument("--limit", type=int, default=64, help="maximum number of samples (default 64)")
    parser.add_argument("--model", type=Path, metavar="CONTRACT",
                        help="ONNX model contract (default: the active synced version, else the shipped model)")
    parser.add_argument("--hef", type=Path, metavar="CONTRACT",
                        help="HEF model contract (default: the active version's, else the first HEF contract "
                        "beside the ONNX model)")
    parser.add_argument("--gallery", type=Path, metavar="DIR",
                        help="gallery for top-1 agreement (default: the active or shipped gallery when it loads)")
    parser.add_argument("--data-dir", type=Path, help="folder of synced versions (default ~/.local/share/pokedge)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime (default: all cores)")
    parser.add_argument("--no-save", action="store_true", help="print the result without storing the record")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    add_hailo_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    onnx_contract, hef_contract, gallery_dir = _resolve_models(args)
    names, crops = load_samples(args.samples, args.limit)

    from pokedge.backends.onnx import OnnxBackend

    onnx = OnnxBackend(onnx_contract, threads=args.threads)
    try:
        try:
            hailo = open_hailo(hef_contract, hailo_options_from_args(args))
        except BackendError as exc:
            raise BackendError(f"pokedge parity needs the Hailo device: {exc}") from exc
        try:
            reference = embed_all(onnx, crops)
            candidate = embed_all(hailo, crops)
            hailort_version = hailo.hailort_version
        finally:
            hailo.close()
    finally:
        onnx.close()

    gallery = _load_gallery(gallery_dir)
    stats = compare_embeddings(reference, candidate, names, gallery)
    record = build_record(onnx_contract, hef_contract, stats, hailort_version)

    saved = None
    if not args.no_save:
        saved = save_record(record, record_path(hef_contract))
    if args.json:
        print(json.dumps({**record.to_dict(), "record_path": str(saved) if saved else None}, indent=2))
    else:
        print_report(record, saved)
    return 0 if record.passed else 1


def _resolve_models(args: argparse.Namespace) -> tuple[ModelContract, ModelContract, Path | None]:
    from pokedge.recognition.runtime import resolve_sources

    sources = resolve_sources(args.model, args.gallery, args.data_dir)
    onnx_contract = load_contract(sources.onnx_contract)
    if args.hef:
        hef_contract = load_contract(args.hef)
    elif sources.hef_contract:
        hef_contract = load_contract(sources.hef_contract)
    else:
        hef_contract = find_hef_contract(onnx_contract.model_path.parent)
    if hef_contract is None:
        raise PokedgeError(
            f"no HEF model contract found beside {onnx_contract.model_path}; give one with --hef CONTRACT"
        )
    if hef_contract.format != "hef":
        raise PokedgeError(f"{hef_contract.source} has format {hef_contract.format!r}; --hef needs a HEF contract")
    gallery_dir = args.gallery or sources.gallery_dir
    return onnx_contract, hef_contract, gallery_dir


def load_samples(folder: Path, limit: int) -> tuple[list[str], list[np.ndarray]]:
    """Read up to `limit` card crops (BGR) from a folder, sorted by name."""
    if not folder.is_dir():
        raise InputError(f"sample folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise InputError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return [p.name for p in paths], [read_image(p) for p in paths]


def embed_all(backend, crops: list[np.ndarray]) -> np.ndarray:
    """Embed BGR crops in batches, prepared for the backend's own contract."""
    rows = []
    for start in range(0, len(crops), BATCH):
        batch = prepare_batch(crops[start:start + BATCH], backend.contract)
        rows.append(backend.embed(batch))
    return np.concatenate(rows, axis=0)


def _load_gallery(gallery_dir: Path | None):
    if gallery_dir is None or not Path(gallery_dir).is_dir():
        return None
    try:
        return load_gallery(gallery_dir, mmap=True)
    except GalleryError as exc:
        _log.warning("top-1 agreement among the samples only: %s", exc)
        return None


def print_report(record, saved: Path | None) -> None:
    print(f"parity of {record.candidate_model_id} (HEF {record.hef_file}, encoding {record.hailo_encoding}, "
          f"HailoRT {record.hailort_version}) against {record.reference_model_id}")
    print(f"  samples          {record.count}")
    print(f"  mean cosine      {record.mean_cosine:.5f}")
    print(f"  min cosine       {record.min_cosine:.5f}")
    print(f"  top-1 agreement  {record.top1_agreement * 100:.1f}% (against {record.top1_against})")
    worst = ", ".join(f"{item['sample']} {item['cosine']:.5f}" for item in record.worst_samples)
    print(f"  lowest cosines   {worst}")
    verdict = "PASS" if record.passed else "FAIL"
    print(f"  verdict          {verdict} (every cosine must exceed {record.min_required})")
    if not record.passed:
        print("  a failing HEF often has the wrong input.hailo_encoding in its contract "
              "(raw_uint8 or normalized_quantized), or was calibrated without the model's normalization")
    if saved:
        print(f"  record           {saved}")
