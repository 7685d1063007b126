"""Manifest parsing, the pokedge extension schema, and the checks on untrusted keys and paths."""

from __future__ import annotations

import copy
import json
import os

import pytest

from pokedge.sync.errors import ManifestError, UnsafeKeyError
from pokedge.sync.keys import check_relative_key, key_from_s3_path, local_path
from pokedge.sync.manifest import EXTENSION_SCHEMA, parse_manifest

from s3_server import BUCKET, STUDENT, STUDENT_ID, origin_manifest

PREFIX = "project/pokemon-card-recognition/"
SHA = "ab" * 32


def extension_manifest() -> dict:
    """An origin-style manifest plus a valid pokedge block."""
    manifest = origin_manifest(PREFIX)
    ref = {"key": "models/efficientnet-student/stage2/v2.0/student_stage2_final.onnx", "size": 10, "sha256": SHA}
    gallery_files = {name: {"key": f"data/reference/{STUDENT}/r1/{name}", "size": 5, "sha256": SHA}
                     for name in ("embeddings.npy", "index.json", "metadata.json")}
    manifest["pokedge"] = {
        "schema": EXTENSION_SCHEMA,
        "release": "r1",
        "production": {"cpu": STUDENT},
        "models": {STUDENT: {"contract": {"model_id": STUDENT_ID, "file": "student_stage2_final.onnx"},
                             "file": ref, "gallery": STUDENT}},
        "galleries": {STUDENT: {"producer": STUDENT_ID, "files": gallery_files}},
    }
    return manifest


def test_origin_manifest_parses_tolerantly():
    manifest = origin_manifest(PREFIX)
    manifest["experiments"] = {"anything": [1, 2, 3]}
    parsed = parse_manifest(json.dumps(manifest))

    assert parsed.extension is None
    assert set(parsed.models) == set(manifest["models"])
    assert parsed.models[STUDENT].production_ready is True
    assert parsed.model_id(STUDENT) == STUDENT_ID
    assert parsed.reference_s3_path == f"s3://{BUCKET}/data/reference/"


def test_model_id_without_lineage_adds_v():
    manifest = origin_manifest(PREFIX)
    del manifest["model_lineage"]
    manifest["models"][STUDENT]["version"] = "2.0"
    assert parse_manifest(json.dumps(manifest)).model_id(STUDENT) == STUDENT_ID


def test_extension_parses():
    parsed = parse_manifest(json.dumps(extension_manifest()))

    extension = parsed.extension
    assert extension.release == "r1"
    assert extension.production == {"cpu": STUDENT}
    assert extension.models[STUDENT].model_id == STUDENT_ID
    assert extension.models[STUDENT].file.size == 10
    assert extension.galleries[STUDENT].producer == STUDENT_ID


def _set(document: dict, path: str, value) -> dict:
    document = copy.deepcopy(document)
    *parents, last = path.split("/")
    target = document
    for name in parents:
        target = target[name]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return document


_DELETE = object()
MODEL = f"pokedge/models/{STUDENT}"
GALLERY = f"pokedge/galleries/{STUDENT}"

