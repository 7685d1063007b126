"""Selection: which objects this device needs from the manifest, and where each goes in the version folder.

A device always gets the production ONNX model (the CPU fallback) and its
gallery. It also gets the production HEF and the HEF's gallery when the
manifest has the pokedge extension, names a Hailo model, and this device has
a chip that can run it. Without the extension, files are discovered under
each model's `s3_path` and checked by size and ETag only, and no HEF is
synced, because nothing records the HEF's input encoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pokedge.contract import ModelContract, default_contract
from pokedge.sync import s3
from pokedge.sync.config import SyncConfig
from pokedge.sync.device import hef_runs_on
from pokedge.sync.errors import ChecksumError, ManifestError
from pokedge.sync.keys import check_name, key_from_s3_path, slug
from pokedge.gallery.blurred import FILES as BLURRED_FILES
from pokedge.sync.manifest import REQUIRED_GALLERY_FILES, ExtensionModel, FileRef, ProjectManifest

_log = logging.getLogger(__name__)

# The production student, used when an origin-style manifest marks no ONNX model as production_ready.
ORIGIN_CPU_MODEL = "efficientnet-student-stage2"
ORIGIN_REFERENCE_FOLDER = "data/reference/"
# Gallery files pokedge uses; others in the reference folder (usearch.index, cards_metadata.json) are skipped.
GALLERY_FILES = (*REQUIRED_GALLERY_FILES, "gallery.json", "thresholds.json", "same_art.json", "printed_totals.json",
                 *BLURRED_FILES)
CONTRACT_FILE = "contract.json"


@dataclass(frozen=True)
class PlannedFile:
    """One object to place in the version folder."""

    key: str  # full key in the bucket
    path: str  # relative to the version folder
    size: int
    sha256: str | None
    etag: str = ""
    encryption: str | None = None


@dataclass(frozen=True)
class PlannedModel:
    name: str
    contract: ModelContract
    folder: str  # relative to the version folder
    file: str  # model file, relative to the version folder


@dataclass(frozen=True)
class PlannedGallery:
    producer: str
    folder: str
    has_manifest: bool  # whether gallery.json comes from the server


@dataclass
class SyncPlan:
    """Everything one sync would install, and the id of the version it makes."""

    version_id: str
    selection: str
    release: str | None
    integrity: str
    onnx: PlannedModel
    hef: PlannedModel | None
    galleries: list[PlannedGallery]
    files: list[PlannedFile]
    manifest_etag: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def build_plan(manifest: ProjectManifest, config: SyncConfig, device: str, client: Any,
               manifest_etag: str = "") -> SyncPlan:
    """Select the files for this device and look each up on the server (size, ETag)."""
    if manifest.extension is not None:
        plan = _plan_from_extension(manifest, config, device)
    else:
        plan = _plan_from_origin(manifest, config, device, client)

    plan.files = [_with_server_facts(f, config, client) for f in plan.files]
    plan.manifest_etag = manifest_etag
    _check_unique_paths(plan.files)
    plan.selection = _selection_hash(plan)
    label = slug(plan.release) if plan.release else "sync"
    plan.version_id = check_name(f"{label}-{plan.selection[:10]}", "version id")
    return plan


def _plan_from_extension(manifest: ProjectManifest, config: SyncConfig, device: str) -> SyncPlan:
    extension = manifest.extension
    notes = []
    onnx_entry = extension.models[extension.production["cpu"]]
    hef_entry = None
    hailo_name = extension.production.get("hailo")
    if device != "cpu" and hailo_name:
        candidate = extension.models[hailo_name]
        if hef_runs_on(candidate.contract.target, device):
            hef_entry = candidate
        else:
            notes.append(f"HEF {hailo_name} targets {candidate.contract.target}, which this {device} cannot run; "
                         f"syncing the CPU model only")
    elif device != "cpu":
        notes.append("the manifest names no production Hailo model; syncing the CPU model only")

    files: list[PlannedFile] = []
    onnx = _extension_model(onnx_entry, config, files)
    hef = _extension_model(hef_entry, config, files) if hef_entry else None

    galleries = []
    for entry in filter(None, [onnx_entry, hef_entry]):
        if entry.gallery is None or any(g.producer == entry.model_id for g in galleries):
            continue
        gallery = extension.galleries[entry.gallery]
        folder = f"galleries/{gallery.name}"
        for name, ref in gallery.files.items():
            files.append(_file(ref, config, f"{folder}/{name}"))
        galleries.append(PlannedGallery(gallery.producer, folder, "gallery.json" in gallery.files))

    return SyncPlan("", "", extension.release, "sha256", onnx, hef, galleries, files, notes=notes)


def _extension_model(entry: ExtensionModel, config: SyncConfig, files: list[PlannedFile]) -> PlannedModel:
    folder = f"models/{entry.name}"
    basename = check_name(entry.file.key.rsplit("/", 1)[-1], f"pokedge.models.{entry.name}.file.key")
    if basename == CONTRACT_FILE:
        raise ManifestError(f"manifest field 'pokedge.models.{entry.name}.file.key' names a file called "
                            f"{CONTRACT_FILE}, which is reserved for the model contract")
    files.append(_file(entry.file, config, f"{folder}/{basename}"))
    for name, ref in entry.extra_files.items():
        files.append(_file(ref, config, f"{folder}/{name}"))

    contract = replace(entry.contract, file=basename, sha256=entry.file.sha256, source=None)
    return PlannedModel(entry.name, contract, folder, f"{folder}/{basename}")


def _file(ref: FileRef, config: SyncConfig, path: str) -> PlannedFile:
    return PlannedFile(config.prefix + ref.key, path, ref.size, ref.sha256)


def _plan_from_origin(manifest: ProjectManifest, config: SyncConfig, device: str, client: Any) -> SyncPlan:
    _log.warning("the project manifest has no pokedge extension: files are checked by size and ETag only, "
                 "which is weaker than sha256; publish with scripts/publish_project.py to add checksums")
    notes = ["no pokedge extension: integrity is checked by size and ETag only"]
    if device != "cpu":
        notes.append("no pokedge extension: the HEF's input encoding is unknown, so no HEF is synced")

    name = _origin_cpu_model(manifest)
    model = manifest.models[name]
    folder_key = key_from_s3_path(model.s3_path, config.bucket, config.prefix, f"models.{name}.s3_path")
    listing = _list_folder(client, config, folder_key)
    onnx_object = _pick_onnx(listing, name, model.s3_path)

    model_id = manifest.model_id(name)
    basename = check_name(onnx_object.key.rsplit("/", 1)[-1], f"models.{name}.s3_path")
    contract = default_contract(model_id=model_id, file=basename)
    folder = f"models/{check_name(name, 'models')}"
    files = [PlannedFile(onnx_object.key, f"{folder}/{basename}", onnx_object.size, None, onnx_object.etag)]
    onnx = PlannedModel(name, contract, folder, f"{folder}/{basename}")

    reference_files = _origin_reference(manifest, config, client)
    gallery_folder = f"galleries/{slug(model_id)}"
    for item in reference_files:
        files.append(PlannedFile(item.key, f"{gallery_folder}/{item.key.rsplit('/', 1)[-1]}", item.size, None,
                                 item.etag))
    has_manifest = any(item.key.endswith("/gallery.json") for item in reference_files)
    galleries = [PlannedGallery(model_id, gallery_folder, has_manifest)]

    return SyncPlan("", "", manifest.last_updated, "etag", onnx, None, galleries, files, notes=notes)


def _origin_cpu_model(manifest: ProjectManifest) -> str:
    production = [m.name for m in manifest.models.values()
                  if m.production_ready and any(f.lower() == "onnx" for f in m.formats)]
    if len(production) == 1:
        return production[0]
    if ORIGIN_CPU_MODEL in manifest.models:
        if production:
            _log.warning("several ONNX models are marked production_ready (%s); using %s",
                         ", ".join(production), ORIGIN_CPU_MODEL)
        return ORIGIN_CPU_MODEL
    raise ManifestError(f"manifest field 'models' has no ONNX model marked production_ready and no "
                        f"{ORIGIN_CPU_MODEL!r}; publish the pokedge extension to name the production model")


def _list_folder(client: Any, config: SyncConfig, folder_key: str) -> list[s3.ObjectInfo]:
    """List the objects directly in a folder (not in its subfolders)."""
    full = config.prefix + folder_key
    listing = s3.list_objects(client, config.bucket, full, s3.RetryPolicy.from_config(config))
    return [item for item in listing if "/" not in item.key[len(full):]]


def _pick_onnx(listing: list[s3.ObjectInfo], name: str, s3_path: str | None) -> s3.ObjectInfo:
    candidates = [item for item in listing if item.key.endswith(".onnx")]
    if len(candidates) == 1:
        return candidates[0]
    preferred = [item for item in candidates if item.key.endswith("/" + default_contract().file)]
    if len(preferred) == 1:
        return preferred[0]
    found = ", ".join(item.key.rsplit("/", 1)[-1] for item in candidates) or "none"
    raise ManifestError(f"manifest field 'models.{name}.s3_path' ({s3_path}) must hold exactly one .onnx file, "
                        f"found: {found}; publish the pokedge extension to name the file")


def _origin_reference(manifest: ProjectManifest, config: SyncConfig, client: Any) -> list[s3.ObjectInfo]:
    """List the reference database, under the project prefix even when the manifest's path points elsewhere."""
    folder_key = ORIGIN_REFERENCE_FOLDER
    if manifest.reference_s3_path:
        try:
            folder_key = key_from_s3_path(manifest.reference_s3_path, config.bucket, config.prefix,
                                          "datasets.reference.s3_path")
        except ManifestError as exc:
            _log.warning("ignoring the manifest's reference path (%s); using s3://%s/%s%s instead", exc,
                         config.bucket, config.prefix, ORIGIN_REFERENCE_FOLDER)

    listing = _list_folder(client, config, folder_key)
    wanted = [item for item in listing if item.key.rsplit("/", 1)[-1] in GALLERY_FILES]
    names = {item.key.rsplit("/", 1)[-1] for item in wanted}
    missing = [name for name in REQUIRED_GALLERY_FILES if name not in names]
    if missing:
        raise ManifestError(f"reference database s3://{config.bucket}/{config.prefix}{folder_key} lacks "
                            f"{', '.join(missing)}; check datasets.reference in the manifest")
    return wanted


