"""Card crops to model-ready images, as the model contract says."""

from __future__ import annotations

import cv2
import numpy as np

from pokedge.contract import ModelContract


def prepare_batch(cards_bgr: list[np.ndarray], contract: ModelContract) -> np.ndarray:
    """Stretch each BGR card crop to the contract's input size and colour order; return uint8 [N, H, W, 3].

    The whole crop is resized without padding or cropping (bilinear), as the
    original reference database was built.
    """
    spec = contract.input
    batch = np.empty((len(cards_bgr), spec.height, spec.width, 3), dtype=np.uint8)
    for i, card in enumerate(cards_bgr):
        resized = cv2.resize(card, (spec.width, spec.height), interpolation=cv2.INTER_AREA
                             if card.shape[0] > spec.height * 2 else cv2.INTER_LINEAR)
        if spec.color == "RGB":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        batch[i] = resized
    return batch
