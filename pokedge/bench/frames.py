"""The fixed set of synthetic camera frames every benchmark run measures.

Frames are rendered with pokedge.synth from a fixed seed and stored as JPEG,
as a camera or a file source hands them over, so decoding is one measured
stage. Three of every four frames show one card (with varied pose, holder
and lighting), the fourth a 3x3 binder page.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Camera resolutions pokedge uses: 1536x864 (a Camera Module 3 sensor mode)
# and 2028x1520 (a 2x2-binned 4:3 mode of the HQ camera).
FRAME_SIZES = ((1536, 864), (2028, 1520))
SINGLE_CARD_CONDITIONS = (("clean",), ("perspective",), ("sleeve", "glare"), ("rotation", "busy_bg"))
JPEG_QUALITY = 90


@dataclass(frozen=True)
class BenchFrame:
    """One synthetic frame as JPEG bytes, with its size (width, height), layout and card count."""

    jpeg: np.ndarray  # uint8 buffer, as cv2.imencode returns it
    size: tuple[int, int]
    layout: str  # "single" or "binder3x3"
    cards: int

    @property
    def size_label(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"

    def decode(self) -> np.ndarray:
        frame = cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"benchmark frame {self.size_label} {self.layout} did not decode")
        return frame


def make_frames(per_size: int, sizes: tuple[tuple[int, int], ...] = FRAME_SIZES, seed: int = 2024) -> list[BenchFrame]:
    """Render `per_size` frames at each size; every fourth frame (and the second when per_size is 2) is a binder page."""
    from pokedge.synth import make_test_card, render_binder, render_scene

    rng = np.random.default_rng(seed)
    cards = [make_test_card(rng) for _ in range(9)]
    frames: list[BenchFrame] = []
    for size in sizes:
        for i in range(per_size):
            if _is_binder(i, per_size):
                scene = render_binder(cards, rng, 3, 3, frame_size=size)
                layout = "binder3x3"
            else:
                conditions = SINGLE_CARD_CONDITIONS[i % len(SINGLE_CARD_CONDITIONS)]
                scene = render_scene(cards[i % len(cards)], rng, conditions, frame_size=size)
                layout = "single"
            frames.append(BenchFrame(_encode(scene.frame), size, layout, len(scene.quads)))
    return frames


def _is_binder(i: int, per_size: int) -> bool:
    return i % 4 == 3 or (per_size == 2 and i == 1)


def _encode(frame: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {frame.shape}")
    return data


def card_crops(count: int, seed: int = 7) -> list[np.ndarray]:
    """Return `count` warped card crops cut from rendered scenes (random pose, holder, light), as detection yields them.

    They calibrate the INT8 model, so its ranges cover what the camera
    pipeline feeds the model rather than clean scans.
    """
    from pokedge.detection import geometry
    from pokedge.synth import make_test_card, render_scene

    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        scene = render_scene(make_test_card(rng), rng, None, frame_size=(1280, 960))
        crops.append(geometry.warp_card(scene.frame, scene.quads[0]))
    return crops
