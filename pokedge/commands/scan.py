"""`pokedge scan`: recognize the cards in image files."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pokedge.backends.select import CHOICES
from pokedge.capture.image import read_image
from pokedge.errors import InputError
from pokedge.recognition.report import frame_dict, frame_table
from pokedge.recognition.runtime import open_recognizer, resolve_sources

_log = logging.getLogger(__name__)


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the recognizer."""
    parser.add_argument("--backend", choices=CHOICES, default="auto",
                        help="inference backend: auto picks a usable Hailo device, else ONNX Runtime (default auto)")
    parser.add_argument("--model", type=Path, metavar="CONTRACT",
                        help="model contract JSON to use instead of the active or shipped model")
    parser.add_argument("--gallery", type=Path, metavar="DIR",
                        help="gallery folder to use instead of the active or shipped gallery")
    parser.add_argument("--data-dir", type=Path, help="folder of synced versions (default ~/.local/share/pokedge)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime (default: all cores)")
    parser.add_argument("--no-read-numbers", dest="read_numbers", action="store_false", default=None,
                        help="skip the OCR of the collector number on matched cards (the printed-number check)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("scan", help="recognize the cards in images",
                                   description="Recognize every card in each image and print what it is.")
    parser.add_argument("--image", action="append", type=Path, default=[], metavar="PATH",
                        help="image file to scan; repeat for several")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="more image files to scan, as with --image")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image (JSON Lines)")
    parser.add_argument("--top-k", type=int, default=3, help="alternatives per card in --json output (default 3)")
    parser.add_argument("--save-crops", type=Path, metavar="DIR", help="write each warped card as a JPEG here")
    parser.add_argument("--camera", nargs="?", const="picamera2", metavar="SOURCE",
                        help="scan one card from a camera instead of images: wait until a card is confirmed, print "
                             "it and exit; SOURCE as for 'pokedge serve --source' (default picamera2)")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                        help="with --camera: how long to wait for a confirmed card (default 20)")
    add_runtime_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    images = [*args.image, *args.images]
    if args.save_crops is not None and args.save_crops.exists() and not args.save_crops.is_dir():
        raise InputError(f"--save-crops {args.save_crops} is a file; give a folder for the card crops")
    if args.camera is not None:
        if images:
            raise InputError("give either --camera or image files, not both")
        return _scan_camera(args)
    if not images:
        raise InputError("no image given; use --image PATH (try 'pokedge sample-frame demo.jpg' for a test frame)")
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")

    sources = resolve_sources(args.model, args.gallery, args.data_dir)
    recognizer = open_recognizer(sources, args.backend, threads=args.threads, top_k=args.top_k,
                                 keep_crops=args.save_crops is not None, read_numbers=args.read_numbers is not False)
    failures = 0
    try:
        for path in images:
            failures += not _scan_one(recognizer, path, args, sources.gallery_dir)
    finally:
        recognizer.backend.close()
    return 1 if failures else 0


def _scan_one(recognizer, path: Path, args: argparse.Namespace, gallery_dir: Path) -> bool:
    try:
        frame = read_image(path)
    except InputError as exc:
        print(f"pokedge scan: error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"image": str(path), "error": str(exc)}), flush=True)
        return False

    result = recognizer.recognize(frame)
    report = frame_dict(str(path), result, recognizer.gallery, recognizer.backend.name,
                        recognizer.backend.contract.model_id, str(gallery_dir))
    if args.save_crops:
        _save_crops(args.save_crops, path, result)
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(frame_table(report), flush=True)
    return True


def _save_crops(folder: Path, path: Path, result) -> None:
    import cv2

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--save-crops {folder}: cannot create the folder ({exc.strerror or exc}); "
                         f"give a folder path, not a file") from None
    for n, card in enumerate(result.cards, 1):
        if card.crop is not None:
            cv2.imwrite(str(folder / f"{path.stem}_card{n}.jpg"), card.crop)


def _scan_camera(args: argparse.Namespace) -> int:
    """Wait for one confirmed card from the camera and print it as an image scan is printed."""
    from pokedge.capture.sources import build_source, parse_source_spec
    from pokedge.capture.supervisor import SupervisedSource
    from pokedge.service.oneshot import wait_for_card

    if args.timeout <= 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    spec = parse_source_spec(args.camera)
    source = SupervisedSource(build_source(spec))  # a missing or damaged file fails here, before the model loads
    sources = resolve_sources(args.model, args.gallery, args.data_dir)
    recognizer = open_recognizer(sources, args.backend, threads=args.threads, top_k=args.top_k,
                                 keep_crops=args.save_crops is not None, read_numbers=args.read_numbers is not False)
    try:
        source.open()
        shot = wait_for_card(recognizer, source, args.timeout)
        health = source.health()
    finally:
        source.close()
        recognizer.backend.close()

    if shot.event is None:
        camera = f"; camera {health.state}: {health.detail}" if health.state == "degraded" else ""
        print(f"pokedge scan: error: no card confirmed within {args.timeout:.0f} s from {spec} "
              f"({shot.frames} frames read, {shot.reason}){camera}", file=sys.stderr)
        return 1

    report = frame_dict(str(spec), shot.result, recognizer.gallery, recognizer.backend.name,
                        recognizer.backend.contract.model_id, str(sources.gallery_dir))
    report["state"] = shot.event.kind
    report["seconds"] = round(shot.elapsed_s, 2)
    if args.save_crops:
        _save_crops(args.save_crops, Path(f"camera-{int(time.time())}"), shot.result)
    print(json.dumps(report) if args.json else frame_table(report), flush=True)
    return 0
