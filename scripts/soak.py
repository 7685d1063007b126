#!/usr/bin/env python3
"""Service benchmarks: stack scan, soak run and camera recovery, each printing its numbers.

    python scripts/soak.py stack    # 50 cards laid one after another: each confirmed once?
    python scripts/soak.py soak     # >= 20,000 frames through the daemon: RSS growth
    python scripts/soak.py recovery # camera unplugged and back: seconds until frames flow
    python scripts/soak.py all

The videos are synthetic: each card is drawn by pokedge.synth, slides in
held by a hand, lies still for `--still` seconds, and slides out again, with
motion blur while it moves. Without --model/--gallery the run uses a tiny
pooling model and a gallery of the synthetic cards (built in a temporary
folder), so no real gallery is needed. With the shipped model and gallery,
pass them (the cards must then be in the gallery: use --cards-csv).

The recovery scenario uses the Picamera2 test double from tests/fake_picamera2,
so it measures pokedge's reopen logic, not a real camera's driver.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"

FRAME_SIZE = (640, 480)
SOAK_FRAME_SIZE = (320, 240)  # the soak measures memory, not accuracy; small frames keep it under an hour
CARD_HEIGHT_SHARE = 0.55  # card height on screen as a share of the frame height
SKIN_BGR = (150, 180, 228)
BACKGROUND = "paper"


# -- synthetic stack video -----------------------------------------------------------------------


@dataclass
class Segment:
    """Ground truth of one card in the video; frame numbers count from 0."""

    card_id: str
    enter_frame: int
    settle_frame: int  # first frame with the card at rest (the hand is still letting go)
    leave_frame: int  # first frame in which the hand comes back to slide the card out


@dataclass
class StackVideo:
    path: Path
    fps: float
    frames: int
    segments: list[Segment] = field(default_factory=list)


def make_cards(folder: Path, count: int, seed: int = 11) -> Path:
    """Draw `count` synthetic cards into `folder` with a cards.csv; return the csv path."""
    from pokedge.synth import make_test_card

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        card_id = f"stack-{i + 1}"
        cv2.imwrite(str(folder / f"{card_id}.jpg"), make_test_card(rng, 252, 352), [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows.append({"card_id": card_id, "name": f"Stackmon {i + 1:02d}", "set_id": "stack", "set_name": "Stack",
                     "number": str(i + 1), "image_path": f"{card_id}.jpg"})
    path = folder / "cards.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_cards(cards_csv: Path) -> list[tuple[str, np.ndarray]]:
    cards = []
    with open(cards_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            image = cv2.imread(str(cards_csv.parent / row["image_path"]))
            if image is None:
                raise SystemExit(f"{cards_csv}: cannot read {row['image_path']}")
            cards.append((row["card_id"], image))
    return cards


def make_stack_video(cards: list[tuple[str, np.ndarray]], path: Path, fps: float = 15.0, still_s: float = 1.0,
                     move_s: float = 0.5, hand_s: float = 0.2, seed: int = 5,
                     frame_size: tuple[int, int] = FRAME_SIZE) -> StackVideo:
    """Write an MJPG .avi in which the cards are laid under the camera one after another."""
    from pokedge.synth import render_background

    rng = np.random.default_rng(seed)
    background = render_background(rng, frame_size, BACKGROUND)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frame_size)
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path}: OpenCV has no MJPG writer")

    video = StackVideo(path, fps, 0)
    move, hand, still = (max(1, round(s * fps)) for s in (move_s, hand_s, still_s))
    for card_id, card in cards:
        rest = _rest_quad(rng, frame_size)
        enter = video.frames
        for step in range(move):  # slides in from the right, held by the hand
            offset = (1 - (step + 1) / move) * frame_size[0]
            video.frames += _write(writer, background, card, rest + [offset, 0], hand=1.0, blur=step < move - 1)
        settle = video.frames - 1
        for step in range(hand):  # the hand lets go and leaves to the right
            video.frames += _write(writer, background, card, rest, hand=1.0 - (step + 1) / hand, blur=False)
        for _ in range(still):
            video.frames += _write(writer, background, card, rest, hand=0.0, blur=False)
        leave = video.frames
        for step in range(hand):  # the hand comes back
            video.frames += _write(writer, background, card, rest, hand=(step + 1) / hand, blur=False)
        for step in range(move):  # and slides the card out to the left
            offset = -(step + 1) / move * frame_size[0]
            video.frames += _write(writer, background, card, rest + [offset, 0], hand=1.0, blur=True)
        video.segments.append(Segment(card_id, enter, settle, leave))

    for _ in range(max(1, round(fps))):  # one second of empty table at the end
        video.frames += _write(writer, background, None, None, hand=0.0, blur=False)
    writer.release()
    return video


def _rest_quad(rng: np.random.Generator, frame_size: tuple[int, int]) -> np.ndarray:
    """Pick where a card comes to rest: near the centre, turned a few degrees; corners TL TR BR BL."""
    height = CARD_HEIGHT_SHARE * frame_size[1]
    width = height * 63 / 88
    centre = np.array(frame_size, np.float32) / 2 + rng.uniform(-0.05, 0.05, 2) * frame_size[1]
    angle = math.radians(rng.uniform(-5, 5))
    corners = np.array([[-width / 2, -height / 2], [width / 2, -height / 2], [width / 2, height / 2],
                        [-width / 2, height / 2]], np.float32)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
    return (corners @ rotation.T + centre).astype(np.float32)


def _write(writer, background: np.ndarray, card: np.ndarray | None, quad: np.ndarray | None, hand: float,
           blur: bool) -> int:
    frame = background.copy()
    if card is not None:
        _paste(frame, card, quad)
        if hand > 0:
            _draw_hand(frame, quad, hand)
    if blur:
        kernel = np.zeros((1, 15), np.float32)
        kernel[0, :] = 1 / 15
        frame = cv2.filter2D(frame, -1, kernel)
    writer.write(frame)
    return 1


def _paste(frame: np.ndarray, card: np.ndarray, quad: np.ndarray) -> None:
    height, width = card.shape[:2]
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(source, quad.astype(np.float32))
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpPerspective(card, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((height, width), 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
    frame[mask > 127] = warped[mask > 127]


def _draw_hand(frame: np.ndarray, quad: np.ndarray, presence: float) -> None:
    """Draw a palm and fingers gripping the card's right edge; `presence` 1 covers it, 0 is out of frame."""
    scale = frame.shape[0] / 480
    right = (quad[1] + quad[2]) / 2
    shift = (1 - presence) * frame.shape[1] * 0.6
    palm = (int(right[0] + (70 + shift) * scale), int(right[1]))
    cv2.ellipse(frame, palm, (int(75 * scale), int(95 * scale)), 0, 0, 360, SKIN_BGR, -1)
    for i, dy in enumerate((-60, -20, 20, 60)):
        tip = (int(right[0] + (-25 + shift + 6 * (i % 2)) * scale), int(right[1] + dy * scale))
        cv2.line(frame, tip, (palm[0], int(palm[1] + dy * scale / 2)), SKIN_BGR, max(2, int(22 * scale)))


