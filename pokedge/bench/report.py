"""The readable table `pokedge bench` prints by default."""

from __future__ import annotations

import math

STAGE_ORDER = ("decode", "detect", "preprocess", "embed", "search", "decide", "state_update")


def format_report(record: dict) -> str:
    """Return the benchmark record as plain-text tables."""
    parts = [_header(record), _stages(record), _throughput(record), _search(record), _cold_start(record),
             _compare(record), _targets(record), _notes(record)]
    return "\n\n".join(part for part in parts if part)


def _header(record: dict) -> str:
    hw = record.get("hardware", {})
    inputs = record.get("inputs", {})
    settings = record.get("settings", {})
    lines = [
        f"pokedge bench ({settings.get('mode', '?')} mode, {record.get('elapsed_s', '?')} s)",
        f"  machine   {hw.get('cpu_model')} ({hw.get('machine')}), {hw.get('cores')} cores, {hw.get('memory_mb')} MB",
        f"  software  onnxruntime {hw.get('onnxruntime')}, faiss {hw.get('faiss')}, opencv {hw.get('opencv')}, "
        f"HailoRT {hw.get('hailort') or 'not installed'}",
        f"  model     {inputs.get('model')} ({inputs.get('source')})",
        f"  gallery   {inputs.get('gallery_rows')} rows, index {inputs.get('index')}",
        f"  frames    {settings.get('frames')} at {', '.join(settings.get('frame_sizes', []))}, "
        f"{settings.get('repeats')} repeats",
    ]
    for link in hw.get("hailo_pcie") or []:
        lines.append(f"  hailo     {link['address']} PCIe {link['link_speed']} x{link['link_width']}")
    return "\n".join(lines)


def _stages(record: dict) -> str:
    stages = record.get("stages_ms")
    if not stages:
        return ""
    rows = [("stage", "mean ms", "p50 ms", "p99 ms")]
    for stage in STAGE_ORDER:
        if stage in stages:
            rows.append((stage, *_triple(stages[stage])))
    for label, summary in stages.get("embed_by_backend", {}).items():
        per_crop = stages.get("embed_per_crop", {}).get(label)
        agreement = stages.get("embed_agreement", {}).get(label)
        cosine = f", cosine to fp32 >= {agreement['min_cosine']:.4f}" if agreement else ""
        rows.append((f"  embed {label} ({_num(per_crop)} ms/card{cosine})", *_triple(summary)))
    lines = [f"Per frame ({stages.get('crops_per_frame')} card crops a frame on average)", _table(rows)]
    overhead = record.get("hailo_host_overhead_us")
    if overhead:
        lines.append("Hailo backend host work, us per frame (scripts/hailo_overhead.py, batch 8): "
                     + ", ".join(f"{name} {value:.1f}" for name, value in overhead.items()))
    ratios = record.get("ratios", {})
    if ratios:
        lines.append("Ratios: " + ", ".join(f"{key} {_num(value)}" for key, value in ratios.items()))
    return "\n".join(lines)


def _throughput(record: dict) -> str:
    fps = record.get("fps")
    if not fps:
        return ""
    latency = record.get("latency_ms", {})
    rows = [("run", "frames/s", "latency p50 ms", "latency p99 ms"),
            ("sequential", _num(fps["sequential"]), *_pair(latency.get("sequential"))),
            (f"pipelined ({fps['detect_workers']} detect, {fps.get('embed_workers', 1)} embed x "
             f"{fps.get('pipelined_ort_threads')} ORT threads)",
             _num(fps["pipelined"]),
             *_pair(latency.get("pipelined")))]
    if "pipelined_bound" in fps:
        rows.append((f"bound: every core busy ({_num(fps['cpu_ms_per_frame'])} CPU ms a frame)",
                     _num(fps["pipelined_bound"]), "-", "-"))
    title = f"End to end (pipelined / sequential = {_num(fps['pipelined_vs_sequential'])}"
    if "pipelined_bound_vs_sequential" in fps:
        title += f", bound / sequential = {_num(fps['pipelined_bound_vs_sequential'])}"
    return title + ")\n" + _table(rows)


