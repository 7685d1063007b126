import json

import numpy as np
import pytest

from pokedge.backends.onnx import MAX_BATCH, OnnxBackend
from pokedge.contract import load_contract
from pokedge.errors import BackendError
from tiny_model import build_tiny_model


def test_embeds_batch_to_unit_rows(tiny_contract):
    backend = OnnxBackend(load_contract(tiny_contract))
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    vectors = backend.embed(images)
    assert vectors.shape == (3, 768)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batch_equals_single_calls(tiny_contract):
    backend = OnnxBackend(load_contract(tiny_contract))
    images = np.random.default_rng(1).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    batch = backend.embed(images)
    single = np.concatenate([backend.embed(images[i : i + 1]) for i in range(4)])
    assert np.allclose(batch, single, atol=1e-5)


def test_large_batch_split_into_calls(tiny_contract):
    backend = OnnxBackend(load_contract(tiny_contract))
    images = np.random.default_rng(2).integers(0, 256, (2 * MAX_BATCH + 1, 224, 224, 3), dtype=np.uint8)
    single = np.concatenate([backend.embed(images[i : i + 1]) for i in range(len(images))])

    calls = []
    run = backend._run

    def counted_run(tensor):
        calls.append(len(tensor))
        return run(tensor)

    backend._run = counted_run
    batch = backend.embed(images)

    assert calls == [MAX_BATCH, MAX_BATCH, 1]
    assert np.allclose(batch, single, atol=1e-5)


def test_wrong_input_name_is_explained(tmp_path, tiny_contract):
    data = json.loads(tiny_contract.read_text())
    data["input"]["name"] = "image"
    path = tiny_contract.parent / "renamed.contract.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BackendError, match=r"has inputs \['input'\].*input 'image'"):
        OnnxBackend(load_contract(path))


def test_output_dim_mismatch(tmp_path):
    contract_path = build_tiny_model(tmp_path, dim=512)
    data = json.loads(contract_path.read_text())
    data["output"]["dim"] = 768
    contract_path.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="512 values per image, but the contract says dim 768"):
        OnnxBackend(load_contract(contract_path))


def test_missing_model_file(tmp_path, tiny_contract):
    data = json.loads(tiny_contract.read_text())
    data["file"] = "gone.onnx"
    path = tmp_path / "gone.contract.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="ONNX model not found"):
        OnnxBackend(load_contract(path))


def test_corrupt_model_file(tmp_path, tiny_contract):
    (tmp_path / "tiny.onnx").write_bytes(b"\x08\x01garbage" * 10)
    data = json.loads(tiny_contract.read_text())
    data.pop("sha256")
    path = tmp_path / "tiny.contract.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="could not load"):
        OnnxBackend(load_contract(path))


def test_corrupt_model_reports_sha256_mismatch(tmp_path, tiny_contract):
    (tmp_path / "tiny.onnx").write_bytes(b"\x08\x01garbage" * 10)
    data = json.loads(tiny_contract.read_text())
    path = tmp_path / "tiny.contract.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="damaged or replaced"):
        OnnxBackend(load_contract(path))


def test_checksum_mismatch(tmp_path, tiny_contract):
    data = json.loads(tiny_contract.read_text())
    data["sha256"] = "0" * 64
    path = tiny_contract.parent / "badsum.contract.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="checksum mismatch"):
        OnnxBackend(load_contract(path), verify_checksum=True)


def test_wrong_image_size_rejected(tiny_contract):
    backend = OnnxBackend(load_contract(tiny_contract))
    with pytest.raises(ValueError, match="224, 224, 3"):
        backend.embed(np.zeros((1, 100, 100, 3), np.uint8))
