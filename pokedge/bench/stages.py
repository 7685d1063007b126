"""Per-stage timings over the fixed frames: decode, detect, preprocess, embed per backend, search, decide, state update.

The stages run the same calls as Recognizer.recognize, one after another, so
each can be timed alone and every backend can embed the same batch of the
same frame. Backends take turns on each frame, so machine noise hits them
alike.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pokedge.bench.frames import BenchFrame
from pokedge.bench.stats import ratio, summarize, time_ms
from pokedge.preprocess import prepare_batch
from pokedge.recognition.pipeline import Recognizer, keep_embeddings

_log = logging.getLogger(__name__)


@dataclass
class StageSamples:
    """Timing samples in ms, per stage and per embedding backend, with per-frame facts for ratios."""

    stages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    embed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    by_size: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    crops: list[int] = field(default_factory=list)
    # Per extra backend: cosine similarity of each crop's embedding to the searched backend's.
    agreement: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def open_tracker(recognizer: Recognizer):
    """Return the service's CardTracker for this recognizer, or None when pokedge.service.tracker is absent."""
    try:
        from pokedge.service.tracker import CardTracker
    except ImportError as exc:
        _log.info("no card tracker to measure: %s", exc)
        return None
    return CardTracker(recognizer.thresholds)


def measure_stages(recognizer: Recognizer, frames: list[BenchFrame], backends: dict, repeats: int,
                   tracker=None) -> StageSamples:
    """Run every frame `repeats` times through each stage; `backends` maps a label to an extra embedding backend.

    The recognizer's own backend produces the embeddings that are searched;
    the extra backends embed the same batch and are only timed.
    """
    samples = StageSamples()
    _warm_up(recognizer, frames[0], backends)
    frame_number = 0
    for _ in range(repeats):
        for frame in frames:
            frame_number += 1
            _measure_frame(recognizer, frame, backends, tracker, frame_number, samples)
    return samples


def _measure_frame(recognizer: Recognizer, frame: BenchFrame, backends: dict, tracker, frame_number: int,
                   samples: StageSamples) -> None:
    record: dict[str, float] = defaultdict(float)
    record["decode"], image = time_ms(frame.decode)
    record["detect"], detections = time_ms(lambda: recognizer.detector.detect(image))

    # The main quads first, then the alternatives of the cards they left unmatched, as Recognizer.recognize does.
    extra: dict[str, float] = defaultdict(float)  # ms per extra backend, both passes
    crops, hits = _measure_pass(recognizer, lambda: recognizer.main_crops(image, detections), backends, record,
                                extra, samples)
    unsure = recognizer.unsure(detections, crops, hits)
    if unsure:
        second, more = _measure_pass(recognizer, lambda: recognizer.alternative_crops(image, detections, unsure),
                                     backends, record, extra, samples)
        crops, hits = crops + second, hits + more
    for label in backends:
        samples.embed[label].append(extra[label])

    record["decide"], (cards, _) = time_ms(lambda: recognizer.choose(detections, crops, hits))
    if tracker is not None:
        record["state_update"], _ = time_ms(lambda: tracker.update(frame_number, time.monotonic(), cards))

    for stage, value in record.items():
        samples.stages[stage].append(value)
        samples.by_size[frame.size_label][stage].append(value)
    samples.embed[_label(recognizer)].append(record["embed"])
    samples.crops.append(len(crops))


def _measure_pass(recognizer: Recognizer, make_crops, backends: dict, record: dict[str, float],
                  extra: dict[str, float], samples: StageSamples) -> tuple[list, list]:
    """Time one pass of warp + preprocessing, embedding and search; add the times to `record` and `extra`.

    `extra` collects the embedding time of each extra backend on the same batch.
    """
    def preprocess():
        crops = make_crops()
        return crops, prepare_batch([c.image for c in crops], recognizer.backend.contract)

    elapsed, (crops, batch) = time_ms(preprocess)
    record["preprocess"] += elapsed

    embeddings = np.zeros((0, recognizer.gallery.dim), np.float32)
    record["embed"] += 0.0  # a frame without crops still reports an embed time of 0
    if len(batch):
        elapsed, embeddings = time_ms(lambda: recognizer.backend.embed(batch))
        record["embed"] += elapsed
        keep_embeddings(crops, embeddings)
        for label, backend in backends.items():
            elapsed, other = time_ms(lambda: backend.embed(batch))
            extra[label] += elapsed
            samples.agreement[label].extend(np.einsum("nd,nd->n", embeddings, other).tolist())

    elapsed, hits = time_ms(lambda: recognizer.index.search(embeddings, max(recognizer.top_k, 5))
                            if len(embeddings) else [])
    record["search"] += elapsed
    return crops, list(hits)


def _warm_up(recognizer: Recognizer, frame: BenchFrame, backends: dict) -> None:
    """Run one frame through every backend so first-call costs (arena growth, kernels) are not timed."""
    image = frame.decode()
    detections = recognizer.detector.detect(image)
    crops = recognizer.main_crops(image, detections) + recognizer.alternative_crops(image, detections,
                                                                                     list(range(len(detections))))
    batch = prepare_batch([c.image for c in crops] or [image], recognizer.backend.contract)
    recognizer.backend.embed(batch)
    for backend in backends.values():
        backend.embed(batch)


def _label(recognizer: Recognizer) -> str:
    return "onnx-fp32" if recognizer.backend.name == "onnx" else recognizer.backend.name


def stage_summary(samples: StageSamples) -> dict:
    """Return stages_ms: every stage's mean/p50/p99, the embedding per backend and per card, and per frame size."""
    summary = {stage: summarize(values) for stage, values in samples.stages.items()}
    # The searched backend first, then the extra ones in the order they were opened.
    labels = sorted(samples.embed, key=lambda label: label in samples.agreement)
    summary["embed_by_backend"] = {label: summarize(samples.embed[label]) for label in labels}
    crops = np.asarray(samples.crops, dtype=np.float64)
    summary["embed_per_crop"] = {
        label: round(float(np.sum(values) / crops.sum()), 3) if crops.sum() else None
        for label, values in samples.embed.items()
    }
    summary["embed_agreement"] = {
        label: {"mean_cosine": round(float(np.mean(values)), 5), "min_cosine": round(float(np.min(values)), 5)}
        for label, values in samples.agreement.items() if values
    }
    summary["crops_per_frame"] = round(float(crops.mean()), 2) if len(crops) else 0.0
    summary["by_frame_size"] = {size: {stage: summarize(values) for stage, values in stages.items()}
                                for size, stages in samples.by_size.items()}
    return summary


def stage_ratios(samples: StageSamples) -> dict:
    """Return the per-frame ratios the targets are stated in (sums over all frames, so empty frames count)."""
    stages = samples.stages
    front = sum(stages["detect"]) + sum(stages["preprocess"])
    embed = sum(stages["embed"])
    return {
        "detect_preprocess_vs_embed": ratio(front, embed),
        "detect_vs_embed": ratio(sum(stages["detect"]), embed),
        "search_vs_embed": ratio(sum(stages["search"]), embed),
    }
