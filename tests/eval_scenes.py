"""Scenes of `pokedge eval --synthetic 1000` (its default seed), rendered again one at a time.

A scene is rendered from the generator state recorded just before its card
was drawn, so a regression case costs one render instead of all the scenes
before it. The state is the `state` integer and the buffered 32-bit draw
(`has_uint32`, `uinteger`) of `rng.bit_generator.state`, as `render_cases`
leaves them before the scene.
"""

from __future__ import annotations

import numpy as np
import pytest

from pokedge import synth
from pokedge.capture.image import read_image
from pokedge.evaluation.synthetic import FRAME_SIZE
from pokedge.gallery.build import ScanRow

EVAL_SEED = 1000


def render_eval_scene(rows: list[ScanRow], index: int, card_id: str, state: tuple[int, int, int]) -> synth.Scene:
    """Render eval scene `index` from its recorded generator state, failing if it no longer draws `card_id`."""
    rng = np.random.default_rng(EVAL_SEED)
    recorded = rng.bit_generator.state
    recorded["state"]["state"], recorded["has_uint32"], recorded["uinteger"] = state
    rng.bit_generator.state = recorded

    row = rows[int(rng.integers(len(rows)))]
    if row.card.card_id != card_id:
        pytest.fail(f"scene {index} drew {row.card.card_id}, not {card_id}: the cards CSV changed since the state "
                    "was recorded; record the state again from render_cases")
    return synth.render_scene(read_image(row.image), rng, None, frame_size=FRAME_SIZE)
