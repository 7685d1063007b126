"""The publishing side: upload a model, its contract and its gallery, and record them in the manifest extension.

Only the `pokedge` block of `metadata/project_manifest.json` is rewritten;
every other field stays as the training tooling wrote it. Objects are
uploaded first and the manifest last, so a device never reads a manifest that
names objects not yet on the server. Galleries go under a folder per
release (`data/reference/<gallery>/<release>/` by default), so publishing a
new gallery never changes an object that a device may be downloading.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from pokedge.contract import ModelContract, contract_from_dict, file_sha256, load_contract
from pokedge.errors import ContractError
from pokedge.gallery import blurred, printed_totals, same_art, store
from pokedge.sync.config import MANIFEST_KEY
from pokedge.sync.errors import ManifestError, SyncError, ValidationError
from pokedge.sync.keys import check_name, check_relative_key, key_from_s3_path, slug
from pokedge.sync.manifest import EXTENSION_KEY, EXTENSION_SCHEMA, manifest_from_dict
from pokedge.sync.s3 import describe_error, error_code

_log = logging.getLogger(__name__)

# Uploaded when present; the first three are required by load_gallery.
GALLERY_UPLOAD_FILES = (store.EMBEDDINGS, store.INDEX, store.METADATA, store.MANIFEST, store.THRESHOLDS,
                        same_art.FILENAME, printed_totals.FILENAME, *blurred.FILES)
_UPLOAD_CONFIG = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20)


@dataclass
class PublishRequest:
    """A publish request for one model. A gallery alone (for a new card set) needs only `model` and `gallery`."""

    model: str  # model name in the extension, e.g. efficientnet-student-stage2
    model_file: Path | None = None
    contract: Path | None = None
    gallery: Path | None = None
    gallery_name: str | None = None
    extra_files: list[Path] = field(default_factory=list)
    release: str | None = None
    promote: bool = True  # make this model production for its device kind
    validate: bool = True  # load the model and gallery before uploading
    model_folder: str | None = None  # key folder relative to the prefix; default from the manifest
    gallery_folder: str | None = None


def publish(client: Any, bucket: str, prefix: str, request: PublishRequest) -> dict[str, Any]:
    """Upload the files of `request` and write the manifest; return the new `pokedge` block."""
    check_name(request.model, "model")
    document, _ = read_manifest(client, bucket, prefix)
    extension = _extension_of(document)
    release = request.release or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    models = extension.setdefault("models", {})
    entry = models.get(request.model)

    if request.model_file is not None:
        entry = _publish_model(client, bucket, prefix, request, document, entry)
        models[request.model] = entry
    if entry is None:
        raise SyncError(f"model {request.model!r} is not published yet; pass --model-file and --contract")

    contract = _contract_of(entry, request.model)
    if request.gallery is not None:
        name = check_name(request.gallery_name or request.model, "gallery name")
        folder = request.gallery_folder or f"data/reference/{name}/{slug(release)}/"
        extension.setdefault("galleries", {})[name] = _publish_gallery(client, bucket, prefix, request.gallery,
                                                                        folder, contract, request.validate)
        entry["gallery"] = name

    if request.promote:
        kind = "cpu" if contract.format == "onnx" else "hailo"
        extension.setdefault("production", {})[kind] = request.model
    extension["release"] = release
    extension["published_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    document[EXTENSION_KEY] = extension
    manifest_from_dict(document)  # refuse to upload a manifest that devices would reject
    write_manifest(client, bucket, prefix, document)
    _log.info("published release %s of %s to s3://%s/%s", release, request.model, bucket, prefix)
    return extension


def read_manifest(client: Any, bucket: str, prefix: str) -> tuple[dict[str, Any], str | None]:
    """Return the manifest document and its ETag, or an empty document when the project has none yet."""
    key = prefix + MANIFEST_KEY
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        document = json.loads(response["Body"].read())
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            _log.info("no manifest at s3://%s/%s yet; starting one", bucket, key)
            return {}, None
        raise describe_error(exc, bucket, key, what="project manifest") from exc
    except BotoCoreError as exc:
        raise describe_error(exc, bucket, key, what="project manifest") from exc
    except ValueError as exc:
        raise ManifestError(f"s3://{bucket}/{key} is not valid JSON ({exc}); fix it before publishing") from None
    if not isinstance(document, dict):
        raise ManifestError(f"s3://{bucket}/{key} is not a JSON object; fix it before publishing")
    return document, response.get("ETag")


def write_manifest(client: Any, bucket: str, prefix: str, document: dict[str, Any]) -> None:
    # NOTE: two publishers writing at once can lose one update; S3 conditional writes (If-Match) would
    # prevent that but are not used because not every S3-compatible store supports them.
    body = (json.dumps(document, indent=2) + "\n").encode()
    key = prefix + MANIFEST_KEY
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, key, what="project manifest") from exc


def _extension_of(document: dict[str, Any]) -> dict[str, Any]:
    extension = copy.deepcopy(document.get(EXTENSION_KEY) or {"schema": EXTENSION_SCHEMA})
    if extension.get("schema") != EXTENSION_SCHEMA:
        raise ManifestError(f"the manifest's pokedge block has schema {extension.get('schema')!r}; this publisher "
                            f"writes {EXTENSION_SCHEMA!r}, so it would lose data; upgrade pokedge")
    return extension


def _publish_model(client: Any, bucket: str, prefix: str, request: PublishRequest, document: dict[str, Any],
                   previous: dict[str, Any] | None) -> dict[str, Any]:
    if request.contract is None:
        raise SyncError("--contract is required with --model-file: devices read the model's I/O from it")
    contract = load_contract(request.contract)
    model_file = Path(request.model_file)
    expected_suffix = {"onnx": ".onnx", "hef": ".hef"}[contract.format]
    if model_file.suffix != expected_suffix:
        raise SyncError(f"{model_file} does not end in {expected_suffix}, but contract {request.contract} "
                        f"describes a {contract.format} model")

    sha256 = file_sha256(model_file)
    contract = replace(contract, file=model_file.name, sha256=sha256, source=request.contract)
    if request.validate and contract.format == "onnx":
        _check_onnx(contract, model_file)

    folder = request.model_folder or _model_folder(document, request.model, contract, bucket, prefix)
    folder = check_relative_key(folder, "model folder", folder=True)
    entry = dict(previous or {})
    entry["contract"] = contract.to_dict()
    entry["file"] = _upload(client, bucket, prefix, model_file, folder + model_file.name, sha256)
    extras = dict(entry.get("extra_files", {}))
    for path in request.extra_files:
        extras[check_name(path.name, "extra file")] = _upload(client, bucket, prefix, path, folder + path.name)
    if extras:
        entry["extra_files"] = extras
    if previous and previous.get("gallery") and request.gallery is None:
        _log.warning("model %s keeps its gallery %s; publish a new gallery too if the embeddings changed",
                     request.model, previous["gallery"])
    return entry


def _model_folder(document: dict[str, Any], name: str, contract: ModelContract, bucket: str, prefix: str) -> str:
    """Use the folder the manifest's `models` entry names; else models/<name>/<version>/."""
    s3_path = (document.get("models") or {}).get(name, {}).get("s3_path")
    if s3_path:
        try:
            return key_from_s3_path(s3_path, bucket, prefix, f"models.{name}.s3_path")
        except ManifestError as exc:
            _log.warning("not using models.%s.s3_path: %s", name, exc)
    version = contract.model_id.rpartition(":")[2] or "v1"
    return f"models/{name}/{slug(version)}/"


