import dataclasses
import json

import numpy as np
import pytest

from pokedge.contract import IMAGENET_MEAN, IMAGENET_STD, contract_from_dict, default_contract, load_contract
from pokedge.errors import ContractError


def test_default_matches_original_student():
    contract = default_contract()
    assert contract.input.name == "input"
    assert (contract.input.height, contract.input.width) == (224, 224)
    assert contract.input.layout == "NCHW"
    assert contract.input.dtype == "float32"
    assert contract.input.color == "RGB"
    assert contract.input.normalization == "mean_std"
    assert contract.input.mean == IMAGENET_MEAN
    assert contract.input.std == IMAGENET_STD
    assert contract.output.name == "embeddings"
    assert contract.output.dim == 768


def test_round_trip_through_json(tmp_path):
    path = tmp_path / "m.contract.json"
    default_contract(model_id="m:1", file="m.onnx").save(path)
    loaded = load_contract(path)
    assert loaded.model_id == "m:1"
    assert loaded.input == default_contract().input
    assert loaded.model_path == tmp_path / "m.onnx"


def test_encode_float_applies_scale_mean_std_and_layout():
    contract = default_contract()
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    tensor = contract.encode_float(images)
    assert tensor.shape == (2, 3, 224, 224)
    expected = (images[1, 10, 20, 2] / 255.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]
    assert tensor[1, 2, 10, 20] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("field, value, named", [
    ("layout", "CHWN", "input.layout"),
    ("color", "YUV", "input.color"),
    ("height", 0, "input.height"),
    ("std", [1, 0, 1], "input.std"),
    ("mean", [0.5, 0.5], "input.mean"),
])
def test_bad_input_field_is_named(field, value, named):
    data = default_contract(model_id="m:1", file="m.onnx").to_dict()
    data["input"][field] = value
    with pytest.raises(ContractError, match=named.replace(".", r"\.")):
        contract_from_dict(data)


def test_missing_model_id_is_named():
    data = default_contract().to_dict()
    del data["model_id"]
    with pytest.raises(ContractError, match="model_id"):
        contract_from_dict(data)


def test_hef_contract_needs_encoding():
    data = default_contract().to_dict()
    data["format"] = "hef"
    with pytest.raises(ContractError, match="hailo_encoding"):
        contract_from_dict(data)


def test_not_json_is_reported(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ContractError, match="not valid JSON"):
        load_contract(path)


def test_model_file_given_as_contract_rejected(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(b"onnx bytes")
    (tmp_path / "tiny.contract.json").write_text("{}")
    with pytest.raises(ContractError, match=r"model contract \(a \.contract\.json file\).*tiny\.contract\.json"):
        load_contract(model)


def test_unknown_schema_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**default_contract().to_dict(), "schema": "pokedge.contract/9"}))
    with pytest.raises(ContractError, match="unsupported schema"):
        load_contract(path)


def test_derived_from_round_trips(tmp_path):
    path = tmp_path / "m-int8.contract.json"
    contract = default_contract(model_id="m:1", file="m-int8.onnx")
    dataclasses.replace(contract, sha256="b" * 64, derived_from="a" * 64).save(path)

    loaded = load_contract(path)

    assert loaded.derived_from == "a" * 64
    assert loaded.sha256 == "b" * 64


def test_bad_derived_from_is_named():
    data = default_contract(model_id="m:1", file="m.onnx").to_dict()
    data["derived_from"] = "not-a-digest"

    with pytest.raises(ContractError, match="derived_from"):
        contract_from_dict(data)


def test_quantized_copy_uses_the_fp32_gallery(tmp_path, tiny_contract, tiny_gallery):
    import onnx

    from pokedge.contract import file_sha256
    from pokedge.errors import GalleryError
    from pokedge.recognition.runtime import RuntimeSources, open_recognizer

    fp32 = load_contract(tiny_contract)
    # A copy of the model with another doc string plays the quantized copy, because its sha256 differs.
    model = onnx.load(str(fp32.model_path))
    model.doc_string = "quantized copy"
    onnx.save(model, str(tmp_path / "copy.onnx"))
    copy = dataclasses.replace(fp32, file="copy.onnx", sha256=file_sha256(tmp_path / "copy.onnx"), source=None)

    dataclasses.replace(copy, derived_from=None).save(tmp_path / "unrelated.contract.json")
    with pytest.raises(GalleryError, match="sha256"):
        open_recognizer(RuntimeSources(tmp_path / "unrelated.contract.json", tiny_gallery), backend="onnx")

    dataclasses.replace(copy, derived_from=file_sha256(fp32.model_path)).save(tmp_path / "copy.contract.json")
    recognizer = open_recognizer(RuntimeSources(tmp_path / "copy.contract.json", tiny_gallery), backend="onnx")
    assert recognizer.backend.contract.derived_from == file_sha256(fp32.model_path)
    recognizer.backend.close()