def _search(record: dict) -> str:
    records = record.get("search")
    if not records:
        return ""
    rows = [("rows", "index", "ms/query", "recall@1", "memory MB", "load s", "build s", "")]
    for entry in records:
        if "skipped" in entry:
            rows.append((f"{entry['n']:,}", entry["index"], "-", "-", "-", "-", "-", entry["skipped"]))
            continue
        rows.append((f"{entry['n']:,}", entry["index"], _num(entry["ms_per_query"]), _num(entry["recall_at_1"]),
                     _num(entry["memory_mb"]), _num(entry["load_s"]), _num(entry["build_s"]),
                     "chosen" if entry.get("chosen") else ""))
    return "Search scaling (1 FAISS thread, 6 queries a batch)\n" + _table(rows, left=(0, 1, 7))


def _cold_start(record: dict) -> str:
    cold = record.get("cold_start")
    if not cold:
        return ""
    lines = ["Cold start (whole process, imports included)", f"  command: {cold['command']}"]
    for name in ("gallery", "catalog"):
        part = cold[name]
        lines.append(f"  {part['rows']:>7,} rows: wall p50 {_num(part['wall_s']['p50'])} s, "
                     f"peak RSS p50 {_num(part['rss_mb']['p50'])} MB")
    lines.append(f"  first run with the catalog (builds and caches its index): {_num(cold['catalog']['first_run_s'])} s")
    lines.append("  load in process (s): " + ", ".join(f"{k} {_num(v)}" for k, v in cold["load_s"].items()))
    for frame, steps in cold.get("memory_steps", {}).items():
        added = ", ".join(f"{step['step']} +{step['added_mb']:.0f}" for step in steps)
        lines.append(f"  RSS by step with the catalog, {frame} frame (MB): {added}; peak {steps[-1]['peak_mb']:.0f}")
    imports = cold["imports"]
    slowest = ", ".join(f"{name} {ms:.0f}" for name, ms in list(imports["slowest_ms"].items())[:6])
    lines.append(f"  imports {imports['total_ms']:.0f} ms; slowest (ms): {slowest}")
    return "\n".join(lines)


def _compare(record: dict) -> str:
    compare = record.get("compare")
    if not compare:
        return ""
    a, b = compare["a"], compare["b"]
    rows = [("", "A: " + a["config"], "B: " + b["config"], "B / A")]
    rows.append(("frames/s", _num(a["fps"]), _num(b["fps"]), _num(compare["ratio_b_over_a"]["fps"])))
    for stage, value in a["stages_ms"].items():
        rows.append((f"{stage} ms", _num(value), _num(b["stages_ms"].get(stage)),
                     _num(compare["ratio_b_over_a"].get(stage))))
    return f"Comparison ({compare['rounds']} alternating rounds)\n" + _table(rows)


def _targets(record: dict) -> str:
    targets = record.get("targets")
    if not targets:
        return ""
    rows = [("target", "value", "limit", "met")]
    for entry in targets:
        met = {True: "yes", False: "NO", None: "not measured"}[entry["met"]]
        rows.append((entry["target"], _num(entry["value"]), entry["limit"], met))
    return "Targets on this machine\n" + _table(rows)


def _notes(record: dict) -> str:
    notes = record.get("notes")
    return "Notes\n" + "\n".join(f"  - {note}" for note in notes) if notes else ""


def _triple(summary: dict) -> tuple[str, str, str]:
    return _num(summary.get("mean")), _num(summary.get("p50")), _num(summary.get("p99"))


def _pair(summary: dict | None) -> tuple[str, str]:
    summary = summary or {}
    return _num(summary.get("p50")), _num(summary.get("p99"))


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(rows: list[tuple], left: tuple[int, ...] = (0,)) -> str:
    """Align `rows` in columns: numbers to the right, the columns in `left` (text) to the left."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [str(cell).ljust(width) if i in left else str(cell).rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)