MALFORMED = [
    ("models", [], "'models'"),
    (f"models/{STUDENT}", "oops", f"models.{STUDENT}"),
    (f"models/{STUDENT}/s3_path", 42, f"models.{STUDENT}.s3_path"),
    (f"models/{STUDENT}/version", None, f"models.{STUDENT}.version"),
    (f"models/{STUDENT}/formats", "onnx", f"models.{STUDENT}.formats"),
    (f"models/{STUDENT}/production_ready", "yes", f"models.{STUDENT}.production_ready"),
    ("model_lineage/graph", [], "model_lineage.graph"),
    ("model_lineage/graph/dinov3-teacher:v1.0/children", "x", "model_lineage.graph.dinov3-teacher:v1.0.children"),
    ("datasets/reference", "s3://x", "datasets.reference"),
    ("last_updated", 5, "last_updated"),
    ("pokedge/schema", "pokedge.manifest/9", "pokedge.schema"),
    ("pokedge/production", _DELETE, "pokedge.production"),
    ("pokedge/production/cpu", _DELETE, "pokedge.production.cpu"),
    ("pokedge/production/cpu", "nonexistent", "pokedge.production.cpu"),
    ("pokedge/production/toaster", STUDENT, "pokedge.production"),
    ("pokedge/production/hailo", STUDENT, "pokedge.production.hailo"),
    ("pokedge/models", {}, "pokedge.models"),
    (f"{MODEL}/file/sha256", "ABC", f"pokedge.models.{STUDENT}.file.sha256"),
    (f"{MODEL}/file/size", -1, f"pokedge.models.{STUDENT}.file.size"),
    (f"{MODEL}/file/size", True, f"pokedge.models.{STUDENT}.file.size"),
    (f"{MODEL}/file", "models/x.onnx", f"pokedge.models.{STUDENT}.file"),
    (f"{MODEL}/contract/output", {"dim": 0}, f"pokedge.models.{STUDENT}.contract"),
    (f"{MODEL}/contract", _DELETE, f"pokedge.models.{STUDENT}.contract"),
    (f"{MODEL}/gallery", "missing-gallery", f"pokedge.models.{STUDENT}.gallery"),
    (f"{MODEL}/gallery", _DELETE, f"pokedge.models.{STUDENT}.gallery"),
    (f"{GALLERY}/producer", "another-model:v1", f"pokedge.models.{STUDENT}.gallery"),
    (f"{GALLERY}/producer", "", f"pokedge.galleries.{STUDENT}.producer"),
    (f"{GALLERY}/files/index.json", _DELETE, f"pokedge.galleries.{STUDENT}.files"),
]


@pytest.mark.parametrize("path, value, field", MALFORMED, ids=[case[0] + "=" + repr(case[1])[:20] for case in MALFORMED])
def test_malformed_manifest_names_field(path, value, field):
    document = _set(extension_manifest(), path, value)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(json.dumps(document))
    assert field in str(caught.value)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", '"manifest"', "{}"])
def test_unusable_manifest_text_rejected(text):
    with pytest.raises(ManifestError):
        parse_manifest(text)


UNSAFE_KEYS = ["../secrets", "/etc/passwd", "models/../../x", "models/./x", "models//x", "s3://other/x",
               "models\\x", "models/x\n", "", ".."]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_key_rejected(key):
    with pytest.raises(UnsafeKeyError):
        check_relative_key(key, "test.key")


@pytest.mark.parametrize("key", UNSAFE_KEYS[:4])
def test_unsafe_key_in_extension_rejected(key):
    document = _set(extension_manifest(), f"{MODEL}/file/key", key)
    with pytest.raises(UnsafeKeyError) as caught:
        parse_manifest(json.dumps(document))
    assert f"pokedge.models.{STUDENT}.file.key" in str(caught.value)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "..", ""])
def test_unsafe_file_name_rejected(name):
    document = extension_manifest()
    document["pokedge"]["galleries"][STUDENT]["files"][name] = {"key": "data/x", "size": 1, "sha256": SHA}
    with pytest.raises(UnsafeKeyError):
        parse_manifest(json.dumps(document))


def test_s3_path_inside_prefix_accepted():
    key = key_from_s3_path(f"s3://{BUCKET}/{PREFIX}models/a/v1/", BUCKET, PREFIX, "f")
    assert key == "models/a/v1/"
    assert key_from_s3_path("models/a/v1", BUCKET, PREFIX, "f") == "models/a/v1/"
    assert key_from_s3_path(f"{PREFIX}models/a/v1/", BUCKET, PREFIX, "f") == "models/a/v1/"


@pytest.mark.parametrize("s3_path", [
    f"s3://{BUCKET}/data/reference/",  # the stale bucket-root path of the published manifest
    f"s3://other-bucket/{PREFIX}models/",
    f"s3://{BUCKET}/{PREFIX}../elsewhere/",
    f"s3://{BUCKET}/{PREFIX}",
    "https://example.com/models/",
    "/models/a/",
])
def test_s3_path_outside_prefix_rejected(s3_path):
    with pytest.raises(UnsafeKeyError):
        key_from_s3_path(s3_path, BUCKET, PREFIX, "models.x.s3_path")


def test_local_path_through_symlink_rejected(tmp_path):
    root = tmp_path / "staging"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "models")

    with pytest.raises(UnsafeKeyError):
        local_path(root, "models/evil.onnx", "test")
    assert local_path(root, "galleries/a/embeddings.npy", "test") == root / "galleries/a/embeddings.npy"
