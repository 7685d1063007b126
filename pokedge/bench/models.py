"""The model and gallery the benchmark runs, and the backends it compares.

The shipped default model and gallery are used when they exist. Without
them (a checkout where they are not built yet) the benchmark falls back to
the tests' tiny pooling model and a gallery of synthetic cards, and notes it
in its output. Its embedding figures are then far below a real network's.

Extra backends: ONNX INT8 (static quantization of the fp32 model, calibrated
on rendered card crops and cached in the temp folder), and Hailo: a real
device when HailoRT and a HEF contract are present, else the HailoRT test
double when POKEDGE_BENCH_HAILO_DOUBLE names its folder (scripts/benchmark.py
sets it to the copy under tests/; the package itself never ships or finds
the double). The double is labelled "hailo-double": it runs the ONNX model
on the CPU, so it measures pokedge's Hailo code path, not the NPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pokedge import paths
from pokedge.contract import ModelContract, file_sha256, load_contract

_log = logging.getLogger(__name__)

TESTS_DIR = paths.REPO_ROOT / "tests"
CACHE_DIR = Path(tempfile.gettempdir()) / "pokedge-bench-cache"
SYNTHETIC_GALLERY_CARDS = 601


@dataclass
class BenchInputs:
    """The model contract and gallery folder under test, and where they came from."""

    onnx_contract: Path
    gallery_dir: Path
    source: str  # "shipped-default", "explicit" or "tiny-fallback"
    hef_contract: Path | None = None
    notes: list[str] = field(default_factory=list)


def resolve_inputs(workdir: Path, model: Path | None = None, gallery: Path | None = None) -> BenchInputs:
    """Pick the model and gallery: explicit paths, else the shipped defaults, else the tiny fallback."""
    if model or gallery:
        return BenchInputs(Path(model or paths.DEFAULT_CONTRACT), Path(gallery or paths.DEFAULT_GALLERY), "explicit")
    if paths.DEFAULT_CONTRACT.is_file() and (paths.DEFAULT_GALLERY / "embeddings.npy").is_file():
        return BenchInputs(paths.DEFAULT_CONTRACT, paths.DEFAULT_GALLERY, "shipped-default")
    return _tiny_fallback(workdir)


def _tiny_fallback(workdir: Path) -> BenchInputs:
    """Build the tests' tiny model and a gallery of synthetic cards embedded with it."""
    tiny_model = _import_from_tests("tiny_model")
    if tiny_model is None:
        raise FileNotFoundError(
            f"no model to benchmark: {paths.DEFAULT_CONTRACT} is missing and tests/tiny_model.py is not in "
            f"{TESTS_DIR}; pass --model CONTRACT and --gallery DIR"
        )
    contract_path = tiny_model.build_tiny_model(workdir / "tiny-model")
    gallery_dir = build_synthetic_gallery(load_contract(contract_path), workdir / "tiny-gallery")
    note = (f"the shipped model {paths.DEFAULT_CONTRACT.name} is not built yet: this run uses the tests' tiny "
            f"pooling model and a {SYNTHETIC_GALLERY_CARDS}-card synthetic gallery, so embedding times are far "
            f"below EfficientNet-Lite0's")
    return BenchInputs(contract_path, gallery_dir, "tiny-fallback", notes=[note])


def build_synthetic_gallery(contract: ModelContract, folder: Path, cards: int = SYNTHETIC_GALLERY_CARDS,
                            seed: int = 11) -> Path:
    """Embed `cards` synthetic card images with `contract`'s model and save them as a gallery folder."""
    from pokedge.backends.onnx import OnnxBackend
    from pokedge.gallery.store import CardInfo, save_gallery
    from pokedge.preprocess import prepare_batch
    from pokedge.synth import make_test_card

    rng = np.random.default_rng(seed)
    images = [make_test_card(rng) for _ in range(cards)]
    backend = OnnxBackend(contract)
    try:
        embeddings = np.concatenate([backend.embed(prepare_batch(images[i : i + 64], contract))
                                     for i in range(0, cards, 64)])
    finally:
        backend.close()

    card_ids = [f"synth-{i + 1}" for i in range(cards)]
    facts = {card_id: CardInfo(card_id, f"Synthmon {i + 1}", "synth", str(i + 1)) for i, card_id in enumerate(card_ids)}
    return save_gallery(folder, embeddings, card_ids, facts, contract.model_id)


