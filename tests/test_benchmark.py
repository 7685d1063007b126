"""`pokedge bench` in its quickest mode on the tiny model: the JSON keys and that every figure is a real number.

No timing is asserted: the machine is shared and the figures are noisy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pokedge.bench.compare import parse_config, parse_pair
from pokedge.bench.stats import summarize

QUICKEST = ["--quick", "--frames", "1", "--repeats", "1", "--search-sizes", "601", "--search-kinds", "flat,hnsw_sq8",
            "--catalog-cards", "700"]


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pokedge", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def record(tiny_contract, tiny_gallery, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = _bench(*QUICKEST, "--json", "--out", str(out), "--model", str(tiny_contract), "--gallery", str(tiny_gallery))
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert json.loads(out.read_text()) == printed
    return printed


def test_record_top_level_keys(record):
    for key in ("hardware", "stages_ms", "fps", "search", "rss_mb", "cold_start_s", "ratios", "targets"):
        assert key in record, key


def test_hardware_facts(record):
    hardware = record["hardware"]
    assert hardware["cpu_model"]
    assert hardware["cores"] >= 1
    assert _positive(hardware["memory_mb"])
    assert hardware["onnxruntime"]
    assert hardware["faiss"]
    assert "hailort" in hardware
    assert isinstance(hardware["hailo_pcie"], list)


@pytest.mark.parametrize("stage", ["decode", "detect", "preprocess", "embed", "search"])
def test_stage_summaries_are_positive(record, stage):
    summary = record["stages_ms"][stage]
    for statistic in ("mean", "p50", "p99"):
        assert _positive(summary[statistic]), (stage, statistic, summary)


def test_embedding_per_backend(record):
    by_backend = record["stages_ms"]["embed_by_backend"]
    assert "onnx-fp32" in by_backend
    for label, summary in by_backend.items():
        assert _positive(summary["mean"]), label


def test_fps_figures(record):
    fps = record["fps"]
    assert _positive(fps["sequential"])
    assert _positive(fps["pipelined"])
    assert _positive(fps["pipelined_vs_sequential"])
    assert _positive(record["latency_ms"]["pipelined"]["p50"])
    assert _positive(fps["cpu_ms_per_frame"])
    assert fps["pipelined_bound"] == pytest.approx(record["hardware"]["cores_usable"] * 1000 / fps["cpu_ms_per_frame"],
                                                   rel=0.01)
    assert 0 < fps["pipelined_cpu_utilization"] <= record["hardware"]["cores_usable"] + 0.2


def test_search_records(record):
    entries = record["search"]
    assert {entry["kind"] for entry in entries} == {"flat", "hnsw_sq8"}
    for entry in entries:
        assert entry["n"] == 601
        assert _positive(entry["ms_per_query"]), entry
        assert 0.0 < entry["recall_at_1"] <= 1.0, entry
        assert _positive(entry["memory_mb"]), entry
        assert _positive(entry["load_s"]), entry
    assert [entry["kind"] for entry in entries if entry["chosen"]] == ["flat"]


def test_cold_start_and_memory(record):
    assert _positive(record["rss_mb"])
    assert _positive(record["cold_start_s"])
    cold = record["cold_start"]
    assert cold["catalog"]["rows"] == 700
    assert _positive(cold["imports"]["total_ms"])
    assert _positive(cold["load_s"]["model"])


def test_targets_listed(record):
    targets = record["targets"]
    assert len(targets) == 6
    assert all(entry["met"] in (True, False, None) for entry in targets)


def test_compare_prints_ratio(tiny_contract, tiny_gallery):
    done = _bench("--quick", "--frames", "1", "--only-compare", "--compare", "threads=1,threads=2", "--json",
                  "--model", str(tiny_contract), "--gallery", str(tiny_gallery))
    assert done.returncode == 0, done.stderr[-2000:]
    compare = json.loads(done.stdout)["compare"]
    assert compare["a"]["config"] == "threads=1"
    assert compare["b"]["config"] == "threads=2"
    assert _positive(compare["ratio_b_over_a"]["fps"])
    assert _positive(compare["a"]["stages_ms"]["embed"])


def test_compare_rejects_bad_setting():
    done = _bench("--only-compare", "--compare", "threads=1,colour=blue")
    assert done.returncode == 1
    assert "unknown setting 'colour'" in done.stderr


def test_parse_config_settings():
    config = parse_config("backend=onnx-int8+threads=1+mode=pipelined+detect_workers=2")
    assert (config.backend, config.threads, config.mode, config.detect_workers) == ("onnx-int8", 1, "pipelined", 2)


@pytest.mark.parametrize("text, message", [
    ("threads=1", "two configurations"),
    ("threads=x,threads=2", "must be an integer"),
    ("mode=async,threads=2", "mode must be one of"),
    ("threads,threads=2", "key=value"),
])
def test_parse_pair_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pair(text)


def test_summarize_statistics():
    summary = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary["mean"] == 22.0
    assert summary["p50"] == 3.0
    assert 96.0 < summary["p99"] <= 100.0
    assert math.isnan(summarize([])["mean"])


def test_shipped_int8_matches_its_model(tmp_path):
    import dataclasses

    from pokedge.bench.context import shipped_int8
    from pokedge.contract import default_contract, load_contract

    fp32 = dataclasses.replace(default_contract(model_id="m:1", file="m.onnx"), sha256="a" * 64)
    fp32.save(tmp_path / "m.contract.json")
    fp32 = load_contract(tmp_path / "m.contract.json")
    assert shipped_int8(fp32) is None

    int8 = dataclasses.replace(fp32, file="m-int8.onnx", sha256="b" * 64, derived_from="a" * 64, source=None)
    int8.save(tmp_path / "m-int8.contract.json")
    assert shipped_int8(fp32) == tmp_path / "m-int8.contract.json"

    dataclasses.replace(int8, derived_from="c" * 64).save(tmp_path / "m-int8.contract.json")
    assert shipped_int8(fp32) is None


def test_stage_pass_keeps_embeddings(tiny_recognizer):
    from collections import defaultdict

    from pokedge import synth
    from pokedge.bench.stages import StageSamples, _measure_pass
    from pokedge.detection.types import Detection

    rng = np.random.default_rng(5)
    scene = synth.render_scene(synth.make_test_card(rng), rng, ("clean",), frame_size=(960, 720))
    detections = [Detection(quad=scene.quads[0], score=1.0, strategy="test")]

    crops, hits = _measure_pass(tiny_recognizer, lambda: tiny_recognizer.main_crops(scene.frame, detections), {},
                                defaultdict(float), defaultdict(float), StageSamples())

    assert len(crops) == len(hits) == 2
    assert all(crop.embedding is not None for crop in crops), "the decide stage needs them for the blur check"
