"""`pokedge sample-frame`: write a synthetic camera frame to try `pokedge scan` without a camera."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pokedge import synth
from pokedge.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample-frame", help="write a synthetic photo of a card for a first test",
        description="Render a card drawn by pokedge (not a real card, so scan reports 'unknown card') into a "
                    "camera-like photo on a textured background.")
    parser.add_argument("path", type=Path, help="JPEG file to write")
    parser.add_argument("--seed", type=int, default=3, help="seed of the drawing (default 3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    card = synth.make_test_card(rng)
    scene = synth.render_scene(card, rng, ("perspective", "busy_bg"), frame_size=(1280, 960))
    if args.path.suffix.lower() not in (".jpg", ".jpeg"):
        raise InputError(f"{args.path}: the demo frame is a JPEG; give a path ending in .jpg")
    if not cv2.imwrite(str(args.path), scene.frame, [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise InputError(f"{args.path}: could not write the JPEG (check the folder exists and is writable)")
    corners = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in scene.quads[0])
    print(f"wrote {args.path}: one synthetic card at {corners}")
    return 0