def _contract_of(entry: dict[str, Any], name: str) -> ModelContract:
    if "contract" not in entry:
        raise ManifestError(f"manifest field 'pokedge.models.{name}.contract' is missing; republish the model")
    try:
        return contract_from_dict(entry["contract"])
    except ContractError as exc:
        raise ManifestError(f"manifest field 'pokedge.models.{name}.contract' is invalid: {exc}") from None


def _check_onnx(contract: ModelContract, model_file: Path) -> None:
    """Load the model the way devices will, and fail before anything is uploaded."""
    import numpy as np

    from pokedge.backends.onnx import OnnxBackend

    contract = replace(contract, source=model_file.parent / "contract.json")
    backend = OnnxBackend(contract, threads=1)
    try:
        grey = np.full((1, contract.input.height, contract.input.width, 3), 128, dtype=np.uint8)
        embedding = backend.embed(grey)
    finally:
        backend.close()
    if embedding.shape != (1, contract.output.dim):
        raise ValidationError(f"{model_file} outputs {list(embedding.shape)}, but its contract expects [1, {contract.output.dim}]")


def _publish_gallery(client: Any, bucket: str, prefix: str, folder_path: Path, folder: str,
                     contract: ModelContract, validate: bool) -> dict[str, Any]:
    folder = check_relative_key(folder, "gallery folder", folder=True)
    gallery = store.load_gallery(folder_path, mmap=True)
    if validate:
        store.check_compatible(gallery, contract.model_id, contract.output.dim)

    files = {}
    for name in GALLERY_UPLOAD_FILES:
        path = folder_path / name
        if path.is_file():
            files[name] = _upload(client, bucket, prefix, path, folder + name)
    return {"producer": gallery.producer, "dim": gallery.dim, "count": len(gallery), "files": files}


def _upload(client: Any, bucket: str, prefix: str, path: Path, key: str, sha256: str | None = None) -> dict[str, Any]:
    key = check_relative_key(key, "upload key")
    sha256 = sha256 or file_sha256(path)
    size = path.stat().st_size
    _log.info("uploading %s to s3://%s/%s%s (%d bytes)", path, bucket, prefix, key, size)
    try:
        client.upload_file(str(path), bucket, prefix + key, Config=_UPLOAD_CONFIG,
                           ExtraArgs={"Metadata": {"sha256": sha256}})
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, prefix + key) from exc
    except S3UploadFailedError as exc:
        raise SyncError(f"upload of {path} to s3://{bucket}/{prefix}{key} failed: {exc}") from None
    except OSError as exc:
        raise SyncError(f"cannot read {path} for upload: {exc}") from None
    return {"key": key, "size": size, "sha256": sha256}
