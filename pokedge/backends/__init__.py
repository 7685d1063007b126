"""Inference backends: ONNX Runtime on the CPU, HailoRT on the Hailo-8L."""

from pokedge.backends.base import Backend, l2_normalize

__all__ = ["Backend", "l2_normalize"]
