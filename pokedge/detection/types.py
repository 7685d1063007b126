"""The detection result type and the card's size constants."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A Pokemon card is 63 x 88 mm; warped crops keep that aspect, upright (portrait).
CARD_ASPECT = 63.0 / 88.0
CARD_WIDTH = 252
CARD_HEIGHT = 352


@dataclass
class Detection:
    """One card found in a frame.

    `quad` is float32 [4, 2] in frame pixels, ordered top-left, top-right,
    bottom-right, bottom-left as the card reads upright (the orientation
    check may later turn it by 180 degrees).
    """

    quad: np.ndarray
    score: float
    strategy: str
    blur: float = 0.0  # variance of the Laplacian of the warped card; low means blurred
    glare: float = 0.0  # share of near-white, low-saturation pixels on the warped card
    full_frame: bool = False  # the whole image was taken as the card (tight crop or scan)
    completed: bool = False  # one side was hidden or outside the frame and was placed from the 63:88 aspect
    alternatives: list[np.ndarray] = field(default_factory=list)  # other quads for the same card, e.g. its sleeve
