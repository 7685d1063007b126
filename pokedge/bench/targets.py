"""The figures pokedge is held to on the benchmark machine, checked against one run's record."""

from __future__ import annotations

import math

# (name, where the value sits in the record, comparison, target)
TARGETS = (
    ("detection + warp + preprocessing vs ONNX fp32 embedding, per frame", ("ratios", "detect_preprocess_vs_embed"),
     "<=", 1.0),
    ("search at 17,592 cards vs embedding, per card", ("ratios", "search_catalog_vs_embed"), "<=", 0.1),
    ("recall@1 of the chosen index at 17,592 cards", ("ratios", "search_catalog_recall_at_1"), ">=", 0.999),
    ("pipelined vs sequential frames/s", ("ratios", "pipelined_vs_sequential"), ">=", 1.5),
    ("peak RSS with the 17,592-card catalog and the model, MB", ("rss_mb",), "<=", 200.0),
    ("cold start to first result, s", ("cold_start_s",), "<=", 2.0),
)


def evaluate_targets(record: dict) -> list[dict]:
    """Return one entry per target: its value in `record` (None when not measured) and whether it is met."""
    results = []
    for name, path, comparison, target in TARGETS:
        value = _lookup(record, path)
        met = None
        if isinstance(value, (int, float)) and not math.isnan(value):
            met = value <= target if comparison == "<=" else value >= target
        results.append({"target": name, "value": value, "limit": f"{comparison} {target}", "met": met})
    return results


def _lookup(record: dict, path: tuple[str, ...]):
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
