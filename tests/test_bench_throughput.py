"""The benchmark's threaded pipeline: same cards as the sequential loop, frame order kept, failures raised."""

from __future__ import annotations

import os
import threading

import pytest

from pokedge.bench.frames import make_frames
from pokedge.bench.throughput import run_pipelined, run_sequential


class _Recorder:
    """Tracker stand-in that records the frame numbers and card ids it is given."""

    def __init__(self):
        self.frames: list[int] = []
        self.cards: list[list[str | None]] = []

    def update(self, number, began, cards) -> None:
        self.frames.append(number)
        self.cards.append([card.card_id for card in cards])


@pytest.fixture(scope="module")
def frames():
    return make_frames(1)


@pytest.mark.parametrize("embed_workers", [1, 2, 3])
def test_pipeline_matches_sequential(tiny_recognizer, frames, embed_workers):
    sequential, pipelined = _Recorder(), _Recorder()
    count = 2 * len(frames)
    run_sequential(tiny_recognizer, frames, count, sequential)
    result = run_pipelined(tiny_recognizer, frames, count, pipelined, embed_workers=embed_workers)
    assert pipelined.frames == list(range(count))
    assert pipelined.cards == sequential.cards
    assert len(result.latencies_ms) == count
    assert result.fps > 0
    assert result.wall_s > 0
    assert result.cpu_s > 0
    # CPU seconds per wall second cannot exceed the usable cores (with a 0.2 tolerance).
    assert result.utilization <= len(os.sched_getaffinity(0)) + 0.2
    assert result.cpu_ms_per_frame == pytest.approx(result.cpu_s * 1000 / count, rel=1e-6)


def test_embed_workers_overlap(tiny_recognizer, frames, monkeypatch):
    backend = tiny_recognizer.backend
    embed = backend.embed
    arrivals = threading.Barrier(2)
    overlapped = threading.Event()

    def embed_with_another_worker(batch):
        if not overlapped.is_set():
            try:
                arrivals.wait(timeout=5)  # passes only when a second worker is inside embed too
                overlapped.set()
            except threading.BrokenBarrierError:
                pass
        return embed(batch)

    monkeypatch.setattr(backend, "embed", embed_with_another_worker)
    run_pipelined(tiny_recognizer, frames, 2 * len(frames), embed_workers=2)
    assert overlapped.is_set()


def test_embed_failure_is_raised(tiny_recognizer, frames, monkeypatch):
    def fail(batch):
        raise RuntimeError("embedding failed on purpose")

    monkeypatch.setattr(tiny_recognizer.backend, "embed", fail)
    with pytest.raises(RuntimeError, match="on purpose"):
        run_pipelined(tiny_recognizer, frames, 4 * len(frames), embed_workers=2)


def test_pipeline_rejects_zero_workers(tiny_recognizer, frames):
    with pytest.raises(ValueError, match="embed_workers"):
        run_pipelined(tiny_recognizer, frames, 1, embed_workers=0)
