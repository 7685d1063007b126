"""Smoke test of scripts/train_student.py: a few steps on a handful of synthetic cards.

The full run is a documented command in models/README.md. This test checks
that the recipe runs end to end and exports a model the runtime accepts, and
that a run is reproducible from its seed and resumes from its checkpoint.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch", reason="the training smoke test needs the build extra: pip install -e '.[build]'")
pytest.importorskip("efficientnet_lite_pytorch", reason="the training smoke test needs the build extra")

REPO = Path(__file__).resolve().parent.parent
CARDS = 6


def _load_script():
    spec = importlib.util.spec_from_file_location("train_student", REPO / "scripts" / "train_student.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def card_folder(tmp_path_factory) -> Path:
    """data/gallery/cards.csv with image paths relative to data/, as the real reference folder has."""
    from pokedge.synth import make_test_card

    data = tmp_path_factory.mktemp("data")
    gallery = data / "gallery"
    gallery.mkdir()
    rng = np.random.default_rng(11)
    rows = []
    for i in range(CARDS):
        card_id = f"smoke-{i + 1}"
        cv2.imwrite(str(gallery / f"{card_id}.jpg"), make_test_card(rng, 240, 330))
        rows.append({"card_id": card_id, "name": f"Mon{i}", "set_id": "smoke", "set_name": "Smoke",
                     "number": str(i + 1), "image_path": f"gallery/{card_id}.jpg"})
    with open(gallery / "cards.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return gallery


def _run(script, card_folder: Path, work: Path, out: Path, *extra: str) -> dict:
    args = ["--gallery", str(card_folder), "--work-dir", str(work), "--out-dir", str(out),
            "--views", "3", "--val-views", "1", "--holdout", "0.2", "--epochs", "2", "--steps", "2",
            "--batch-size", "6", "--warmup", "1", "--workers", "1", "--int8-calibration", "4", *extra]
    assert script.main(args) == 0
    return json.loads((out / script.REPORT_FILE).read_text())


@pytest.fixture(scope="module")
def trained(card_folder, tmp_path_factory):
    script = _load_script()
    work, out = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("out")
    report = _run(script, card_folder, work, out)
    return script, work, out, report


def test_training_logs_every_epoch_with_validation(trained):
    _, _, _, report = trained

    assert [record["epoch"] for record in report["history"]] == [1, 2]
    for record in report["history"]:
        assert np.isfinite(record["loss"])
        assert 0.0 <= record["fit_exact"] <= 1.0
        assert 0.0 <= record["held_exact"] <= 1.0
    assert report["fit_cards"] + report["held_cards"] == CARDS
    assert report["held_cards"] == 1


def test_exported_models_run_in_the_runtime_backend(trained, card_folder):
    from pokedge.backends.onnx import OnnxBackend
    from pokedge.contract import load_contract
    from pokedge.preprocess import prepare_batch

    script, _, out, report = trained
    crops = [cv2.imread(str(card_folder / f"smoke-{i + 1}.jpg")) for i in range(3)]
    vectors = {}
    for name in (script.CONTRACT_FILE, script.INT8_CONTRACT_FILE):
        contract = load_contract(out / name)
        backend = OnnxBackend(contract, verify_checksum=True)
        vectors[name] = backend.embed(prepare_batch(crops, contract))
        backend.close()
        assert vectors[name].shape == (3, 768)
        assert np.allclose(np.linalg.norm(vectors[name], axis=1), 1.0, atol=1e-3)

    assert load_contract(out / script.INT8_CONTRACT_FILE).model_id == load_contract(out / script.CONTRACT_FILE).model_id
    cosine = np.sum(vectors[script.CONTRACT_FILE] * vectors[script.INT8_CONTRACT_FILE], axis=1)
    assert cosine.min() > 0.9
    assert report["int8"]["int8_cosine_mean"] > 0.9
    assert report["export"]["onnx_vs_torch_max_abs"] < 1e-4


def test_same_seed_gives_the_same_training(trained, card_folder, tmp_path):
    script, _, _, report = trained

    fresh = _run(script, card_folder, tmp_path / "work", tmp_path / "out")

    assert [r["loss"] for r in fresh["history"]] == pytest.approx([r["loss"] for r in report["history"]],
                                                                          rel=1e-5)


def test_rerun_resumes_from_checkpoint(trained, card_folder, caplog):
    script, work, out, report = trained

    with caplog.at_level("INFO"):
        resumed = _run(script, card_folder, work, out)

    assert any("resumed from" in record.getMessage() for record in caplog.records)
    assert resumed["history"] == report["history"]
