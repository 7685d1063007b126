"""The model I/O contract: how card crops become the tensor a model expects.

A contract is a small JSON file stored beside its model. Every backend reads
its input size, layout, dtype, colour order and normalization from here, so a
new model needs a new contract file, not new code. The default values are
those of the original student (`student_stage2_final.onnx`): RGB, stretched
to 224x224, scaled to [0, 1], ImageNet mean/std, NCHW float32, input
`input`, output `embeddings` of shape [1, 768], rows of unit norm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pokedge.errors import ContractError

SCHEMA = "pokedge.contract/1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "uint8")
COLORS = ("RGB", "BGR")
NORMALIZATIONS = ("mean_std", "folded")
# How a uint8 HEF input is filled: raw pixels, or the normalized float
# mapped through the input's quantization parameters.
HAILO_ENCODINGS = ("raw_uint8", "normalized_quantized")
FORMATS = ("onnx", "hef")


@dataclass(frozen=True)
class InputSpec:
    name: str = "input"
    height: int = 224
    width: int = 224
    layout: str = "NCHW"
    dtype: str = "float32"
    color: str = "RGB"
    resize: str = "stretch"
    scale: float = 1.0 / 255.0
    normalization: str = "mean_std"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    hailo_encoding: str | None = None


@dataclass(frozen=True)
class OutputSpec:
    name: str = "embeddings"
    dim: int = 768
    l2_normalized: bool = True


@dataclass(frozen=True)
class ModelContract:
    """Model I/O facts, validated once at load."""

    model_id: str
    file: str
    format: str = "onnx"
    target: str = "cpu"
    sha256: str | None = None
    # sha256 of the fp32 model that this one was quantized or compiled from.
    # Both embed into the same space, so galleries built by that model serve this one.
    derived_from: str | None = None
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    source: Path | None = None

    @property
    def model_path(self) -> Path:
        """Path of the model file, relative to the contract file's folder."""
        base = self.source.parent if self.source else Path.cwd()
        return base / self.file

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data["input"]["mean"] = list(self.input.mean)
        data["input"]["std"] = list(self.input.std)
        return {"schema": SCHEMA, **data}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def encode_float(self, images: np.ndarray) -> np.ndarray:
        """Turn uint8 [N, H, W, 3] images in the contract's colour order into the float input tensor."""
        spec = self.input
        tensor = images.astype(np.float32) * np.float32(spec.scale)
        if spec.normalization == "mean_std":
            mean = np.asarray(spec.mean, dtype=np.float32)
            std = np.asarray(spec.std, dtype=np.float32)
            tensor = (tensor - mean) / std
        if spec.layout == "NCHW":
            tensor = tensor.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(tensor, dtype=np.float32)


def default_contract(model_id: str = "efficientnet-student-stage2:v2.0", file: str = "student_stage2_final.onnx") -> ModelContract:
    """Return the contract of the original student ONNX model."""
    return ModelContract(model_id=model_id, file=file)


