"""Shared fixtures of the Hailo tests: a tiny ONNX embedder, fake HEFs, and the HailoRT test double.

The double lives in tests/fake_hailo and is put on sys.path only by the
`fake_hailo` fixture. Import the fixtures into a test module with
`from tests.hailo_fixtures import *` or by name.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pokedge.backends import hailo_device, probe, select
from pokedge.contract import load_contract

TESTS_DIR = Path(__file__).resolve().parent
FAKE_DIR = TESTS_DIR / "fake_hailo"
REPO_ROOT = TESTS_DIR.parent
DEFAULT_ONNX_CONTRACT = REPO_ROOT / "models" / "pokedge-default.contract.json"

DIM = 768
SIZE = 224
HEF_INPUT = "pokedge_embedder/input_layer1"
HEF_OUTPUT = "pokedge_embedder/fc2"
# The ImageNet-normalized range [-2.5, 2.5] mapped onto 0..255, as the original
# project's recognizer quantized its input: q = (x + 2.5) / 5 * 255.
NORMALIZED_INPUT_QUANT = {"scale": 5.0 / 255.0, "zp": 127.5}
RAW_INPUT_QUANT = {"scale": 1.0, "zp": 0.0}


# ---------------------------------------------------------------- models

def build_tiny_onnx(path: Path, seed: int = 7) -> Path:
    """Write a small embedder with the default contract's I/O: `input` [N,3,224,224] -> `embeddings` [N,768]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    first = (rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)).astype(np.float32) * 2.0
    second = (rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)).astype(np.float32)

    nodes = [
        # 224 / 14 = 16, so pooling leaves 3 x 16 x 16 = 768 values per image.
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "first"], ["hidden"]),
        helper.make_node("Tanh", ["hidden"], ["activated"]),
        helper.make_node("MatMul", ["activated", "second"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], ["embeddings"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_embedder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", DIM])],
        initializer=[numpy_helper.from_array(first, "first"), numpy_helper.from_array(second, "second")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def sample_images(count: int, seed: int = 0) -> np.ndarray:
    """Card-like uint8 RGB images [count, 224, 224, 3]: smooth colour fields with blocks and a border."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    for i in range(count):
        base = rng.uniform(40, 215, size=3)
        waves = rng.uniform(0.5, 4.0, size=(3, 2))
        image = np.stack([
            base[c] + 35 * np.sin(2 * np.pi * (waves[c, 0] * xx + waves[c, 1] * yy) + rng.uniform(0, 6))
            for c in range(3)
        ], axis=-1)
        for _ in range(4):
            top, left = rng.integers(0, SIZE - 60, size=2)
            image[top:top + rng.integers(20, 60), left:left + rng.integers(20, 60)] = rng.uniform(0, 255, size=3)
        image[:8], image[-8:], image[:, :8], image[:, -8:] = 230, 230, 230, 230
        images[i] = np.clip(image + rng.normal(0, 4, size=image.shape), 0, 255).astype(np.uint8)
    return images


def onnx_contract_dict(model_id: str, file: str) -> dict:
    return {"schema": "pokedge.contract/1", "model_id": model_id, "file": file, "format": "onnx", "target": "cpu",
            "input": {"name": "input"}, "output": {"name": "embeddings", "dim": DIM}}


def hef_contract_dict(model_id: str, file: str, encoding: str, target: str = "hailo8l",
                      base: dict | None = None) -> dict:
    base_input = dict((base or {}).get("input", {}))
    base_input.update({"name": HEF_INPUT, "hailo_encoding": encoding})
    return {"schema": "pokedge.contract/1", "model_id": model_id, "file": file, "format": "hef", "target": target,
            "input": base_input, "output": {"name": HEF_OUTPUT, "dim": DIM}}


def calibrate_output_quant(onnx_path: Path, images: np.ndarray, input_spec: dict | None = None) -> dict:
    """Choose the output quantization (zero point 128) that covers the model's outputs on `images`, plus 5 %."""
    from pokedge.contract import contract_from_dict

    import onnxruntime

    spec = contract_from_dict({"model_id": "calibration", "file": "x", "input": input_spec or {}})
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    tensor = spec.encode_float(images)
    if fixed == 1:
        values = np.concatenate([session.run(None, {name: tensor[i:i + 1]})[0] for i in range(len(tensor))])
    else:
        values = session.run(None, {name: tensor})[0]
    max_abs = float(np.abs(values).max())
    return {"scale": max_abs * 1.05 / 127.0, "zp": 128.0}


def write_fake_hef(path: Path, onnx_path: Path, *, encoding: str, target: str = "hailo8l",
                   output_shape: tuple[int, ...] = (1, 1, DIM), output_quant: dict,
                   input_spec: dict | None = None) -> Path:
    """Write a fake HEF: JSON naming the ONNX model, the HEF target and its I/O facts."""
    spec = input_spec or {}
    data = {
        "fake_hef": 1,
        "target": target,
        "network_group": "pokedge_embedder",
        "onnx_model": os.path.relpath(onnx_path, path.parent),
        "input": {
            "name": HEF_INPUT,
            "shape": [SIZE, SIZE, 3],
            "encoding": encoding,
            "quant": RAW_INPUT_QUANT if encoding == "raw_uint8" else NORMALIZED_INPUT_QUANT,
            "scale": spec.get("scale", 1.0 / 255.0),
            "mean": list(spec.get("mean", (0.485, 0.456, 0.406))),
            "std": list(spec.get("std", (0.229, 0.224, 0.225))),
        },
        "output": {"name": HEF_OUTPUT, "shape": list(output_shape), "quant": output_quant},
    }
    path.write_text(json.dumps(data, indent=1))
    return path


@dataclass
class ModelSet:
    """An ONNX model with its contract, and fake HEFs (one per encoding) with theirs."""

    folder: Path
    onnx_contract: Path
    hef_contracts: dict[str, Path]
    output_quant: dict

    def onnx(self):
        return load_contract(self.onnx_contract)

    def hef(self, encoding: str = "raw_uint8"):
        return load_contract(self.hef_contracts[encoding])

    def write_hef_variant(self, name: str, *, encoding: str = "raw_uint8", target: str = "hailo8l",
                          output_shape: tuple[int, ...] = (1, 1, DIM), contract_encoding: str | None = None,
                          contract_target: str | None = None):
        """Write another fake HEF and contract in the same folder; return the loaded contract."""
        onnx_contract = json.loads(self.onnx_contract.read_text())
        hef = write_fake_hef(self.folder / f"{name}.hef", self.folder / onnx_contract["file"], encoding=encoding,
                             target=target, output_shape=output_shape, output_quant=self.output_quant,
                             input_spec=onnx_contract.get("input"))
        contract = hef_contract_dict(f"{name}:hailo", hef.name, contract_encoding or encoding,
                                     contract_target or target, base=onnx_contract)
        path = self.folder / f"{name}.contract.json"
        path.write_text(json.dumps(contract, indent=1))
        return load_contract(path)


def make_model_set(folder: Path, onnx_contract_path: Path | None = None) -> ModelSet:
    """Build the tiny ONNX model (or copy the given contract's model reference) and fake HEFs for it."""
    folder.mkdir(parents=True, exist_ok=True)
    if onnx_contract_path is None:
        onnx_path = build_tiny_onnx(folder / "tiny.onnx")
        onnx_contract = onnx_contract_dict("tiny-embedder:1", onnx_path.name)
        onnx_contract_path = folder / "tiny.contract.json"
        onnx_contract_path.write_text(json.dumps(onnx_contract, indent=1))
    else:
        onnx_contract = json.loads(onnx_contract_path.read_text())
        onnx_path = (onnx_contract_path.parent / onnx_contract["file"]).resolve()

    input_spec = onnx_contract.get("input")
    output_quant = calibrate_output_quant(onnx_path, sample_images(16, seed=99), input_spec)
    hef_contracts = {}
    for encoding in ("raw_uint8", "normalized_quantized"):
        hef = write_fake_hef(folder / f"embedder-{encoding}.hef", onnx_path, encoding=encoding,
                             output_quant=output_quant, input_spec=input_spec)
        contract = hef_contract_dict(f"{onnx_contract['model_id']}:hailo8l-{encoding}", hef.name, encoding,
                                     base=onnx_contract)
        contract_path = folder / f"embedder-{encoding}.contract.json"
        contract_path.write_text(json.dumps(contract, indent=1))
        hef_contracts[encoding] = contract_path
    return ModelSet(folder, onnx_contract_path, hef_contracts, output_quant)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> ModelSet:
    return make_model_set(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def default_models(tmp_path_factory) -> ModelSet:
    if not DEFAULT_ONNX_CONTRACT.is_file():
        pytest.skip(f"shipped default model contract {DEFAULT_ONNX_CONTRACT} is not built yet")
    return make_model_set(tmp_path_factory.mktemp("default_models"), DEFAULT_ONNX_CONTRACT)


# ---------------------------------------------------------------- the HailoRT double

def _purge_hailo_modules() -> None:
    for name in list(sys.modules):
        if name == "hailo_platform" or name.startswith("hailo_platform."):
            del sys.modules[name]


def _reset_pokedge_state() -> None:
    with hailo_device._lock:
        if hailo_device._vdevice is not None:
            hailo_device._release(hailo_device._vdevice)
        hailo_device._vdevice = None
        hailo_device._owner_pid = None
        hailo_device._users = 0
        hailo_device._options = None
        hailo_device._inherited.clear()
    select._warned.clear()


class FakeHailo:
    """Loads the double with chosen knobs; `knobs` is its `_pyhailort` module once loaded."""

    def __init__(self, monkeypatch, tmp_path: Path):
        self._monkeypatch = monkeypatch
        self.dev_dir = tmp_path / "dev"
        self.dev_dir.mkdir()
        monkeypatch.setattr(probe, "DEV_DIR", self.dev_dir)
        self.knobs = None

    def load(self, version: str = "4.23.0", devices: str = "0000:01:00.0=HAILO8L", nodes: int = 1, **env: str):
        """Import a fresh double of HailoRT `version` with `devices` ("id=ARCH,...") and `nodes` /dev nodes."""
        _purge_hailo_modules()
        _reset_pokedge_state()
        self._monkeypatch.setenv("FAKE_HAILORT_VERSION", version)
        self._monkeypatch.setenv("FAKE_HAILO_DEVICES", devices)
        for key, value in env.items():
            self._monkeypatch.setenv(key, value)
        for node in self.dev_dir.iterdir():
            node.unlink()
        for index in range(nodes):
            (self.dev_dir / f"hailo{index}").touch()
        if str(FAKE_DIR) not in sys.path:
            self._monkeypatch.syspath_prepend(str(FAKE_DIR))
        import hailo_platform.pyhailort._pyhailort as knobs

        self.knobs = knobs
        return knobs

    def remove(self) -> None:
        """Make `import hailo_platform` fail, as on a machine without HailoRT."""
        _purge_hailo_modules()
        _reset_pokedge_state()
        self._monkeypatch.setitem(sys.modules, "hailo_platform", None)


@pytest.fixture
def fake_hailo(monkeypatch, tmp_path):
    fake = FakeHailo(monkeypatch, tmp_path)
    yield fake
    _reset_pokedge_state()
    _purge_hailo_modules()
