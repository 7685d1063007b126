"""`pokedge gallery build|info`: make and inspect reference galleries."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pokedge import paths
from pokedge.backends.onnx import OnnxBackend
from pokedge.contract import load_contract
from pokedge.gallery.build import build_gallery, read_cards_csv
from pokedge.gallery.store import duplicate_summary, load_gallery
from pokedge.progress import Progress

_log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("gallery", help="build or inspect a reference gallery")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="embed reference scans into a gallery folder",
                               description="Embed every scan listed in a cards CSV with the ONNX model and write "
                                           "embeddings.npy, index.json, metadata.json and gallery.json.")
    build.add_argument("--cards", type=Path, required=True,
                       help="CSV with card_id,name,set_id,number,image_path (set_name optional)")
    build.add_argument("--scans", type=Path, help="folder that image_path is relative to (default: the CSV's folder)")
    build.add_argument("--model", type=Path, default=paths.DEFAULT_CONTRACT, metavar="CONTRACT",
                       help="model contract JSON (default: the shipped model)")
    build.add_argument("--out", type=Path, required=True, help="gallery folder to write")
    build.add_argument("--no-resume", action="store_true", help="start over instead of reusing finished chunks")
    build.add_argument("--views", type=int, default=0,
                       help="extra rows per card from synthetic camera views of its scan (default 0)")
    build.add_argument("--view-seed", type=int, default=0, help="seed of the synthetic views (default 0)")
    build.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime")
    build.add_argument("--no-totals", action="store_true",
                       help="skip reading the printed set totals from the scans (OCR of up to 24 scans a set)")
    build.add_argument("--no-blurred", action="store_true",
                       help="skip the blurred references (each scan embedded again under 5 camera blurs)")
    build.set_defaults(func=run_build)

    info = actions.add_parser("info", help="validate a gallery folder and print its summary")
    info.add_argument("path", type=Path, nargs="?", default=paths.DEFAULT_GALLERY, help="gallery folder")
    info.set_defaults(func=run_info)


def run_build(args: argparse.Namespace) -> int:
    rows = read_cards_csv(args.cards, args.scans)
    backend = OnnxBackend(load_contract(args.model), threads=args.threads)
    try:
        build_gallery(rows, backend, args.out, resume=not args.no_resume, progress=Progress("embedding scans"),
                      views=args.views, view_seed=args.view_seed, read_totals=not args.no_totals,
                      blurred=not args.no_blurred, blurred_progress=Progress("blurred references"))
    finally:
        backend.close()
    print(f"gallery written to {args.out}: {len(rows)} scans, model {backend.contract.model_id}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    gallery = load_gallery(args.path)
    duplicates = duplicate_summary(gallery.card_ids)
    sets = sorted({card.set_id for card in gallery.cards.values()})
    summary = {
        "path": str(args.path),
        "producer": gallery.producer,
        "dim": gallery.dim,
        "rows": len(gallery),
        "cards": len(gallery.cards),
        "sets": len(sets),
        "ids_with_several_rows": len(duplicates),
        "blurred_references": gallery.blurred.vectors.shape[1] if gallery.blurred is not None else 0,
        "created_at": gallery.manifest.get("created_at"),
    }
    print(json.dumps(summary, indent=2))
    return 0
