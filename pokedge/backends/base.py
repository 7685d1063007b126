"""The interface every inference backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from pokedge.contract import ModelContract


@runtime_checkable
class Backend(Protocol):
    """Maps card images to embeddings.

    `embed` takes uint8 images of shape [N, H, W, 3], already resized to the
    contract's input size and in the contract's colour order, and returns
    float32 embeddings of shape [N, D] with rows of unit L2 norm. The backend
    does the numeric encoding (scaling, normalization, layout, quantization)
    that its contract declares.
    """

    name: str
    contract: ModelContract

    def embed(self, images: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def check_images(images: np.ndarray, contract: ModelContract) -> np.ndarray:
    """Validate a batch against the contract's input size; raise ValueError with the shapes."""
    images = np.asarray(images)
    expected = (contract.input.height, contract.input.width, 3)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
        raise ValueError(
            f"backend input must be uint8 [N, {expected[0]}, {expected[1]}, 3], "
            f"got {images.dtype} {list(images.shape)}; resize crops with pokedge.preprocess first"
        )
    return images
