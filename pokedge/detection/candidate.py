"""A quad proposed by a strategy, with its score and the runner-ups merged into it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Candidate:
    quad: np.ndarray  # float32 [4, 2], ordered TL, TR, BR, BL, in working-copy pixels
    strategy: str
    score: float = 0.0
    completed: bool = False  # one side was placed from the card aspect, not found in the image
    alternatives: list["Candidate"] = field(default_factory=list)
