"""ONNX Runtime backend on the CPU: the fallback wherever no Hailo device is usable."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pokedge.backends.base import check_images, l2_normalize
from pokedge.contract import ModelContract, file_sha256
from pokedge.errors import BackendError
from pokedge.heap import fix_mmap_threshold

_log = logging.getLogger(__name__)

NAME = "onnx"

# Crops per ONNX Runtime call. A 3x3 binder page gives about 54 crops; in one
# call ORT's activations for them peaked near 400 MB of RSS on x86_64. Each
# crop in a call adds about 6 MB to the call's peak (the default
# EfficientNet-Lite0 model, ORT 1.32, x86_64). On the 2-core benchmark
# machine, 4 and 8 crops a call took the same time per crop within the noise.
# 2 crops took 5% longer per crop (8.5 ms against 8.1 ms), but they lowered a
# scan's peak RSS by 14 MB, which keeps it under the 200 MB target.
MAX_BATCH = 2


class OnnxBackend:
    """Runs an ONNX embedding model with ONNX Runtime's CPU provider."""

    name = NAME

    def __init__(self, contract: ModelContract, threads: int | None = None, verify_checksum: bool = False):
        import onnxruntime as ort

        self.contract = contract
        path = contract.model_path
        if not path.is_file():
            raise BackendError(f"ONNX model not found: {path} (named by contract {contract.source})")
        if verify_checksum and contract.sha256:
            _verify_sha256(path, contract.sha256)

        # Set before the session allocates, because every call frees activation
        # blocks of several MB that glibc would otherwise keep in the heap.
        fix_mmap_threshold()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Without the arena, memory of a large batch goes back after the call
        # instead of staying reserved for the life of the process.
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"ONNX Runtime could not load {path}: {exc}{_damage_hint(path, contract)}") from exc

        self._input_name, self._fixed_batch = self._check_input()
        self._output_name = self._check_output()
        _log.info("ONNX backend ready: %s (model %s, batch %s)", path.name, contract.model_id,
                  self._fixed_batch or "dynamic")

    def _check_input(self) -> tuple[str, int | None]:
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        spec = self.contract.input
        if spec.name not in names:
            raise BackendError(
                f"model {self.contract.model_path.name} has inputs {names}, but its contract names "
                f"input '{spec.name}'; fix input.name in {self.contract.source}"
            )
        node = inputs[names.index(spec.name)]
        if spec.dtype != "float32" or node.type != "tensor(float)":
            raise BackendError(
                f"the ONNX backend feeds float32 tensors; input '{spec.name}' is {node.type} and the "
                f"contract says {spec.dtype}"
            )

        shape = list(node.shape)
        if spec.layout == "NCHW":
            expected = [3, spec.height, spec.width]
        else:
            expected = [spec.height, spec.width, 3]
        static = [d for d in shape[1:]]
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(static, expected)):
            raise BackendError(
                f"input '{spec.name}' has shape {shape}, but the contract says {spec.layout} "
                f"{spec.height}x{spec.width}x3; fix the contract or re-export the model"
            )
        fixed_batch = shape[0] if isinstance(shape[0], int) else None
        return spec.name, fixed_batch

    def _check_output(self) -> str:
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        spec = self.contract.output
        if spec.name not in names:
            raise BackendError(
                f"model {self.contract.model_path.name} has outputs {names}, but its contract names "
                f"output '{spec.name}'; fix output.name in {self.contract.source}"
            )
        shape = outputs[names.index(spec.name)].shape
        last = shape[-1] if shape else None
        if isinstance(last, int) and last != spec.dim:
            raise BackendError(
                f"output '{spec.name}' has {last} values per image, but the contract says dim {spec.dim}"
            )
        return spec.name

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed uint8 images [N, H, W, 3]; return float32 [N, D] with unit-norm rows."""
        images = check_images(images, self.contract)
        if len(images) == 0:
            return np.zeros((0, self.contract.output.dim), dtype=np.float32)

        # Models exported with a fixed batch of 1 (like the original student) run one image a call.
        step = 1 if self._fixed_batch == 1 else MAX_BATCH
        # Each call encodes only its own images, because float32 NCHW is 4 times the uint8 size. Encoding
        # a 3x3 binder frame's second-look crops at once raised the peak RSS of its scan by about 50 MB.
        rows = [self._run(self.contract.encode_float(images[i : i + step])) for i in range(0, len(images), step)]
        vectors = np.concatenate(rows, axis=0)

        vectors = vectors.reshape(len(images), -1)
        if vectors.shape[1] != self.contract.output.dim:
            raise BackendError(
                f"model returned {vectors.shape[1]} values per image, contract says {self.contract.output.dim}"
            )
        return l2_normalize(vectors)

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self._output_name], {self._input_name: tensor})
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None


def _damage_hint(path: Path, contract: ModelContract) -> str:
    """Return an error hint that tells whether a model that failed to load still matches its contract's sha256."""
    if not contract.sha256:
        return ""
    actual = file_sha256(path)
    if actual != contract.sha256:
        return (f"; its sha256 is {actual[:12]}..., not the contract's {contract.sha256[:12]}..., so the file is "
                f"damaged or replaced: copy it again or run 'pokedge sync'")
    return "; the file matches the contract's sha256, so this ONNX Runtime cannot read the model"


def _verify_sha256(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise BackendError(
            f"checksum mismatch for {path}: sha256 {actual}, contract expects {expected}; "
            f"the file is damaged or belongs to another model"
        )