# -- the recognizer ------------------------------------------------------------------------------


def tiny_runtime(folder: Path, cards_csv: Path):
    """Build the tests' tiny pooling model and a gallery of the cards in `cards_csv`; return RuntimeSources."""
    sys.path.insert(0, str(TESTS))
    from tiny_model import build_tiny_model

    from pokedge.backends.onnx import OnnxBackend
    from pokedge.contract import load_contract
    from pokedge.gallery.build import build_gallery, read_cards_csv
    from pokedge.recognition.runtime import RuntimeSources

    contract = build_tiny_model(folder / "model")
    gallery = folder / "gallery"
    backend = OnnxBackend(load_contract(contract))
    try:
        build_gallery(read_cards_csv(cards_csv), backend, gallery)
    finally:
        backend.close()
    return RuntimeSources(contract, gallery, version="soak-tiny")


def loader_for(sources, backend: str = "onnx", threads: int | None = None):
    from pokedge.recognition.runtime import open_recognizer
    from pokedge.service.recognizers import LoadedRecognizer, describe

    def load():
        recognizer = open_recognizer(sources, backend, threads=threads, top_k=5, keep_crops=True)
        return LoadedRecognizer(recognizer, sources, describe(recognizer, sources))

    return load


# -- running the daemon --------------------------------------------------------------------------


