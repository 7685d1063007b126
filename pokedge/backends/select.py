"""Choosing the backend: `auto`, `hailo` or `onnx`."""

from __future__ import annotations

import logging

from pokedge.backends.base import Backend
from pokedge.contract import ModelContract
from pokedge.errors import BackendError

_log = logging.getLogger(__name__)

CHOICES = ("auto", "hailo", "onnx")


def open_backend(choice: str, onnx_contract: ModelContract, hef_contract: ModelContract | None = None,
                 *, threads: int | None = None, hailo_options: dict | None = None) -> Backend:
    """Open the backend named by `choice`; `auto` prefers a usable Hailo device and falls back to ONNX."""
    if choice not in CHOICES:
        raise BackendError(f"unknown backend {choice!r}; choose one of {', '.join(CHOICES)}")
    if choice == "hailo":
        raise BackendError("the Hailo backend is not available in this build; use --backend onnx")

    from pokedge.backends.onnx import OnnxBackend

    return OnnxBackend(onnx_contract, threads=threads)
