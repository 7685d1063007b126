"""The whole frame as a card, for tight crops and flatbed scans.

When the card fills the image there is no background to find an outline
in, so the frame itself is proposed whenever its shape is close to a card
in portrait or landscape.
"""

from __future__ import annotations

import numpy as np

from pokedge.detection import geometry
from pokedge.detection.candidate import Candidate
from pokedge.detection.frame import WorkFrame
from pokedge.detection.types import CARD_ASPECT

# Relative error of the frame's portrait aspect from 63:88. Tight crops seen so
# far range from 0.68 to 0.76 (width over height), but a 4:3 camera frame (0.75,
# an error of 0.048) must stay out, or every empty camera frame looks like a scan.
_MAX_ASPECT_ERROR = 0.04
_INSET_SHARE = 0.004  # of the longest side, so that the quad stays inside the pixel grid


def frame_is_card_shaped(shape: tuple[int, ...]) -> bool:
    height, width = shape[:2]
    portrait = min(width, height) / max(width, height)
    return abs(portrait - CARD_ASPECT) / CARD_ASPECT <= _MAX_ASPECT_ERROR


def propose_full_frame(work: WorkFrame) -> list[Candidate]:
    """Return the frame outline as one candidate, or nothing when the frame is not card-shaped."""
    if not frame_is_card_shaped(work.shape):
        return []
    height, width = work.shape
    inset = _INSET_SHARE * max(height, width)
    corners = np.array([[inset, inset], [width - 1 - inset, inset], [width - 1 - inset, height - 1 - inset],
                        [inset, height - 1 - inset]], dtype=np.float32)
    return [Candidate(geometry.order_corners(corners), "full_frame")]