def _with_server_facts(planned: PlannedFile, config: SyncConfig, client: Any) -> PlannedFile:
    """Add the object's ETag and encryption from HEAD, and refuse a size that differs from the manifest."""
    info = s3.head_object(client, config.bucket, planned.key, s3.RetryPolicy.from_config(config))
    if info.size != planned.size:
        raise ChecksumError(f"s3://{config.bucket}/{planned.key} is {info.size} bytes on the server, but the "
                            f"manifest says {planned.size}; the object was replaced or is corrupt, republish it")
    return replace(planned, etag=info.etag, encryption=info.encryption)


def _check_unique_paths(files: list[PlannedFile]) -> None:
    seen: dict[str, str] = {}
    for planned in files:
        if planned.path in seen and seen[planned.path] != planned.key:
            raise ManifestError(f"manifest maps both {seen[planned.path]} and {planned.key} to {planned.path}; "
                                f"rename one of them")
        seen[planned.path] = planned.key


def _selection_hash(plan: SyncPlan) -> str:
    """Hash what decides the installed content, so an unchanged selection is recognized as up to date."""
    selection = {
        "files": sorted((f.path, f.key, f.size, f.sha256 or f.etag) for f in plan.files),
        "onnx": plan.onnx.contract.to_dict(),
        "hef": plan.hef.contract.to_dict() if plan.hef else None,
        "galleries": sorted((g.producer, g.folder) for g in plan.galleries),
    }
    return hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
