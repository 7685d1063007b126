"""`pokedge calibrate`: fit the unknown-card thresholds of a gallery."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pokedge import paths
from pokedge.commands.scan import add_runtime_options
from pokedge.errors import PokedgeError
from pokedge.evaluation.calibration import calibrate
from pokedge.gallery.build import read_cards_csv
from pokedge.progress import Progress
from pokedge.recognition.decision import FILENAME, Thresholds
from pokedge.recognition.runtime import open_recognizer, resolve_sources

_log = logging.getLogger(__name__)

DEFAULT_CARDS = paths.REPO_ROOT.parent / "shared" / "data" / "gallery" / "cards.csv"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="fit the match and unknown thresholds on synthetic scenes",
        description="Render synthetic camera scenes from the reference scans, run the pipeline and store the "
                    "fitted thresholds as thresholds.json in the gallery folder.")
    parser.add_argument("--cards", type=Path, default=DEFAULT_CARDS,
                        help="cards CSV of the reference scans (default ../shared/data/gallery/cards.csv)")
    parser.add_argument("--scans", type=Path, help="folder that image_path is relative to")
    parser.add_argument("--scenes", type=int, default=600, help="known-card scenes to render (default 600)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share of card names held out as unknown cards (default 0.2)")
    parser.add_argument("--unknown-names", type=Path, metavar="FILE",
                        help="text file of card names, one per line, to hold out as unknown cards instead of a "
                             "random --holdout share; give the names the model was not trained on")
    parser.add_argument("--seed", type=int, default=1, help="seed of the renders; evaluation uses other seeds")
    parser.add_argument("--blur-only", action="store_true",
                        help="keep the match score, margin and card floor of the gallery's thresholds.json and fit "
                             "only the pair of the blurred-reference check")
    parser.add_argument("--dry-run", action="store_true", help="print the thresholds without writing them")
    add_runtime_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = read_cards_csv(args.cards, args.scans)
    unknown_names = read_names(args.unknown_names, rows) if args.unknown_names else None
    sources = resolve_sources(args.model, args.gallery, args.data_dir)
    recognizer = open_recognizer(sources, "onnx" if args.backend == "auto" else args.backend, threads=args.threads,
                                 read_numbers=False)  # the thresholds are fitted on the embedding alone
    try:
        keep = _kept_pair(recognizer) if args.blur_only else None
        thresholds = calibrate(recognizer, rows, args.scenes, args.seed, args.holdout,
                               progress_factory=lambda label: Progress(label), unknown_names=unknown_names,
                               keep=keep)
    finally:
        recognizer.backend.close()

    print(json.dumps({"match_score": thresholds.match_score, "match_margin": thresholds.match_margin,
                      "card_floor": thresholds.card_floor, "blur_score": thresholds.blur_score,
                      "blur_margin": thresholds.blur_margin, **thresholds.report}, indent=2))
    if not args.dry_run:
        target = Path(sources.gallery_dir) / FILENAME
        thresholds.save(target)
        print(f"thresholds written to {target}")
    return 0


def _kept_pair(recognizer) -> Thresholds:
    """Return the recognizer's calibrated thresholds for --blur-only; raise PokedgeError when they are defaults."""
    if not recognizer.thresholds.calibrated:
        raise PokedgeError(f"--blur-only keeps the calibrated thresholds of {recognizer.gallery.path}, which has none; "
                           f"run 'pokedge calibrate' without --blur-only first")
    if recognizer.gallery.blurred is None:
        raise PokedgeError(f"--blur-only fits the blurred-reference check, but {recognizer.gallery.path} has no "
                           f"blurred references; rebuild it with 'pokedge gallery build'")
    return recognizer.thresholds


def read_names(path: Path, rows) -> set[str]:
    """Read card names, one per line; raise PokedgeError when the file is missing or names no card of `rows`."""
    try:
        names = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as exc:
        raise PokedgeError(f"cannot read the unknown-card names in {path}: {exc}") from None

    known = {row.card.name for row in rows}
    if not names & known:
        raise PokedgeError(f"{path} names none of the {len(known)} card names in the cards CSV; "
                           f"give the names file written with the model")
    if names - known:
        _log.warning("%d names in %s are not in the cards CSV and are ignored", len(names - known), path)
    if not known - names:
        raise PokedgeError(f"{path} names every card of the cards CSV, so no known card is left to calibrate on")
    return names & known
