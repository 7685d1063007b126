"""The publishing side: uploads, the manifest extension, and the rest of the manifest left untouched."""

from __future__ import annotations

import pytest

from pokedge.errors import GalleryError
from pokedge.sync.errors import SyncError
from pokedge.sync.manifest import parse_manifest
from pokedge.sync.publish import PublishRequest, publish

from s3_server import (BUCKET, STUDENT, STUDENT_ID, build_gallery, build_model, get_manifest, new_prefix,
                       publish_origin, s3_client, s3_server)

__all__ = ["s3_server"]


@pytest.fixture()
def origin_project(s3_server, tmp_path):
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    original = publish_origin(client, prefix, tmp_path)
    return client, prefix, original


def test_publish_keeps_rest_of_manifest(origin_project, tmp_path):
    client, prefix, original = origin_project
    model, contract = build_model(tmp_path / "m", seed=3)
    request = PublishRequest(model=STUDENT, model_file=model, contract=contract,
                             gallery=build_gallery(tmp_path / "g"), release="2026-03-01")

    publish(client, BUCKET, prefix, request)

    document = get_manifest(client, prefix)
    extension = document.pop("pokedge")
    assert document == original
    parsed = parse_manifest(__import__("json").dumps({**document, "pokedge": extension})).extension
    assert parsed.release == "2026-03-01"
    assert parsed.production == {"cpu": STUDENT}
    entry = parsed.models[STUDENT]
    # The model goes to the folder the manifest's s3_path names.
    assert entry.file.key == "models/efficientnet-student/stage2/v2.0/student_stage2_final.onnx"
    assert entry.contract.sha256 == entry.file.sha256
    gallery = parsed.galleries[entry.gallery]
    assert gallery.producer == STUDENT_ID
    assert set(gallery.files) == {"embeddings.npy", "index.json", "metadata.json", "gallery.json"}
    assert all(ref.key.startswith(f"data/reference/{STUDENT}/2026-03-01/") for ref in gallery.files.values())
    head = client.head_object(Bucket=BUCKET, Key=prefix + entry.file.key)
    assert head["ContentLength"] == entry.file.size


def test_gallery_only_publish_keeps_model(origin_project, tmp_path):
    client, prefix, _ = origin_project
    model, contract = build_model(tmp_path / "m", seed=3)
    publish(client, BUCKET, prefix, PublishRequest(model=STUDENT, model_file=model, contract=contract,
                                                   gallery=build_gallery(tmp_path / "g1"), release="r1"))
    before = get_manifest(client, prefix)["pokedge"]

    publish(client, BUCKET, prefix, PublishRequest(model=STUDENT, gallery=build_gallery(tmp_path / "g2", rows=40),
                                                   release="r2"))

    after = get_manifest(client, prefix)["pokedge"]
    assert after["models"][STUDENT]["file"] == before["models"][STUDENT]["file"]
    assert after["galleries"][STUDENT]["count"] == 40
    assert after["galleries"][STUDENT]["files"]["embeddings.npy"]["key"].endswith("/r2/embeddings.npy")
    assert after["release"] == "r2"


def test_gallery_of_other_model_refused(origin_project, tmp_path):
    client, prefix, _ = origin_project
    model, contract = build_model(tmp_path / "m", seed=3)
    gallery = build_gallery(tmp_path / "g", producer="another-model:v1")

    with pytest.raises(GalleryError, match="another-model:v1"):
        publish(client, BUCKET, prefix, PublishRequest(model=STUDENT, model_file=model, contract=contract,
                                                       gallery=gallery))
    assert "pokedge" not in get_manifest(client, prefix)


def test_model_failing_its_contract_refused(origin_project, tmp_path):
    client, prefix, _ = origin_project
    model, contract = build_model(tmp_path / "m", seed=3, dim=512, contract_dim=768)

    with pytest.raises(Exception, match="512"):
        publish(client, BUCKET, prefix, PublishRequest(model=STUDENT, model_file=model, contract=contract,
                                                       gallery=build_gallery(tmp_path / "g")))
    assert "pokedge" not in get_manifest(client, prefix)


def test_gallery_before_model_refused(origin_project, tmp_path):
    client, prefix, _ = origin_project

    with pytest.raises(SyncError, match="not published yet"):
        publish(client, BUCKET, prefix, PublishRequest(model=STUDENT, gallery=build_gallery(tmp_path / "g")))


def test_publish_script_runs(s3_server, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "publish_project.py"
    spec = importlib.util.spec_from_file_location("publish_project", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prefix = new_prefix()
    model, contract = build_model(tmp_path / "m", seed=4)
    gallery = build_gallery(tmp_path / "g")

    status = module.main(["--model", STUDENT, "--model-file", str(model), "--contract", str(contract),
                          "--gallery", str(gallery), "--release", "cli-1", "--bucket", BUCKET, "--prefix", prefix,
                          "--endpoint-url", s3_server.endpoint])

    assert status == 0
    assert "published release cli-1" in capsys.readouterr().out
    document = get_manifest(s3_client(s3_server.endpoint), prefix)
    assert document["pokedge"]["production"] == {"cpu": STUDENT}
    assert document["pokedge"]["models"][STUDENT]["file"]["key"] == f"models/{STUDENT}/v2.0/student_stage2_final.onnx"