def quantize_int8(contract: ModelContract, calibration: np.ndarray, cache_dir: Path = CACHE_DIR) -> Path:
    """Write (or reuse) a statically quantized INT8 copy of the contract's model; return its contract path.

    `calibration` contains uint8 card images [N, H, W, 3] in the contract's
    colour order. Activations are uint8 and weights int8 (per channel), in
    QDQ format, with MinMax calibration, which is ONNX Runtime's default for
    CPU inference.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    digest = contract.sha256 or file_sha256(contract.model_path)
    calibration_digest = hashlib.blake2b(np.ascontiguousarray(calibration).tobytes(), digest_size=4).hexdigest()
    folder = cache_dir / f"int8-{digest[:16]}-{calibration_digest}"
    contract_path = folder / "model-int8.contract.json"
    if contract_path.is_file():
        return contract_path

    folder.mkdir(parents=True, exist_ok=True)
    tensor = contract.encode_float(calibration)
    batches = iter([{contract.input.name: tensor[i : i + 1]} for i in range(len(tensor))])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    model_path = folder / "model-int8.onnx"
    source = _preprocess_for_quantization(contract.model_path, folder / "model-prepared.onnx")
    quantize_static(str(source), str(model_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)

    data = contract.to_dict()
    data.update({"model_id": f"{contract.model_id}+int8", "file": model_path.name, "sha256": file_sha256(model_path)})
    contract_path.write_text(json.dumps(data, indent=2) + "\n")
    return contract_path


def _preprocess_for_quantization(model: Path, out: Path) -> Path:
    """Run ONNX Runtime's quantization pre-processing (shape inference, graph optimization); return the model to quantize.

    When pre-processing fails (an op its shape inference does not know), the
    original model is quantized as it is.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model), str(out))
    except Exception as exc:  # onnx and ORT raise many types for graphs they cannot infer
        _log.warning("quantization pre-processing failed for %s (%s); quantizing the model as it is", model, exc)
        return model
    return out


def open_hailo(inputs: BenchInputs, workdir: Path):
    """Return (backend, label, note): a real Hailo device if usable, else the HailoRT test double, else None."""
    real = _open_real_hailo(inputs)
    if real is not None:
        return real, "hailo", None
    return _open_hailo_double(inputs.onnx_contract, workdir)


def _open_real_hailo(inputs: BenchInputs):
    if inputs.hef_contract is None or _hailo_is_double_loaded():
        return None
    from pokedge.backends.hailo_errors import HailoUnavailable
    from pokedge.backends.hailo_options import HailoOptions
    from pokedge.backends.select import open_hailo as open_device
    from pokedge.errors import BackendError

    try:
        return open_device(load_contract(inputs.hef_contract), HailoOptions())
    except (HailoUnavailable, BackendError) as exc:
        _log.info("no usable Hailo device (%s); trying the HailoRT test double", exc)
        return None


def _open_hailo_double(onnx_contract: Path, workdir: Path):
    """Open the Hailo backend on the HailoRT test double; return (backend, label, note) or (None, None, reason)."""
    fake_dir = _double_dir()
    if fake_dir is None or not fake_dir.is_dir():
        return None, None, ("no Hailo device, and POKEDGE_BENCH_HAILO_DOUBLE names no HailoRT test double "
                            "(run scripts/benchmark.py to use it); Hailo not measured")
    if _real_hailort_installed():
        return None, None, "HailoRT is installed but no HEF contract is active; Hailo not measured (sync a HEF model)"

    os.environ.setdefault("FAKE_HAILO_DEVICES", "0000:01:00.0=HAILO8L")
    if str(fake_dir) not in sys.path:
        sys.path.insert(0, str(fake_dir))
    fixtures = _import_from_tests("hailo_fixtures")
    if fixtures is None:
        return None, None, "tests/hailo_fixtures.py could not be imported (it needs pytest); Hailo not measured"

    from pokedge.backends.hailo import HailoBackend

    model_set = fixtures.make_model_set(workdir / "hailo-double", onnx_contract)
    backend = HailoBackend(model_set.hef("raw_uint8"))
    note = ("hailo-double is the HailoRT test double: it runs the ONNX model on the CPU behind pokedge's Hailo "
            "backend, so its time is the CPU model plus the Hailo code path, not Hailo-8L speed")
    return backend, "hailo-double", note


def hailo_host_overhead(batch: int = 8, repeats: int = 100) -> dict | None:
    """Return scripts/hailo_overhead.py's per-stage host overhead in us per frame, or None without that script."""
    script = paths.REPO_ROOT / "scripts"
    if not (script / "hailo_overhead.py").is_file():
        return None
    if str(script) not in sys.path:
        sys.path.insert(0, str(script))
    import hailo_overhead

    return {name: round(value, 2) for name, value in hailo_overhead.measure_overhead(batch=batch, repeats=repeats).items()}


def _double_dir() -> Path | None:
    """Folder of the HailoRT test double, from POKEDGE_BENCH_HAILO_DOUBLE; None when unset."""
    value = os.environ.get("POKEDGE_BENCH_HAILO_DOUBLE")
    return Path(value).resolve() if value else None


def _is_double(origin: str | None) -> bool:
    folder = _double_dir()
    return folder is not None and origin is not None and str(Path(origin).resolve()).startswith(str(folder))


def _real_hailort_installed() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("hailo_platform")
    return spec is not None and not _is_double(spec.origin)


def _hailo_is_double_loaded() -> bool:
    module = sys.modules.get("hailo_platform")
    return module is not None and _is_double(getattr(module, "__file__", None))


def _import_from_tests(name: str):
    """Import a helper module from the checkout's tests folder; None when it is not there or fails to import."""
    if not (TESTS_DIR / f"{name}.py").is_file():
        return None
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    try:
        return __import__(name)
    except ImportError as exc:
        _log.info("could not import tests/%s.py: %s", name, exc)
        return None
