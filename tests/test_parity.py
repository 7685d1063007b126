"""Parity records, the gallery rule built on them, and the `pokedge parity` command."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hailo_fixtures import fake_hailo, sample_images, tiny_models  # noqa: F401
from pokedge.backends.base import l2_normalize
from pokedge.backends.onnx import OnnxBackend
from pokedge.cli import main
from pokedge.errors import GalleryError
from pokedge.gallery.store import CardInfo, load_gallery, save_gallery
from pokedge.parity import (
    MIN_COSINE,
    ParityRecord,
    build_record,
    compare_embeddings,
    find_record,
    gallery_allowed,
    load_record,
    record_path,
    save_record,
)


class _Backend:
    def __init__(self, name, contract):
        self.name = name
        self.contract = contract


def _gallery(path, embeddings, producer):
    card_ids = [f"base1-{i}" for i in range(len(embeddings))]
    cards = {card_id: CardInfo(card_id, f"Card {i}", "base1", str(i)) for i, card_id in enumerate(card_ids)}
    save_gallery(path, embeddings, card_ids, cards, producer)
    return load_gallery(path)


def _record(onnx, hef, min_cosine=0.995, passed=True):
    stats = {"cosines": np.array([min_cosine, 0.999]), "mean_cosine": (min_cosine + 0.999) / 2,
             "min_cosine": min_cosine, "top1_agreement": 1.0, "top1_against": "test", "worst_samples": []}
    record = build_record(onnx, hef, stats, "4.23.0")
    record.passed = passed
    return record


def test_compare_self_retrieval():
    rng = np.random.default_rng(0)
    reference = l2_normalize(rng.standard_normal((10, 32)))
    candidate = l2_normalize(reference + rng.normal(0, 0.01, reference.shape))
    stats = compare_embeddings(reference, candidate, [f"s{i}" for i in range(10)])

    assert stats["min_cosine"] > 0.99
    assert stats["mean_cosine"] >= stats["min_cosine"]
    assert stats["top1_agreement"] == 1.0
    assert "samples themselves" in stats["top1_against"]
    assert len(stats["worst_samples"]) == 5
    assert stats["worst_samples"][0]["cosine"] == pytest.approx(stats["min_cosine"], abs=1e-6)


def test_compare_against_gallery(tmp_path):
    rng = np.random.default_rng(1)
    rows = l2_normalize(rng.standard_normal((8, 32)))
    gallery = _gallery(tmp_path / "g", rows, "m:1")
    reference = rows[:4]
    candidate = l2_normalize(np.stack([rows[0], rows[1], rows[5], rows[3]]))
    stats = compare_embeddings(reference, candidate, gallery=gallery)
    assert stats["top1_agreement"] == 0.75
    assert "gallery" in stats["top1_against"]


def test_compare_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        compare_embeddings(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32))


def test_record_round_trip(tiny_models):
    onnx, hef = tiny_models.onnx(), tiny_models.hef()
    record = _record(onnx, hef)
    path = record_path(hef)
    assert path.parent == hef.model_path.parent
    assert path.name == hef.model_path.stem + ".parity.json"

    save_record(record, path)
    loaded = load_record(path)
    assert isinstance(loaded, ParityRecord)
    assert loaded == record
    assert loaded.passed
    assert loaded.hef_sha256 and len(loaded.hef_sha256) == 64
    assert find_record(path.parent, hef.model_id, onnx.model_id)[0] == record
    path.unlink()


def test_record_fails_at_threshold(tiny_models):
    stats = {"cosines": np.array([MIN_COSINE]), "mean_cosine": MIN_COSINE, "min_cosine": MIN_COSINE,
             "top1_agreement": 1.0, "top1_against": "x", "worst_samples": []}
    assert not build_record(tiny_models.onnx(), tiny_models.hef(), stats).passed


def test_unreadable_record_ignored(tmp_path, caplog):
    path = tmp_path / "x.parity.json"
    path.write_text("{not json")
    assert load_record(path) is None
    path.write_text(json.dumps({"schema": "other"}))
    assert load_record(path) is None


class TestGalleryAllowed:
    @pytest.fixture
    def setup(self, tiny_models, tmp_path):
        onnx, hef = tiny_models.onnx(), tiny_models.write_hef_variant("rule")
        rows = l2_normalize(np.random.default_rng(2).standard_normal((4, 768)))
        gallery = _gallery(tmp_path / "gallery", rows, onnx.model_id)
        yield onnx, hef, gallery
        record_path(hef).unlink(missing_ok=True)

    def test_same_producer_allowed(self, setup):
        onnx, _, gallery = setup
        gallery_allowed(gallery, _Backend("onnx", onnx), onnx.model_path.parent)

    def test_hailo_without_record_rejected(self, setup):
        onnx, hef, gallery = setup
        with pytest.raises(GalleryError, match="no parity record"):
            gallery_allowed(gallery, _Backend("hailo", hef), hef.model_path.parent)

    def test_hailo_with_passing_record(self, setup):
        onnx, hef, gallery = setup
        save_record(_record(onnx, hef), record_path(hef))
        gallery_allowed(gallery, _Backend("hailo", hef), hef.model_path.parent)

    def test_hailo_with_failing_record(self, setup):
        onnx, hef, gallery = setup
        save_record(_record(onnx, hef, min_cosine=0.93, passed=False), record_path(hef))
        with pytest.raises(GalleryError, match="disagrees"):
            gallery_allowed(gallery, _Backend("hailo", hef), hef.model_path.parent)

    def test_changed_hef_invalidates_record(self, setup):
        onnx, hef, gallery = setup
        save_record(_record(onnx, hef), record_path(hef))
        data = json.loads(hef.model_path.read_text())
        data["note"] = "recompiled"
        hef.model_path.write_text(json.dumps(data))
        with pytest.raises(GalleryError, match="sha256 changed"):
            gallery_allowed(gallery, _Backend("hailo", hef), hef.model_path.parent)

    def test_record_for_other_models_ignored(self, setup, tiny_models):
        onnx, hef, gallery = setup
        other = tiny_models.write_hef_variant("other")
        save_record(_record(onnx, other), record_path(other))
        try:
            with pytest.raises(GalleryError, match="no parity record"):
                gallery_allowed(gallery, _Backend("hailo", hef), hef.model_path.parent)
        finally:
            record_path(other).unlink()

    def test_dimension_mismatch_rejected(self, setup, tmp_path):
        onnx, hef, _ = setup
        small = _gallery(tmp_path / "small", l2_normalize(np.ones((2, 16))), onnx.model_id)
        with pytest.raises(GalleryError, match="16-dim"):
            gallery_allowed(small, _Backend("onnx", onnx), onnx.model_path.parent)


@pytest.fixture
def samples(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, image in enumerate(sample_images(6, seed=21)):
        cv2.imwrite(str(folder / f"card{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def _parity_args(tiny_models, samples, tmp_path, hef_contract):
    return ["parity", "--samples", str(samples), "--model", str(tiny_models.onnx_contract),
            "--hef", str(hef_contract), "--data-dir", str(tmp_path / "data"), "--gallery", str(tmp_path / "none")]


def test_parity_command_passes_and_stores(fake_hailo, tiny_models, samples, tmp_path, capsys):
    fake_hailo.load()
    hef = tiny_models.write_hef_variant("cli-pass")
    status = main(_parity_args(tiny_models, samples, tmp_path, hef.source))
    output = capsys.readouterr().out

    assert status == 0
    assert "mean cosine" in output
    assert "min cosine" in output
    assert "top-1 agreement  100.0%" in output
    assert "PASS" in output
    record = load_record(record_path(hef))
    assert record.passed
    assert record.count == 6
    assert record.min_cosine > 0.999
    assert record.hailo_encoding == "raw_uint8"

    onnx = tiny_models.onnx()
    gallery_rows = OnnxBackend(onnx).embed(sample_images(3, seed=4))
    gallery = _gallery(tmp_path / "gallery", gallery_rows, onnx.model_id)
    gallery_allowed(gallery, _Backend("hailo", hef), hef.model_path.parent)
    record_path(hef).unlink()


def test_parity_command_fails_wrong_encoding(fake_hailo, tiny_models, samples, tmp_path, capsys):
    fake_hailo.load()
    hef = tiny_models.write_hef_variant("cli-fail", encoding="raw_uint8", contract_encoding="normalized_quantized")
    status = main(_parity_args(tiny_models, samples, tmp_path, hef.source) + ["--json"])
    output = json.loads(capsys.readouterr().out)

    assert status == 1
    assert output["passed"] is False
    assert output["min_cosine"] < MIN_COSINE
    assert output["record_path"] == str(record_path(hef))
    assert load_record(record_path(hef)).passed is False
    record_path(hef).unlink()


def test_parity_command_without_device(fake_hailo, tiny_models, samples, tmp_path, capsys):
    fake_hailo.load(nodes=0)
    status = main(_parity_args(tiny_models, samples, tmp_path, tiny_models.hef_contracts["raw_uint8"]))
    error = capsys.readouterr().err
    assert status == 1
    assert "needs the Hailo device" in error
    assert "no Hailo device node" in error


def test_parity_command_empty_samples(fake_hailo, tiny_models, tmp_path, capsys):
    fake_hailo.load()
    empty = tmp_path / "empty"
    empty.mkdir()
    status = main(_parity_args(tiny_models, empty, tmp_path, tiny_models.hef_contracts["raw_uint8"]))
    assert status == 1
    assert "no images in" in capsys.readouterr().err
