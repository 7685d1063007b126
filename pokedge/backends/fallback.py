"""A backend that switches from Hailo to ONNX Runtime for the rest of the run when Hailo keeps failing.

The Hailo backend retries each batch itself. Once it gives up (HailoRunError,
or any other backend error while running), this wrapper opens the ONNX
backend and embeds the same batch there. It uses ONNX from then on. Every
frame passed to `embed` gets an embedding or the call raises, so none is dropped.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from pokedge.backends.base import Backend, check_images
from pokedge.contract import ModelContract
from pokedge.errors import BackendError

_log = logging.getLogger(__name__)


class FallbackBackend:
    """Runs `primary` until it fails, then `open_fallback()` for the rest of the run."""

    def __init__(self, primary: Backend, open_fallback: Callable[[], Backend]):
        self._primary: Backend | None = primary
        self._open_fallback = open_fallback
        self._fallback: Backend | None = None
        self._frames = {primary.name: 0}
        self._lock = threading.Lock()  # embedding workers call `embed` at once after a switch to ONNX
        self._primary_name = primary.name
        self._primary_status: dict[str, Any] | None = None
        self.fallback_reason: str | None = None
        self.fallback_at_frame: int | None = None

    @property
    def name(self) -> str:
        backend = self._fallback or self._primary
        return backend.name if backend is not None else self._primary_name

    @property
    def contract(self) -> ModelContract:
        return self._active().contract

    @property
    def fell_back(self) -> bool:
        return self._fallback is not None

    def _active(self) -> Backend:
        backend = self._fallback or self._primary
        if backend is None:
            raise BackendError("the backend is closed; open a new one")
        return backend

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed on the primary backend, or on the fallback once the primary has failed."""
        if self._fallback is None and self._primary is not None:
            primary_contract = self._primary.contract
            check_images(images, primary_contract)
            try:
                vectors = self._primary.embed(images)
            except BackendError as exc:
                with self._lock:
                    if self._fallback is None:  # another thread may have switched already
                        self._switch(exc)
                # The batch was prepared for the primary's contract; convert it for the fallback.
                images = adapt_images(images, primary_contract, self._active().contract)
            else:
                self._count(self._primary_name, len(images))
                return vectors

        backend = self._active()
        vectors = backend.embed(images)
        self._count(backend.name, len(images))
        return vectors

    def _count(self, name: str, frames: int) -> None:
        with self._lock:
            self._frames[name] = self._frames.get(name, 0) + frames

    def _switch(self, exc: BackendError) -> None:
        """Open the fallback and close the primary. The caller holds the lock."""
        frames_done = sum(self._frames.values())
        try:
            fallback = self._open_fallback()
        except BackendError as fallback_exc:
            raise BackendError(f"{exc}; the ONNX fallback could not open either: {fallback_exc}") from exc

        self._fallback = fallback
        self.fallback_reason = str(exc)
        self.fallback_at_frame = frames_done
        _log.error("switching from %s to %s for the rest of this run after %d frame(s): %s",
                   self._primary_name, fallback.name, frames_done, exc)

        primary, self._primary = self._primary, None
        try:
            primary.close()
        except Exception as close_exc:  # the device is already failing; the switch must still happen
            _log.debug("closing the failed %s backend raised: %s", self._primary_name, close_exc)
        self._primary_status = primary.status() if hasattr(primary, "status") else None

    def status(self) -> dict[str, Any]:
        """Report the active backend, whether and why it fell back, and frames per backend."""
        primary = self._primary
        primary_status = self._primary_status
        if primary is not None and hasattr(primary, "status"):
            primary_status = primary.status()
        return {
            "backend": self.name,
            "requested": self._primary_name,
            "fallback": self.fell_back,
            "fallback_reason": self.fallback_reason,
            "fallback_at_frame": self.fallback_at_frame,
            "frames": self._frame_counts(),
            "primary": primary_status,
        }

    def _frame_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._frames)

    def close(self) -> None:
        for backend in (self._primary, self._fallback):
            if backend is not None:
                backend.close()
        self._primary = None
        self._fallback = None


def adapt_images(images: np.ndarray, source: ModelContract, target: ModelContract) -> np.ndarray:
    """Convert images prepared for `source` to `target`'s colour order and input size."""
    if source.input.color != target.input.color:
        images = np.ascontiguousarray(images[..., ::-1])
    size = (target.input.height, target.input.width)
    if images.shape[1:3] != size:
        import cv2

        images = np.stack([cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for image in images])
    return images
