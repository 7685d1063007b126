"""Measure the card detector on synthetic scenes and on labelled real photos.

Synthetic part: for each condition of `pokedge.synth.CONDITIONS`, render N
scenes of gallery scans (or of generated test cards with `--test-cards`)
and print the share of cards whose best quad, main or alternative, has an
IoU of at least 0.85 with the true quad; the same for 3x3 and 2x2 binder
pages; and the number of detections on card-free backgrounds. Times are
CPU milliseconds per frame with one OpenCV thread.

Real part: run the detector on every photo in a folder with a labels.csv
(columns photo, card_id, conditions), draw the quads (main in green,
alternatives in yellow, reference quads in magenta) into a contact sheet
PNG, and print per photo whether a correct quad was found. The reference
quad of a card is found by matching its gallery scan into the photo with
SIFT and a RANSAC homography; a photo whose cards are not in the gallery
gets a plausibility check only (a quad with the card aspect covering at
least 1% of the frame) and must be judged on the contact sheet.

Example:
    python scripts/detection_report.py --data ../shared/data --scenes 20
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from pokedge import synth
from pokedge.detection import CardDetector, Detection, geometry

IOU_OK = 0.85
MIN_INLIERS = 15  # RANSAC inliers needed before a SIFT reference quad is trusted
SHEET_CELL = 320  # px, side of one photo in the contact sheet
SHEET_COLUMNS = 6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="folder with gallery/, photos/ and negatives/ (default: ../shared/data)")
    parser.add_argument("--scenes", type=int, default=12, help="synthetic scenes per condition (0 skips them)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--conditions", default="", help="comma-separated subset of the synthetic conditions")
    parser.add_argument("--test-cards", action="store_true", help="render generated test cards, not gallery scans")
    parser.add_argument("--photos", action="store_true", help="also run on real photos and negatives")
    parser.add_argument("--sheet", type=Path, default=Path("/tmp/pokedge-detection-sheet.png"),
                        help="contact sheet of the real photos (PNG)")
    parser.add_argument("--reference-cache", type=Path, default=Path("/tmp/pokedge-detection-references.json"),
                        help="cache of the SIFT reference quads of the real photos")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    detector = CardDetector()
    if args.scenes > 0:
        cards = _card_source(args)
        conditions = [c for c in args.conditions.split(",") if c] or list(synth.CONDITIONS)
        report_synthetic(detector, cards, conditions, args.scenes, args.seed)
    if args.photos:
        report_photos(detector, args.data, args.sheet, args.reference_cache)
    return 0


# ---------------------------------------------------------------------------
# Synthetic scenes


def _card_source(args) -> list[np.ndarray]:
    rng = np.random.default_rng(args.seed)
    if args.test_cards:
        return [synth.make_test_card(rng) for _ in range(24)]
    paths = sorted((args.data / "gallery").glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no gallery scans found under {args.data / 'gallery'}; pass --data or --test-cards")
    chosen = rng.choice(len(paths), size=min(60, len(paths)), replace=False)
    return [cv2.imread(str(paths[i])) for i in chosen]


def best_iou(detection: Detection, truth: np.ndarray) -> float:
    return max(geometry.quad_iou(q, truth) for q in [detection.quad, *detection.alternatives])


def match_cards(detections: list[Detection], truths: list[np.ndarray]) -> tuple[list[float], list[float], int]:
    """Return per true card the best IoU over all quads and the IoU of the main quad, and the count of unmatched detections."""
    best, main = [], []
    used = set()
    for truth in truths:
        scores = [best_iou(d, truth) for d in detections]
        index = int(np.argmax(scores)) if scores else -1
        best.append(scores[index] if scores else 0.0)
        main.append(geometry.quad_iou(detections[index].quad, truth) if scores else 0.0)
        if scores and scores[index] > 0.3:
            used.add(index)
    return best, main, len(detections) - len(used)


def _timed_detect(detector: CardDetector, frame: np.ndarray) -> tuple[list[Detection], float]:
    # CPU time of this process, so that other load on the machine does not count.
    start = time.process_time()
    detections = detector.detect(frame)
    return detections, (time.process_time() - start) * 1000.0


def report_synthetic(detector: CardDetector, cards: list[np.ndarray], conditions: list[str], count: int,
                     seed: int) -> None:
    print(f"synthetic scenes: {count} per condition, IoU >= {IOU_OK} with the best quad (main or alternative)")
    print(f"{'condition':18s} {'found':>6s} {'main':>6s} {'extra':>6s} {'ms':>6s}")
    rng = np.random.default_rng(seed)
    totals = [0, 0, 0]
    for condition in conditions:
        found = main_ok = extra = 0
        times = []
        for _ in range(count):
            card = cards[int(rng.integers(len(cards)))]
            scene = synth.render_scene(card, rng, [condition])
            detections, ms = _timed_detect(detector, scene.frame)
            best, main, unmatched = match_cards(detections, scene.quads)
            found += sum(b >= IOU_OK for b in best)
            main_ok += sum(m >= IOU_OK for m in main)
            extra += unmatched
            times.append(ms)
        totals[0] += found
        totals[1] += count
        totals[2] += extra
        print(f"{condition:18s} {found / count:6.2f} {main_ok / count:6.2f} {extra / count:6.2f} {np.median(times):6.1f}")
    print(f"{'all':18s} {totals[0] / max(totals[1], 1):6.2f} {'':6s} {totals[2] / max(totals[1], 1):6.2f}")

    _report_binders(detector, cards, rng, count)
    _report_backgrounds(detector, rng, count)


def _report_binders(detector: CardDetector, cards: list[np.ndarray], rng: np.random.Generator, count: int) -> None:
    if not hasattr(synth, "render_binder"):
        print("binder pages: skipped, pokedge.synth has no render_binder yet")
        return
    for rows, cols in ((3, 3), (2, 2)):
        found = total = in_order = 0
        times = []
        for _ in range(max(count // 2, 2)):
            picks = [cards[int(i)] for i in rng.integers(len(cards), size=rows * cols)]
            scene = synth.render_binder(picks, rng, rows, cols)
            detections, ms = _timed_detect(detector, scene.frame)
            best, _, _ = match_cards(detections, scene.quads)
            found += sum(b >= IOU_OK for b in best)
            total += len(scene.quads)
            in_order += _row_major(detections, scene.quads)
            times.append(ms)
        pages = max(count // 2, 2)
        print(f"binder {rows}x{cols}: cards found {found / total:.2f}, pages in row-major order {in_order}/{pages}, "
              f"{np.median(times):.1f} ms")


def _row_major(detections: list[Detection], truths: list[np.ndarray]) -> bool:
    """True when every card is found and the detections come in the order of the true quads (row-major)."""
    if len(detections) != len(truths):
        return False
    return all(best_iou(d, t) >= IOU_OK for d, t in zip(detections, truths))


def _report_backgrounds(detector: CardDetector, rng: np.random.Generator, count: int) -> None:
    false = defaultdict(int)
    times = []
    for kind in synth.BACKGROUND_KINDS:
        for _ in range(max(count // 2, 2)):
            frame = synth.render_background(rng, (1280, 960), kind)
            detections, ms = _timed_detect(detector, frame)
            false[kind] += len(detections)
            times.append(ms)
    per_kind = ", ".join(f"{k} {v}" for k, v in false.items())
    frames = len(synth.BACKGROUND_KINDS) * max(count // 2, 2)
    print(f"card-free backgrounds: {sum(false.values())} detections in {frames} frames ({per_kind}), "
          f"{np.median(times):.1f} ms")


# ---------------------------------------------------------------------------
# Real photos


def report_photos(detector: CardDetector, data: Path, sheet_path: Path, cache_path: Path) -> None:
    labels = list(csv.DictReader(open(data / "photos" / "labels.csv", newline="")))
    references = _reference_quads(data, labels, cache_path)
    tiles = []
    plausible = 0
    single_ok = single_n = multi_found = multi_n = 0
    print(f"\nreal photos in {data / 'photos'} (ok = a quad with IoU >= {IOU_OK} with the SIFT reference)")
    for row in labels:
        frame = cv2.imread(str(data / "photos" / row["photo"]))
        detections, ms = _timed_detect(detector, frame)
        truths = [np.float32(q) for q in references.get(row["photo"], []) if q is not None]
        plausible += any(_plausible(d, frame.shape) for d in detections)

        if truths:
            best, main, _ = match_cards(detections, truths)
            ok = sum(b >= IOU_OK for b in best)
            verdict = f"ok {ok}/{len(truths)} (main {sum(m >= IOU_OK for m in main)}) best IoU " + \
                      " ".join(f"{b:.2f}" for b in best)
        else:
            ok = 0
            verdict = "no reference: judge on the sheet"
        ids = row["card_id"].split(";")
        if len(ids) == 1 and truths:
            single_n += 1
            single_ok += ok
        elif len(ids) > 1:
            multi_n += len(ids)
            multi_found += min(len(ids), sum(_plausible(d, frame.shape) for d in detections))
        print(f"{row['photo']:32s} {ms:6.1f} ms  {len(detections):2d} det  {verdict}")
        tiles.append(_tile(frame, detections, truths, row["photo"]))

    print(f"photos with at least one plausible quad: {plausible}/{len(labels)}")
    print(f"single-card photos with a reference: correct quad in {single_ok}/{single_n}")
    print(f"multi-card photos: {multi_found}/{multi_n} cards have a plausible detection (count only)")
    _report_negatives(detector, data, tiles)
    _write_sheet(tiles, sheet_path)


def _report_negatives(detector: CardDetector, data: Path, tiles: list[np.ndarray]) -> None:
    folder = data / "negatives"
    if not (folder / "labels.csv").is_file():
        return
    total = 0
    rows = list(csv.DictReader(open(folder / "labels.csv", newline="")))
    for row in rows:
        frame = cv2.imread(str(folder / row["photo"]))
        detections = detector.detect(frame)
        total += len(detections)
        tiles.append(_tile(frame, detections, [], row["photo"]))
    print(f"negatives: {total} detections in {len(rows)} photos without a Pokemon card front")


def _plausible(detection: Detection, shape: tuple[int, ...]) -> bool:
    area = geometry.quad_area(detection.quad) / (shape[0] * shape[1])
    return area >= 0.01 and geometry.card_aspect_error(detection.quad, shape) < 0.15


def _reference_quads(data: Path, labels: list[dict], cache_path: Path) -> dict[str, list]:
    """SIFT reference quad per card of every photo (None where the card is not in the gallery), cached."""
    if cache_path.is_file():
        return json.loads(cache_path.read_text())
    gallery = {r["card_id"]: r for r in csv.DictReader(open(data / "gallery" / "cards.csv", newline=""))}
    sift = cv2.SIFT_create(4000)
    references = {}
    for row in labels:
        photo = cv2.imread(str(data / "photos" / row["photo"]), cv2.IMREAD_GRAYSCALE)
        keypoints, descriptors = sift.detectAndCompute(photo, None)
        references[row["photo"]] = [
            _locate(sift, data / gallery[i]["image_path"], keypoints, descriptors) if i in gallery else None
            for i in row["card_id"].split(";")
        ]
    cache_path.write_text(json.dumps(references))
    return references


def _locate(sift, scan_path: Path, keypoints, descriptors) -> list | None:
    scan = cv2.imread(str(scan_path), cv2.IMREAD_GRAYSCALE)
    scan_points, scan_descriptors = sift.detectAndCompute(scan, None)
    if scan_descriptors is None or descriptors is None:
        return None
    matches = cv2.BFMatcher().knnMatch(scan_descriptors, descriptors, k=2)
    good = [m for m, n in (pair for pair in matches if len(pair) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < MIN_INLIERS:
        return None
    source = np.float32([scan_points[m.queryIdx].pt for m in good])
    target = np.float32([keypoints[m.trainIdx].pt for m in good])
    homography, inliers = cv2.findHomography(source, target, cv2.RANSAC, 5.0)
    if homography is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    height, width = scan.shape
    corners = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(corners, homography).reshape(4, 2).tolist()


def _tile(frame: np.ndarray, detections: list[Detection], truths: list[np.ndarray], name: str) -> np.ndarray:
    image = frame.copy()
    thickness = max(2, round(max(frame.shape[:2]) / 300))
    for truth in truths:
        cv2.polylines(image, [np.int32(truth)], True, (255, 0, 255), thickness)
    for detection in detections:
        for alternative in detection.alternatives:
            cv2.polylines(image, [np.int32(alternative)], True, (0, 255, 255), thickness)
        cv2.polylines(image, [np.int32(detection.quad)], True, (0, 255, 0), thickness)
        cv2.circle(image, tuple(int(v) for v in detection.quad[0]), 3 * thickness, (0, 0, 255), -1)

    scale = SHEET_CELL / max(frame.shape[:2])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tile = np.full((SHEET_CELL + 18, SHEET_CELL, 3), 40, np.uint8)
    tile[: image.shape[0], : image.shape[1]] = image
    cv2.putText(tile, name[:44], (2, SHEET_CELL + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1)
    return tile


def _write_sheet(tiles: list[np.ndarray], path: Path) -> None:
    while len(tiles) % SHEET_COLUMNS:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i: i + SHEET_COLUMNS]) for i in range(0, len(tiles), SHEET_COLUMNS)]
    cv2.imwrite(str(path), np.vstack(rows))
    print(f"contact sheet: {path}")


if __name__ == "__main__":
    sys.exit(main())