class RunningDaemon:
    """A Daemon on a background thread with an event collector; stop() returns within a few seconds."""

    def __init__(self, config, loader, source=None):
        from pokedge.service.daemon import Daemon

        self.daemon = Daemon(config, source=source, loader=loader)
        self.events: list[tuple[float, str, dict]] = []  # (monotonic time, kind, data)
        self._thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self._collector = threading.Thread(target=self._collect, name="collector", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _collect(self) -> None:
        while self.daemon.http is None and self._thread.is_alive():
            time.sleep(0.01)
        subscription = self.daemon.bus.subscribe(0)
        if subscription is None:
            return
        while True:
            event = subscription.get(timeout=0.5)
            if event is None:
                if subscription.closed:
                    return
                continue
            self.events.append((time.monotonic(), event.kind, event.data))

    def start(self) -> "RunningDaemon":
        self._thread.start()
        self._collector.start()
        return self

    def wait_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise RuntimeError(f"the daemon failed: {self.error}") from self.error
            if condition():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> float:
        started = time.monotonic()
        self.daemon.request_stop()
        self._thread.join(timeout=10)
        self._collector.join(timeout=2)
        return time.monotonic() - started


def service_config(source: str, data_dir: Path, **changes):
    from pokedge.service.config import ServiceConfig

    config = ServiceConfig(source=source, http="127.0.0.1:0", data_dir=data_dir, backend="onnx", camera_wait=5.0)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


# -- scenarios -----------------------------------------------------------------------------------


@dataclass
class StackResult:
    cards: int
    confirmed_once: int
    missed: list[str]
    repeated: list[str]
    wrong: list[str]
    unknown_events: int
    latencies_frames: list[int]
    frame_ms: float  # mean recognition time per frame, wall clock
    fps: float
    frames: int
    wall_s: float

    def summary(self) -> dict:
        lat = self.latencies_frames
        return {
            "cards": self.cards, "confirmed_exactly_once": self.confirmed_once, "missed": self.missed,
            "confirmed_more_than_once": self.repeated, "wrong_confirmations": self.wrong,
            "unknown_or_low_confidence_events": self.unknown_events,
            "settle_to_confirm_frames_min": min(lat) if lat else None,
            "settle_to_confirm_frames_median": statistics.median(lat) if lat else None,
            "settle_to_confirm_frames_max": max(lat) if lat else None,
            "settle_to_confirm_s_video_median": round(statistics.median(lat) / self.fps, 3) if lat else None,
            "settle_to_confirm_s_video_max": round(max(lat) / self.fps, 3) if lat else None,
            "frame_ms_mean": round(self.frame_ms, 1),
            # A camera faster than the recognizer hands over a new frame each time one is done, so on a
            # device the K agreeing frames take K frame times at the recognizer's own rate.
            "settle_to_confirm_s_at_measured_rate_max": (round((max(lat) + 1) * self.frame_ms / 1000, 3)
                                                         if lat else None),
            "frames": self.frames, "wall_s": round(self.wall_s, 1),
        }


def run_stack(video: StackVideo, loader, data_dir: Path, confirm_frames: int = 3) -> StackResult:
    """Play the video through the daemon (every frame, as fast as possible) and score the confirmations."""
    from pokedge.service.tracker import TrackerConfig

    tracker = TrackerConfig(confirm_frames=confirm_frames, unknown_frames=2 * confirm_frames)
    config = service_config(f"file:{video.path}", data_dir, realtime=False, tracker=tracker)
    started = time.monotonic()
    running = RunningDaemon(config, loader).start()
    if not running.wait_until(lambda: running.daemon.source_ended, timeout=60 + video.frames):
        raise RuntimeError("the stack video did not finish playing")
    running.daemon.scanlog.flush()
    wall = time.monotonic() - started
    frame_ms = _mean_frame_ms(running.daemon)
    running.stop()
    return score_stack(video, running.events, frame_ms, wall)


def _mean_frame_ms(daemon) -> float:
    """Mean recognition time per frame, from the daemon's latency histogram."""
    histogram = daemon.metrics.latency
    count = histogram.count(stage="frame")
    total = next((value for name, labels, value in histogram.samples()
                  if name.endswith("_sum") and labels.get("stage") == "frame"), 0.0)
    return 1000 * total / count if count else 0.0


def score_stack(video: StackVideo, events: list[tuple[float, str, dict]], frame_ms: float,
                wall_s: float) -> StackResult:
    """Compare the confirmed events with the ground truth of the video."""
    confirmed = [data for _, kind, data in events if kind == "confirmed"]
    unknown = [data for _, kind, data in events if kind in ("unknown_card", "low_confidence")]
    expected = {segment.card_id: segment for segment in video.segments}

    counts: dict[str, int] = {}
    wrong = []
    latencies = []
    for data in confirmed:
        card_id = data["card_id"]
        segment = _segment_at(video, data["frame"])
        if segment is None or segment.card_id != card_id:
            wrong.append(f"{card_id} at frame {data['frame']} (showing {segment.card_id if segment else 'nothing'})")
            continue
        counts[card_id] = counts.get(card_id, 0) + 1
        if counts[card_id] == 1:
            latencies.append(data["frame"] - segment.settle_frame)

    return StackResult(
        cards=len(expected),
        confirmed_once=sum(1 for card_id in expected if counts.get(card_id) == 1),
        missed=[card_id for card_id in expected if card_id not in counts],
        repeated=[card_id for card_id, n in counts.items() if n > 1],
        wrong=wrong,
        unknown_events=len(unknown),
        latencies_frames=latencies,
        frame_ms=frame_ms,
        fps=video.fps,
        frames=video.frames,
        wall_s=wall_s,
    )


def _segment_at(video: StackVideo, frame: int) -> Segment | None:
    """Return the card on screen at `frame`, from entering until it has slid out."""
    for segment in video.segments:
        end = segment.leave_frame + round(0.7 * video.fps) + 1
        if segment.enter_frame <= frame < end:
            return segment
    return None


def run_soak(video: StackVideo, loader, data_dir: Path, frames: int, sample_every: int = 1000,
             warmup: int = 2000) -> dict:
    """Loop the video through the daemon for `frames` frames; report RSS over time and its growth.

    The first sample is taken at the first recognized frame, after the model
    loaded. Growth is reported from there and from `warmup` frames on, since
    ONNX Runtime, OpenCV and SQLite size their buffers in the first frames.
    """
    from pokedge.service.stats import resident_memory_bytes

    config = service_config(f"file:{video.path}", data_dir, realtime=False, loop=True)
    running = RunningDaemon(config, loader).start()
    if not running.wait_until(lambda: running.daemon.frames >= 1, timeout=120):
        raise RuntimeError("the daemon recognized no frame within 120 s")
    samples: list[tuple[int, int]] = []
    started = time.monotonic()
    next_sample = 1
    while running.daemon.frames < frames:
        if running.error is not None:
            raise RuntimeError(f"the daemon failed: {running.error}") from running.error
        done = running.daemon.frames
        if done >= next_sample:
            samples.append((done, resident_memory_bytes()))
            next_sample += sample_every
        time.sleep(0.2)
    samples.append((running.daemon.frames, resident_memory_bytes()))
    wall = time.monotonic() - started
    status = running.daemon.status()
    stop_s = running.stop()

    baseline = next((rss for n, rss in samples if n >= warmup), samples[0][1])
    first, last = samples[0][1], samples[-1][1]
    return {
        "frames": status["frames"], "wall_s": round(wall, 1), "fps": round(status["frames"] / wall, 1),
        "rss_first_frame_mb": round(first / 2**20, 1), f"rss_at_{warmup}_frames_mb": round(baseline / 2**20, 1),
        "rss_end_mb": round(last / 2**20, 1), "rss_max_mb": round(max(r for _, r in samples) / 2**20, 1),
        f"rss_growth_after_{warmup}_frames_pct": round(100 * (last - baseline) / baseline, 2),
        "rss_growth_from_first_frame_pct": round(100 * (last - first) / first, 2),
        "decisions": status["scanlog"]["written"], "frame_errors": status["frame_errors"],
        "stop_s": round(stop_s, 2), "rss_samples_mb": [(n, round(r / 2**20, 1)) for n, r in samples],
    }


def run_recovery(loader, data_dir: Path, outage_s: float = 3.0, cycles: int = 3) -> dict:
    """Unplug the simulated camera, plug it back after `outage_s`, and time until frames are recognized again."""
    sys.path.insert(0, str(TESTS / "fake_picamera2"))
    from picamera2._camera_system import SYSTEM

    from pokedge.capture.picamera2 import Picamera2Options

    SYSTEM.reset()
    SYSTEM.realtime = True
    camera = Picamera2Options(main_size=(640, 480), fps=15)
    config = service_config("picamera2", data_dir, camera=camera)
    running = RunningDaemon(config, loader).start()
    daemon = running.daemon
    if not running.wait_until(lambda: daemon.frames > 5, timeout=30):
        raise RuntimeError("no frames from the simulated camera")

    recoveries = []
    for _ in range(cycles):
        SYSTEM.unplug()
        time.sleep(outage_s)
        frames_before = daemon.frames
        SYSTEM.plug()
        back = time.monotonic()
        if not running.wait_until(lambda: daemon.frames > frames_before, timeout=15):
            recoveries.append(None)
            continue
        recoveries.append(round(time.monotonic() - back, 2))
        time.sleep(1.0)
    status = daemon.status()
    running.stop()
    SYSTEM.reset()
    measured = [r for r in recoveries if r is not None]
    return {"outage_s": outage_s, "recovery_s": recoveries, "recovery_s_max": max(measured) if measured else None,
            "camera_reopens": status["source"]["reopens"], "failed_opens": status["source"]["failed_opens"]}


# -- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=("stack", "soak", "recovery", "all"))
    parser.add_argument("--cards", type=int, default=50, help="cards in the stack video (default 50)")
    parser.add_argument("--still", type=float, default=1.0, help="seconds each card lies still (default 1)")
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate of the video (default 15)")
    parser.add_argument("--frames", type=int, default=20_000, help="frames in the soak run (default 20000)")
    parser.add_argument("--sample-every", type=int, default=1000, help="frames between RSS samples (default 1000)")
    parser.add_argument("--warmup", type=int, default=2000,
                        help="frames after which the RSS baseline is taken (default 2000)")
    parser.add_argument("--confirm-frames", type=int, default=3, help="K, frames that confirm a card (default 3)")
    parser.add_argument("--outage", type=float, default=3.0,
                        help="seconds the simulated camera stays unplugged in the recovery run (default 3)")
    parser.add_argument("--model", type=Path, help="model contract to use instead of the tiny test model")
    parser.add_argument("--gallery", type=Path, help="gallery folder to use with --model")
    parser.add_argument("--cards-csv", type=Path, help="cards.csv whose cards are in --gallery (default: drawn)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    parser.add_argument("--work-dir", type=Path, help="keep videos, model and scan logs here")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="pokedge-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    cards_csv = args.cards_csv or make_cards(work / "cards", args.cards)
    if args.model:
        from pokedge.recognition.runtime import resolve_sources

        sources = resolve_sources(args.model, args.gallery, None)
    else:
        sources = tiny_runtime(work, cards_csv)
    loader = loader_for(sources, threads=args.threads)
    cards = read_cards(cards_csv)[: args.cards]

    report: dict = {}
    if args.scenario in ("stack", "all"):
        video = make_stack_video(cards, work / "stack.avi", fps=args.fps, still_s=args.still)
        print(f"stack video: {len(cards)} cards, {video.frames} frames at {video.fps:g} fps -> {video.path}",
              flush=True)
    if args.scenario in ("stack", "all"):
        result = run_stack(video, loader, work / "stack-data", args.confirm_frames)
        report["stack"] = result.summary()
        print(json.dumps({"stack": report["stack"]}, indent=1), flush=True)
    if args.scenario in ("soak", "all"):
        soak_video = make_stack_video(cards[:10], work / "soak.avi", fps=args.fps, still_s=args.still,
                                      frame_size=SOAK_FRAME_SIZE)
        report["soak"] = run_soak(soak_video, loader, work / "soak-data", args.frames, args.sample_every,
                                  args.warmup)
        report["soak"]["frame_size"] = list(SOAK_FRAME_SIZE)
        print(json.dumps({"soak": report["soak"]}, indent=1), flush=True)
    if args.scenario in ("recovery", "all"):
        report["recovery"] = run_recovery(loader, work / "recovery-data", outage_s=args.outage)
        print(json.dumps({"recovery": report["recovery"]}, indent=1), flush=True)
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
