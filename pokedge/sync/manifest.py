"""The project manifest (`metadata/project_manifest.json`) and pokedge's extension of it.

The original training tooling writes the manifest. pokedge reads the fields
that tooling fixes (`models`, `model_lineage`, `datasets.reference`) and
ignores the rest, so cost or training fields can change freely. A field that
pokedge uses but that has the wrong type is rejected with ManifestError
naming the field, for example `models.efficientnet-student-stage2.s3_path`.

pokedge adds one top-level block, `pokedge`, which the publishing script
writes and which the original tooling ignores:

    "pokedge": {
      "schema": "pokedge.manifest/1",
      "release": "2026-02-01",                 # optional label shown on devices
      "production": {"cpu": "<model>", "hailo": "<model>"},   # hailo optional
      "models": {
        "<model>": {
          "contract": { pokedge.contract/1 object },
          "file": {"key": "<key>", "size": 123, "sha256": "<64 hex>"},
          "gallery": "<gallery>",              # optional for HEF models
          "extra_files": {"<name>": {"key": ..., "size": ..., "sha256": ...}}
        }
      },
      "galleries": {
        "<gallery>": {
          "producer": "<model_id of the model that made the embeddings>",
          "files": {"embeddings.npy": {...}, "index.json": {...}, "metadata.json": {...}}
        }
      }
    }

Keys are relative to the project prefix. docs/manifest-extension.md holds the
full schema with the reason for each rule.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pokedge.contract import ModelContract, contract_from_dict
from pokedge.errors import ContractError
from pokedge.sync.errors import ManifestError
from pokedge.sync.keys import check_name, check_relative_key

_log = logging.getLogger(__name__)

EXTENSION_KEY = "pokedge"
EXTENSION_SCHEMA = "pokedge.manifest/1"
DEVICE_KINDS = ("cpu", "hailo")
# Gallery files pokedge needs; gallery.json is written on the device when absent.
REQUIRED_GALLERY_FILES = ("embeddings.npy", "index.json", "metadata.json")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileRef:
    """One object named by the extension, with its expected size and checksum."""

    key: str  # relative to the project prefix
    size: int
    sha256: str


@dataclass(frozen=True)
class ExtensionModel:
    """One model published with the extension: its file, contract and gallery."""

    name: str
    contract: ModelContract
    file: FileRef
    gallery: str | None = None
    extra_files: dict[str, FileRef] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.contract.model_id


@dataclass(frozen=True)
class ExtensionGallery:
    """One reference database: the model that produced it and its files."""

    name: str
    producer: str
    files: dict[str, FileRef]


@dataclass(frozen=True)
class Extension:
    """The validated `pokedge` block of the manifest."""

    release: str | None
    production: dict[str, str]  # device kind ("cpu", "hailo") -> model name
    models: dict[str, ExtensionModel]
    galleries: dict[str, ExtensionGallery]


@dataclass(frozen=True)
class OriginModel:
    """A `models` entry as the original tooling writes it."""

    name: str
    version: str
    type: str
    s3_path: str | None
    formats: tuple[str, ...]
    production_ready: bool


@dataclass(frozen=True)
class ProjectManifest:
    """The parts of the project manifest that sync uses."""

    models: dict[str, OriginModel]
    lineage: dict[str, dict[str, Any]]  # node "name:version" -> {parent, children, relationship}
    reference_s3_path: str | None
    last_updated: str | None
    extension: Extension | None

    def model_id(self, name: str) -> str:
        """Return the "name:version" id of a model, as the lineage graph spells it when it lists the model."""
        nodes = [node for node in self.lineage if node.split(":", 1)[0] == name]
        if len(nodes) == 1:
            return nodes[0]
        version = self.models[name].version
        return f"{name}:{version if version.startswith('v') else 'v' + version}"


def parse_manifest(data: bytes | str) -> ProjectManifest:
    """Parse the manifest text; raise ManifestError naming the first malformed field."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"project manifest is not valid JSON: {exc}") from None
    return manifest_from_dict(document)


def manifest_from_dict(document: Any) -> ProjectManifest:
    """Validate a parsed manifest; raise ManifestError naming the first malformed field."""
    if not isinstance(document, dict):
        raise ManifestError(f"project manifest must be a JSON object, got {type(document).__name__}")

    extension = None
    if EXTENSION_KEY in document:
        extension = parse_extension(document[EXTENSION_KEY])
    if "models" not in document and extension is None:
        raise ManifestError("project manifest has neither field 'models' nor a 'pokedge' block; "
                            "nothing to sync")

    models = _origin_models(document.get("models", {}))
    lineage = _lineage(document.get("model_lineage"))
    reference = _reference_path(document.get("datasets"))
    last_updated = document.get("last_updated")
    if last_updated is not None and not isinstance(last_updated, str):
        raise ManifestError(f"manifest field 'last_updated' must be a string, got {last_updated!r}")

    return ProjectManifest(models, lineage, reference, last_updated, extension)


