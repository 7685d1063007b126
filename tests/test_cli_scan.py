"""`pokedge scan` as a user runs it: a real subprocess, real files, real exit codes."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pokedge import synth
from pokedge.capture.image import read_image
from pokedge.gallery.build import read_cards_csv


def _run(*args, cwd=None):
    env = {**os.environ, "POKEDGE_DATA_DIR": str(cwd or "/nonexistent-pokedge-data")}
    return subprocess.run([sys.executable, "-m", "pokedge", *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory, synthetic_cards):
    rows = read_cards_csv(synthetic_cards / "cards.csv")
    scene = synth.render_scene(read_image(rows[7].image), np.random.default_rng(2), ("clean",), frame_size=(960, 720))
    path = tmp_path_factory.mktemp("scan") / "scene.jpg"
    cv2.imwrite(str(path), scene.frame)
    return path, rows[7].card


def _model_args(tiny_contract, tiny_gallery):
    return ["--model", str(tiny_contract), "--gallery", str(tiny_gallery), "--backend", "onnx"]


def test_json_report_has_every_field(scene_file, tiny_contract, tiny_gallery):
    path, card = scene_file
    result = _run("scan", "--image", str(path), "--json", "--top-k", "4", *_model_args(tiny_contract, tiny_gallery))
    assert result.returncode == 0, result.stderr

    report = json.loads(result.stdout.splitlines()[0])
    assert report["image"] == str(path)
    assert report["backend"] == "onnx"
    assert report["model"] == "tests-tiny-pool16:1"
    assert set(report["timings_ms"]) >= {"detect", "preprocess", "embed", "search"}
    found = report["cards"][0]
    assert set(found) >= {"card_id", "name", "set_id", "number", "score", "status", "quad", "alternatives"}
    assert found["alternatives"][0]["card_id"] == card.card_id
    assert len(found["alternatives"]) <= 4
    assert len(found["quad"]) == 4 and all(len(p) == 2 for p in found["quad"])


def test_bad_inputs_do_not_stop_the_run(tmp_path, scene_file, tiny_contract, tiny_gallery):
    good, _ = scene_file
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:5000])
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    missing = tmp_path / "missing.jpg"

    inputs = [empty, text, good, truncated, tiny, missing]
    result = _run("scan", "--json", *map(str, inputs), *_model_args(tiny_contract, tiny_gallery))

    assert result.returncode == 1
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in reports] == [str(p) for p in inputs]
    assert "cards" in reports[2]
    assert "error" not in reports[2]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 5
    for path, line in zip([empty, text, truncated, tiny, missing], errors):
        assert str(path) in line


def test_table_output_names_the_card(scene_file, tiny_contract, tiny_gallery):
    path, card = scene_file
    result = _run("scan", str(path), "--top-k", "2", *_model_args(tiny_contract, tiny_gallery))
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    assert card.card_id in result.stdout


def test_mismatched_gallery_names_both_models(tmp_path, scene_file, tiny_gallery):
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other", model_id="other-model:7")
    path, _ = scene_file
    result = _run("scan", str(path), "--model", str(other), "--gallery", str(tiny_gallery), "--backend", "onnx")
    assert result.returncode == 1
    assert "tests-tiny-pool16:1" in result.stderr
    assert "other-model:7" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_image_is_a_usage_error():
    result = _run("scan")
    assert result.returncode == 1
    assert "no image given" in result.stderr


def test_sample_frame_is_scannable(tmp_path, tiny_contract, tiny_gallery):
    path = tmp_path / "demo.jpg"
    made = _run("sample-frame", str(path))
    assert made.returncode == 0, made.stderr
    result = _run("scan", "--json", str(path), *_model_args(tiny_contract, tiny_gallery))
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["cards"]) == 1


def test_sample_frame_rejects_non_jpeg_path(tmp_path):
    result = _run("sample-frame", str(tmp_path / "demo.txt"))
    assert result.returncode == 1
    assert "give a path ending in .jpg" in result.stderr
    assert "Traceback" not in result.stderr


def test_save_crops_rejects_file_path(tmp_path, scene_file, tiny_contract, tiny_gallery):
    crop_file = tmp_path / "crops.png"
    crop_file.write_text("not a folder")
    result = _run("scan", str(scene_file[0]), "--save-crops", str(crop_file), *_model_args(tiny_contract, tiny_gallery))
    assert result.returncode == 1
    assert "is a file; give a folder" in result.stderr
    assert "Traceback" not in result.stderr
