"""`pokedge eval`: accuracy on labeled photos, photos without cards and synthetic scenes."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pokedge import paths
from pokedge.commands.scan import add_runtime_options
from pokedge.errors import PokedgeError
from pokedge.evaluation.photos import PhotoReport, evaluate_negatives, evaluate_photos, read_labels
from pokedge.gallery.build import read_cards_csv
from pokedge.progress import Progress
from pokedge.recognition.runtime import open_recognizer, resolve_sources

_log = logging.getLogger(__name__)

SHARED = paths.REPO_ROOT.parent / "shared" / "data"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure accuracy on labeled photos and synthetic scenes",
        description="Scan labeled photos (labels.csv: photo,card_id,conditions), photos without cards, and "
                    "synthetic scenes rendered from the reference scans; print accuracy figures.")
    parser.add_argument("--photos", type=Path, help="folder of labeled photos (with labels.csv)")
    parser.add_argument("--labels", type=Path, help="labels CSV (default PHOTOS/labels.csv)")
    parser.add_argument("--negatives", type=Path, help="folder of photos without a Pokemon card front")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="synthetic scenes to render (default 0)")
    parser.add_argument("--self-retrieval", action="store_true", help="check that every reference scan finds itself")
    parser.add_argument("--reprints", type=int, default=0, metavar="VIEWS",
                        help="photograph both prints of every same-art reprint pair VIEWS times (synthetic scenes) "
                             "and count how often the right print comes first (default 0: off)")
    parser.add_argument("--cards", type=Path, default=SHARED / "gallery" / "cards.csv",
                        help="cards CSV of the reference scans, for synthetic scenes and self-retrieval")
    parser.add_argument("--scans", type=Path, help="folder that image_path is relative to")
    parser.add_argument("--held-out", type=int, default=0, metavar="N",
                        help="render N scenes of the cards named in --unknown-names and search a gallery without "
                             "those names: every match is a wrong card (default 0: off)")
    parser.add_argument("--unknown-names", type=Path, metavar="FILE",
                        help="card names, one per line, for --held-out; give the names the model was not trained "
                             "on (models/student-held-out-names.txt for the shipped model)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the synthetic renders (default 1000)")
    parser.add_argument("--shared", action="store_true",
                        help="use ../shared/data: its photos, negatives, 2000 synthetic scenes and self-retrieval")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--details", action="store_true", help="list every photo with the recognized cards")
    add_runtime_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.shared:
        args.photos = args.photos or SHARED / "photos"
        args.negatives = args.negatives or SHARED / "negatives"
        args.synthetic = args.synthetic or 2000
        args.self_retrieval = True
    if not (args.photos or args.negatives or args.synthetic or args.self_retrieval or args.reprints or args.held_out):
        raise PokedgeError("nothing to evaluate; give --photos, --negatives, --synthetic N, --self-retrieval, "
                           "--reprints VIEWS, --held-out N or --shared")
    if args.held_out and not args.unknown_names:
        raise PokedgeError("--held-out needs --unknown-names FILE: the card names to leave out of the gallery")

    sources = resolve_sources(args.model, args.gallery, args.data_dir)
    recognizer = open_recognizer(sources, args.backend, threads=args.threads, read_numbers=args.read_numbers is not False)
    try:
        result = _evaluate(recognizer, args)
    finally:
        recognizer.backend.close()

    result.update({"backend": recognizer.backend.name, "model": recognizer.backend.contract.model_id,
                   "gallery": str(sources.gallery_dir)})
    print(json.dumps(result, indent=2) if args.json else _table(result, args.details))
    return 0


def _evaluate(recognizer, args: argparse.Namespace) -> dict[str, Any]:
    from pokedge.evaluation.synthetic import evaluate_synthetic, self_retrieval

    result: dict[str, Any] = {}
    report = PhotoReport()
    if args.photos:
        labels = read_labels(args.labels or args.photos / "labels.csv")
        evaluate_photos(recognizer, args.photos, labels, report)
    if args.negatives:
        evaluate_negatives(recognizer, args.negatives, report)
    if args.photos or args.negatives:
        result.update(report.as_dict())
        if args.details:
            result["photos"] = report.per_photo

    if args.synthetic or args.self_retrieval or args.reprints or args.held_out:
        rows = read_cards_csv(args.cards, args.scans)
        if args.self_retrieval:
            result["self_retrieval"] = self_retrieval(recognizer, rows, progress=Progress("self-retrieval"))
        if args.synthetic:
            synthetic = evaluate_synthetic(recognizer, rows, args.synthetic, args.seed, Progress("synthetic scenes"))
            result["synthetic"] = synthetic.as_dict()
        if args.reprints:
            result["reprints"] = _reprints(recognizer, rows, args)
        if args.held_out:
            result["held_out"] = _held_out(recognizer, rows, args)
    return result


def _held_out(recognizer, rows, args: argparse.Namespace) -> dict[str, Any]:
    from pokedge.commands.calibrate import read_names
    from pokedge.evaluation.synthetic import evaluate_held_out

    names = read_names(args.unknown_names, rows)
    return evaluate_held_out(recognizer, rows, names, args.held_out, args.seed, Progress("held-out scenes"))


def _reprints(recognizer, rows, args: argparse.Namespace) -> dict[str, Any]:
    from pokedge.evaluation.reprints import evaluate_reprints
    from pokedge.gallery.same_art import same_art_pairs

    pairs = same_art_pairs(rows)
    _log.info("%d same-art reprint pairs among %d reference scans", len(pairs), len(rows))
    report = evaluate_reprints(recognizer, pairs, args.reprints, args.seed, progress=Progress("reprint pairs"))
    return report.as_dict()


def _pct(value) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


def _table(result: dict[str, Any], details: bool) -> str:
    lines = [f"model {result['model']} on {result['backend']}, gallery {result['gallery']}"]
    if "n" in result:
        lines.append(f"real single-card photos in gallery: n={result['n']}  top1 {_pct(result['top1'])}  "
                     f"name {_pct(result['top1_name'])}  top5 {_pct(result['top5'])}")
        lines.append(f"out-of-gallery cards answered unknown: {_pct(result['unknown_rate'])} (n={result['oog_n']})")
        lines.append(f"multi-card pages, in-gallery cards found by exact id: {_pct(result['multi_recall'])} "
                     f"(name {_pct(result['multi_recall_name'])}, n={result['multi_cards']})")
        lines.append(f"photos without cards with no match: {_pct(result['no_card_rate'])} (n={result['negatives_n']})")
        for condition, tally in result["by_condition"].items():
            lines.append(f"  {condition:<22} n={tally['n']:<3} top1 {_pct(tally['top1'])}  name {_pct(tally['top1_name'])}")
    if "self_retrieval" in result:
        lines.append(f"gallery self-retrieval: {_pct(result['self_retrieval']['top1'])} of {result['self_retrieval']['n']}")
    if "synthetic" in result:
        s = result["synthetic"]
        lines.append(f"synthetic scenes: n={s['n']}  detected {_pct(s['detected'])}  top1 {_pct(s['top1'])}  "
                     f"name {_pct(s['top1_name'])}  top5 {_pct(s['top5'])}")
        for condition, tally in s["by_condition"].items():
            lines.append(f"  {condition:<22} n={tally['n']:<4} det {_pct(tally['detected'])}  top1 {_pct(tally['top1'])}  "
                         f"name {_pct(tally['top1_name'])}")
    if "reprints" in result:
        r = result["reprints"]
        lines.append(f"same-art reprints: {r['pairs']} pairs, {r['queries']} scenes  right print {_pct(r['right_print'])}  "
                     f"other print {_pct(r['other_print'])}  both listed {_pct(r['both_listed'])}  "
                     f"flagged same art {_pct(r['flagged_same_art'])}")
    if "held_out" in result:
        h = result["held_out"]
        lines.append(f"held-out cards ({h['names']} names left out of the gallery): n={h['n']}  "
                     f"detected {_pct(h['detected'])}  matched to a wrong card {_pct(h['matched'])} ({h['matched_n']})")
    if details and "photos" in result:
        for row in result["photos"]:
            lines.append(f"  {row['photo']:<34} {row['kind']:<8} ok={row['ok']}  truth={row.get('truth', '-')}  "
                         f"answer={row['answer']}")
    return "\n".join(lines)
