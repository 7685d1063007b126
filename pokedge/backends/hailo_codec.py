"""Input encoding and output decoding for a HEF, following its model contract.

A HEF takes uint8 NHWC frames. What those bytes mean depends on how the HEF
was compiled, and the contract's `input.hailo_encoding` records it:

- `raw_uint8`: the pixels themselves (0..255, contract colour order); the
  HEF's own first layers scale and normalize them.
- `normalized_quantized`: the contract's float encoding (scale, then
  mean/std), quantized with the HEF input's quantization parameters:
  q = round(x / qp_scale + qp_zp), clipped to 0..255.

Outputs come back either as FLOAT32 (HailoRT dequantizes) or as uint8 that
this module dequantizes with real = (q - qp_zp) * qp_scale. Both are then
flattened to [N, D], since a HEF reports shapes such as (1, 1, 768) or (768,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pokedge.contract import InputSpec, ModelContract
from pokedge.errors import BackendError


@dataclass(frozen=True)
class QuantInfo:
    """Quantization parameters of one HEF input or output: real = (q - zero_point) * scale."""

    scale: float
    zero_point: float

    @classmethod
    def from_hailo(cls, quant_info: Any) -> "QuantInfo":
        """Read a HailoRT `hailo_quant_info_t` (fields qp_scale and qp_zp)."""
        scale = float(quant_info.qp_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise BackendError(f"HEF quantization scale must be a positive number, got {scale!r}")
        return cls(scale=scale, zero_point=float(quant_info.qp_zp))


class HailoCodec:
    """Encodes card images for one HEF and decodes its embeddings."""

    def __init__(self, contract: ModelContract, input_quant: QuantInfo, output_quant: QuantInfo,
                 output_is_float: bool):
        encoding = contract.input.hailo_encoding
        if encoding not in ("raw_uint8", "normalized_quantized"):
            raise BackendError(
                f"model contract {contract.source} has input.hailo_encoding {encoding!r}; "
                f"set it to raw_uint8 or normalized_quantized, as the HEF was compiled"
            )
        self.encoding = encoding
        self.dim = contract.output.dim
        self.input_quant = input_quant
        self.output_quant = output_quant
        self.output_is_float = output_is_float
        self._table = quantization_table(contract.input, input_quant) if encoding == "normalized_quantized" else None
        # cv2.LUT wants a (1, 256, channels) table: entry [0, value, channel].
        self._lut = np.ascontiguousarray(self._table.reshape(3, 256).T[None]) if self._table is not None else None

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Turn uint8 [N, H, W, 3] images into the C-contiguous uint8 NHWC frames the HEF reads."""
        if self._table is None:
            return np.ascontiguousarray(images, dtype=np.uint8)

        # cv2.LUT maps each channel through its own 256-entry table; the batch is
        # viewed as one tall image. It is about 6x faster than numpy fancy indexing.
        count, height, width, channels = images.shape
        tall = np.ascontiguousarray(images).reshape(count * height, width, channels)
        return cv2.LUT(tall, self._lut).reshape(images.shape)

    def decode(self, outputs: np.ndarray, count: int) -> np.ndarray:
        """Turn raw HEF outputs [N, ...] into float32 [N, D]; the rows are not normalized yet."""
        outputs = np.asarray(outputs)
        if outputs.size != count * self.dim:
            raise BackendError(
                f"HEF output has {outputs.size} values for {count} frame(s), expected {count} x {self.dim}; "
                f"check output.dim in the model contract"
            )
        vectors = outputs.reshape(count, self.dim)
        if self.output_is_float:
            return vectors.astype(np.float32, copy=False)
        scale = np.float32(self.output_quant.scale)
        zero_point = np.float32(self.output_quant.zero_point)
        return (vectors.astype(np.float32) - zero_point) * scale


def quantization_table(spec: InputSpec, quant: QuantInfo) -> np.ndarray:
    """Precompute the quantized value of every (channel, pixel value) pair as a flat uint8 [768] table.

    The float encoding is affine per channel, so 3 x 256 entries cover every
    input; encoding a frame is then one table lookup per byte. Entry
    channel * 256 + value is the quantized value of `value` in `channel`.
    """
    values = np.arange(256, dtype=np.float32)[None, :] * np.float32(spec.scale)
    if spec.normalization == "mean_std":
        mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
        std = np.asarray(spec.std, dtype=np.float32)[:, None]
        values = (values - mean) / std
    else:
        values = np.repeat(values, 3, axis=0)
    quantized = np.rint(values / np.float32(quant.scale) + np.float32(quant.zero_point))
    return np.clip(quantized, 0, 255).astype(np.uint8).reshape(-1)