def _origin_models(models: Any) -> dict[str, OriginModel]:
    if not isinstance(models, dict):
        raise ManifestError(f"manifest field 'models' must be an object keyed by model name, got {type(models).__name__}")
    parsed = {}
    for name, entry in models.items():
        where = f"models.{name}"
        if not isinstance(entry, dict):
            raise ManifestError(f"manifest field '{where}' must be an object, got {type(entry).__name__}")
        parsed[name] = OriginModel(
            name=name,
            version=_version(entry.get("version"), f"{where}.version"),
            type=_optional_str(entry, "type", where) or "",
            s3_path=_optional_str(entry, "s3_path", where),
            formats=_formats(entry, where),
            production_ready=_optional_bool(entry, "production_ready", where),
        )
    return parsed


def _version(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        raise ManifestError(f"manifest field '{where}' must be a version string such as 'v2.0', got {value!r}")
    return str(value)


def _formats(entry: dict, where: str) -> tuple[str, ...]:
    formats = entry.get("formats")
    if formats is None:
        single = _optional_str(entry, "format", where)
        return (single,) if single else ()
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise ManifestError(f"manifest field '{where}.formats' must be a list of strings, got {formats!r}")
    return tuple(formats)


def _lineage(lineage: Any) -> dict[str, dict[str, Any]]:
    if lineage is None:
        return {}
    if not isinstance(lineage, dict):
        raise ManifestError(f"manifest field 'model_lineage' must be an object, got {type(lineage).__name__}")
    graph = lineage.get("graph", {})
    if not isinstance(graph, dict):
        raise ManifestError(f"manifest field 'model_lineage.graph' must be an object, got {type(graph).__name__}")

    for node, entry in graph.items():
        where = f"model_lineage.graph.{node}"
        if not isinstance(entry, dict):
            raise ManifestError(f"manifest field '{where}' must be an object, got {type(entry).__name__}")
        children = entry.get("children", [])
        if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
            raise ManifestError(f"manifest field '{where}.children' must be a list of 'name:version' strings, "
                                f"got {children!r}")
        _optional_str(entry, "parent", where)
        _optional_str(entry, "relationship", where)
    return graph


def _reference_path(datasets: Any) -> str | None:
    if datasets is None:
        return None
    if not isinstance(datasets, dict):
        raise ManifestError(f"manifest field 'datasets' must be an object, got {type(datasets).__name__}")
    reference = datasets.get("reference")
    if reference is None:
        return None
    if not isinstance(reference, dict):
        raise ManifestError(f"manifest field 'datasets.reference' must be an object, got {type(reference).__name__}")
    return _optional_str(reference, "s3_path", "datasets.reference")


def parse_extension(block: Any) -> Extension:
    """Validate the `pokedge` block; raise ManifestError naming the field."""
    if not isinstance(block, dict):
        raise ManifestError(f"manifest field 'pokedge' must be an object, got {type(block).__name__}")
    schema = block.get("schema")
    if schema != EXTENSION_SCHEMA:
        raise ManifestError(f"manifest field 'pokedge.schema' is {schema!r}; this pokedge reads "
                            f"{EXTENSION_SCHEMA!r}. Upgrade pokedge, or republish with a matching publisher")

    release = _optional_str(block, "release", "pokedge")
    galleries = _ext_galleries(block.get("galleries", {}))
    models = _ext_models(block.get("models"), galleries)
    production = _production(block.get("production"), models)
    return Extension(release, production, models, galleries)


def _ext_models(models: Any, galleries: dict[str, ExtensionGallery]) -> dict[str, ExtensionModel]:
    if not isinstance(models, dict) or not models:
        raise ManifestError("manifest field 'pokedge.models' must be a non-empty object keyed by model name")

    parsed = {}
    for name, entry in models.items():
        where = f"pokedge.models.{name}"
        check_name(name, where)
        if not isinstance(entry, dict):
            raise ManifestError(f"manifest field '{where}' must be an object, got {type(entry).__name__}")

        contract = _contract(entry.get("contract"), f"{where}.contract")
        file = _file_ref(entry.get("file"), f"{where}.file")
        gallery = _optional_str(entry, "gallery", where)
        if gallery is not None:
            _check_gallery_link(gallery, contract, galleries, f"{where}.gallery")
        extras = _file_refs(entry.get("extra_files", {}), f"{where}.extra_files")
        parsed[name] = ExtensionModel(name, contract, file, gallery, extras)
    return parsed


def _contract(data: Any, where: str) -> ModelContract:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest field '{where}' must be a model contract object, got {type(data).__name__}")
    try:
        return contract_from_dict(data)
    except ContractError as exc:
        raise ManifestError(f"manifest field '{where}' is not a valid model contract: {exc}") from None


def _check_gallery_link(gallery: str, contract: ModelContract, galleries: dict[str, ExtensionGallery],
                        where: str) -> None:
    if gallery not in galleries:
        raise ManifestError(f"manifest field '{where}' names gallery {gallery!r}, which is not in "
                            f"'pokedge.galleries' (known: {', '.join(sorted(galleries)) or 'none'})")
    producer = galleries[gallery].producer
    if producer != contract.model_id:
        raise ManifestError(f"manifest field '{where}' links model {contract.model_id} to gallery {gallery!r}, "
                            f"whose embeddings were made by {producer}; a model must use its own gallery")


def _ext_galleries(galleries: Any) -> dict[str, ExtensionGallery]:
    if not isinstance(galleries, dict):
        raise ManifestError(f"manifest field 'pokedge.galleries' must be an object, got {type(galleries).__name__}")

    parsed = {}
    for name, entry in galleries.items():
        where = f"pokedge.galleries.{name}"
        check_name(name, where)
        if not isinstance(entry, dict):
            raise ManifestError(f"manifest field '{where}' must be an object, got {type(entry).__name__}")
        producer = entry.get("producer")
        if not isinstance(producer, str) or not producer:
            raise ManifestError(f"manifest field '{where}.producer' must name the model id that made the "
                                f"embeddings, got {producer!r}")
        files = _file_refs(entry.get("files"), f"{where}.files")
        missing = [name for name in REQUIRED_GALLERY_FILES if name not in files]
        if missing:
            raise ManifestError(f"manifest field '{where}.files' lacks {', '.join(missing)}")
        parsed[name] = ExtensionGallery(name, producer, files)
    return parsed


def _production(production: Any, models: dict[str, ExtensionModel]) -> dict[str, str]:
    if not isinstance(production, dict):
        raise ManifestError("manifest field 'pokedge.production' must be an object such as "
                            "{\"cpu\": \"<model>\", \"hailo\": \"<model>\"}")
    unknown = sorted(set(production) - set(DEVICE_KINDS))
    if unknown:
        raise ManifestError(f"manifest field 'pokedge.production' has unknown device kind(s) {unknown}; "
                            f"use {', '.join(DEVICE_KINDS)}")
    if "cpu" not in production:
        raise ManifestError("manifest field 'pokedge.production.cpu' is missing; every device needs an ONNX model "
                            "as its fallback")

    expected_format = {"cpu": "onnx", "hailo": "hef"}
    for kind, name in production.items():
        where = f"pokedge.production.{kind}"
        if name not in models:
            raise ManifestError(f"manifest field '{where}' names model {name!r}, which is not in 'pokedge.models'")
        model = models[name]
        if model.contract.format != expected_format[kind]:
            raise ManifestError(f"manifest field '{where}' names model {name!r} of format {model.contract.format}; "
                                f"{kind} devices need a {expected_format[kind]} model")
    if models[production["cpu"]].gallery is None:
        raise ManifestError(f"manifest field 'pokedge.models.{production['cpu']}.gallery' is missing; "
                            f"the production CPU model needs its reference gallery")
    return dict(production)


def _file_refs(data: Any, where: str) -> dict[str, FileRef]:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest field '{where}' must be an object keyed by file name, got {type(data).__name__}")
    return {check_name(name, f"{where}.{name}"): _file_ref(ref, f"{where}.{name}") for name, ref in data.items()}


def _file_ref(data: Any, where: str) -> FileRef:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest field '{where}' must be an object with key, size and sha256, got {data!r}")
    key = check_relative_key(data.get("key"), f"{where}.key")
    size = data.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"manifest field '{where}.size' must be a byte count (integer >= 0), got {size!r}")
    sha256 = data.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ManifestError(f"manifest field '{where}.sha256' must be 64 lowercase hex digits, got {sha256!r}")
    return FileRef(key, size, sha256)


def _optional_str(entry: dict, key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"manifest field '{where}.{key}' must be a string, got {value!r}")
    return value


def _optional_bool(entry: dict, key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ManifestError(f"manifest field '{where}.{key}' must be true or false, got {value!r}")
    return value
