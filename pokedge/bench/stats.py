"""Summaries of timing samples."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import numpy as np


def summarize(samples_ms: Iterable[float]) -> dict[str, float]:
    """Return mean, p50 and p99 in ms (rounded to 0.001) and the sample count; NaN when there are no samples."""
    values = np.asarray(list(samples_ms), dtype=np.float64)
    if len(values) == 0:
        return {"mean": math.nan, "p50": math.nan, "p99": math.nan, "n": 0}
    return {
        "mean": round(float(values.mean()), 3),
        "p50": round(float(np.percentile(values, 50)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "n": int(len(values)),
    }


def time_ms(function: Callable[[], object]) -> tuple[float, object]:
    """Call `function` once; return the wall time in ms and its result."""
    start = time.perf_counter()
    result = function()
    return (time.perf_counter() - start) * 1000.0, result


def ratio(numerator: float, denominator: float) -> float:
    """Return numerator / denominator rounded to 0.001, or NaN when the denominator is not positive."""
    if not denominator or denominator <= 0 or math.isnan(denominator):
        return math.nan
    return round(numerator / denominator, 3)