def load_contract(path: Path | str) -> ModelContract:
    """Read and validate a contract file; raise ContractError naming the bad field."""
    path = Path(path)
    if path.suffix.lower() in (".onnx", ".hef") and path.is_file():
        contract = path.with_suffix(".contract.json")
        hint = f" such as {contract}" if contract.is_file() else ""
        raise ContractError(f"{path} is a model file, but a model contract (a .contract.json file) is expected; "
                            f"give the contract{hint}, which names the model file and its input and output")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ContractError(f"model contract not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"model contract {path} is not valid JSON: {exc}") from None

    return contract_from_dict(data, source=path)


def contract_from_dict(data: Any, source: Path | None = None) -> ModelContract:
    """Build a contract from parsed JSON, checking every field."""
    where = str(source) if source else "model contract"
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ContractError(f"{where}: unsupported schema {schema!r}; this pokedge reads {SCHEMA!r}")

    model_id = _require(data, "model_id", str, where)
    file = _require(data, "file", str, where)
    fmt = _choice(data.get("format", "onnx"), FORMATS, "format", where)
    target = data.get("target", "cpu")
    if not isinstance(target, str):
        raise ContractError(f"{where}: field 'target' must be a string, got {target!r}")
    sha256 = _optional_sha256(data, "sha256", where)
    derived_from = _optional_sha256(data, "derived_from", where)

    input_spec = _input_spec(data.get("input", {}), where)
    output_spec = _output_spec(data.get("output", {}), where)
    if fmt == "hef" and input_spec.hailo_encoding is None:
        raise ContractError(
            f"{where}: a HEF contract needs input.hailo_encoding, one of {', '.join(HAILO_ENCODINGS)}"
        )

    return ModelContract(
        model_id=model_id,
        file=file,
        format=fmt,
        target=target,
        sha256=sha256,
        derived_from=derived_from,
        input=input_spec,
        output=output_spec,
        source=source,
    )


def _optional_sha256(data: dict, key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not (isinstance(value, str) and len(value) == 64):
        raise ContractError(f"{where}: field {key!r} must be 64 hex digits, got {value!r}")
    return value


def _input_spec(data: Any, where: str) -> InputSpec:
    if not isinstance(data, dict):
        raise ContractError(f"{where}: field 'input' must be an object")
    defaults = InputSpec()

    height = _positive_int(data.get("height", defaults.height), "input.height", where)
    width = _positive_int(data.get("width", defaults.width), "input.width", where)
    mean = _triple(data.get("mean", defaults.mean), "input.mean", where)
    std = _triple(data.get("std", defaults.std), "input.std", where)
    if any(s <= 0 for s in std):
        raise ContractError(f"{where}: field 'input.std' must be positive, got {list(std)}")
    scale = data.get("scale", defaults.scale)
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ContractError(f"{where}: field 'input.scale' must be a positive number, got {scale!r}")
    resize = data.get("resize", defaults.resize)
    if resize != "stretch":
        raise ContractError(f"{where}: field 'input.resize' must be 'stretch', got {resize!r}")
    encoding = data.get("hailo_encoding")
    if encoding is not None:
        _choice(encoding, HAILO_ENCODINGS, "input.hailo_encoding", where)

    return InputSpec(
        name=_require(data, "name", str, where, prefix="input.", default=defaults.name),
        height=height,
        width=width,
        layout=_choice(data.get("layout", defaults.layout), LAYOUTS, "input.layout", where),
        dtype=_choice(data.get("dtype", defaults.dtype), DTYPES, "input.dtype", where),
        color=_choice(data.get("color", defaults.color), COLORS, "input.color", where),
        resize=resize,
        scale=float(scale),
        normalization=_choice(
            data.get("normalization", defaults.normalization), NORMALIZATIONS, "input.normalization", where
        ),
        mean=mean,
        std=std,
        hailo_encoding=encoding,
    )


def _output_spec(data: Any, where: str) -> OutputSpec:
    if not isinstance(data, dict):
        raise ContractError(f"{where}: field 'output' must be an object")
    defaults = OutputSpec()
    l2 = data.get("l2_normalized", defaults.l2_normalized)
    if not isinstance(l2, bool):
        raise ContractError(f"{where}: field 'output.l2_normalized' must be true or false, got {l2!r}")
    return OutputSpec(
        name=_require(data, "name", str, where, prefix="output.", default=defaults.name),
        dim=_positive_int(data.get("dim", defaults.dim), "output.dim", where),
        l2_normalized=l2,
    )


def _require(data: dict, key: str, kind: type, where: str, prefix: str = "", default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None:
        raise ContractError(f"{where}: missing field '{prefix}{key}'")
    if not isinstance(value, kind) or (kind is str and not value):
        raise ContractError(f"{where}: field '{prefix}{key}' must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _choice(value: Any, allowed: tuple[str, ...], name: str, where: str) -> str:
    if value not in allowed:
        raise ContractError(f"{where}: field '{name}' must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _positive_int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ContractError(f"{where}: field '{name}' must be a positive integer, got {value!r}")
    return value


def _triple(value: Any, name: str, where: str) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ContractError(f"{where}: field '{name}' must be a list of three numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
