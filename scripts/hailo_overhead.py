#!/usr/bin/env python3
"""Measure the Hailo backend's per-frame work outside the model call, in microseconds.

The stages are the ones pokedge runs on the host around HailoRT: input
encoding (a C-contiguous copy for raw_uint8, a table lookup for
normalized_quantized), output decoding (a reshape for FLOAT32 outputs, or a
dequantization for uint8 outputs) and L2 normalization. HailoRT's own host
work (bindings, the async queue, the PCIe transfer) is not included: only a
real device can measure it (scripts/pi_acceptance.sh does).

Usage: python scripts/hailo_overhead.py [--batch 8] [--repeats 300] [--contract HEF_CONTRACT] [--json]

The benchmark script imports `measure_overhead` from here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pokedge.backends.base import l2_normalize
from pokedge.backends.hailo_codec import HailoCodec, QuantInfo
from pokedge.contract import ModelContract, contract_from_dict, load_contract

# Quantization of the original project's normalized input, q = (x + 2.5) / 5 * 255, and a
# typical 768-d embedding output; the timing does not depend on the exact values.
INPUT_QUANT = QuantInfo(scale=5.0 / 255.0, zero_point=127.5)
RAW_INPUT_QUANT = QuantInfo(scale=1.0, zero_point=0.0)
OUTPUT_QUANT = QuantInfo(scale=0.0025, zero_point=128.0)


def default_contract(encoding: str) -> ModelContract:
    """Build a HEF contract with the shipped model's input (224x224 RGB, ImageNet mean/std) and 768-d output."""
    return contract_from_dict({"model_id": "overhead", "file": "overhead.hef", "format": "hef", "target": "hailo8l",
                               "input": {"hailo_encoding": encoding}})


def _time_us(function: Callable[[], object], frames: int, repeats: int) -> float:
    """Median microseconds per frame of `function`, which handles `frames` frames a call."""
    for _ in range(max(3, repeats // 10)):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        function()
        samples.append((time.perf_counter_ns() - start) / 1000.0 / frames)
    return statistics.median(samples)


def measure_overhead(contract: ModelContract | None = None, batch: int = 8, repeats: int = 300,
                     seed: int = 0) -> dict[str, float]:
    """Return median microseconds per frame for each host-side stage of the Hailo backend.

    With `contract`, only its encoding is measured; without, both encodings
    are, using the shipped model's input spec.
    """
    rng = np.random.default_rng(seed)
    results: dict[str, float] = {}
    encodings = [contract.input.hailo_encoding] if contract else ["raw_uint8", "normalized_quantized"]

    for encoding in encodings:
        spec = contract or default_contract(encoding)
        images = rng.integers(0, 256, size=(batch, spec.input.height, spec.input.width, 3), dtype=np.uint8)
        quant = RAW_INPUT_QUANT if encoding == "raw_uint8" else INPUT_QUANT
        codec = HailoCodec(spec, quant, OUTPUT_QUANT, output_is_float=True)
        results[f"encode_{encoding}"] = _time_us(lambda: codec.encode(images), batch, repeats)

    spec = contract or default_contract("raw_uint8")
    dim = spec.output.dim
    float_outputs = rng.standard_normal((batch, 1, 1, dim)).astype(np.float32)
    uint8_outputs = rng.integers(0, 256, size=(batch, 1, 1, dim), dtype=np.uint8)
    float_codec = HailoCodec(spec, RAW_INPUT_QUANT, OUTPUT_QUANT, output_is_float=True)
    uint8_codec = HailoCodec(spec, RAW_INPUT_QUANT, OUTPUT_QUANT, output_is_float=False)
    results["decode_float32"] = _time_us(lambda: float_codec.decode(float_outputs, batch), batch, repeats)
    results["decode_uint8"] = _time_us(lambda: uint8_codec.decode(uint8_outputs, batch), batch, repeats)

    vectors = float_outputs.reshape(batch, dim)
    results["l2_normalize"] = _time_us(lambda: l2_normalize(vectors), batch, repeats)

    results["output_buffers"] = _time_us(lambda: np.empty((batch, 1, 1, dim), dtype=np.float32), batch, repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="frames per embed call (default 8)")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per stage (default 300)")
    parser.add_argument("--contract", type=Path, help="HEF model contract to take the input spec from")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be at least 1")

    contract = load_contract(args.contract) if args.contract else None
    results = measure_overhead(contract, args.batch, args.repeats)
    if args.json:
        print(json.dumps({"batch": args.batch, "machine": platform.machine(), "us_per_frame": results}, indent=2))
        return 0

    print(f"Hailo backend host overhead, median us per frame (batch {args.batch}, {platform.machine()}, "
          f"numpy {np.__version__})")
    for stage, value in results.items():
        print(f"  {stage:<40} {value:8.1f}")
    raw = results.get("encode_raw_uint8")
    quantized = results.get("encode_normalized_quantized")
    rest = results["decode_float32"] + results["l2_normalize"] + results["output_buffers"]
    for name, encode in (("raw_uint8", raw), ("normalized_quantized", quantized)):
        if encode is not None:
            print(f"  {'total, ' + name + ', float32 out':<40} {encode + rest:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
