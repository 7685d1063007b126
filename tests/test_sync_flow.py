"""`pokedge sync` against a real SeaweedFS server: first sync, no-op, new version, rollback, check, dry-run,
an origin-style manifest, a Hailo device and the command line."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pokedge.cli import main
from pokedge.contract import load_contract
from pokedge.gallery.store import check_compatible, load_gallery
from pokedge.sync import versions
from pokedge.sync.runner import ACTIVATED, HELD, UP_TO_DATE, UPDATE_AVAILABLE, rollback_version, run_sync
from pokedge.sync.versions import resolve_active

from s3_server import (HAILO_ID, STUDENT_ID, new_prefix, publish_hailo, publish_origin, publish_release,
                       s3_client, s3_server, sync_config)

__all__ = ["s3_server"]


@pytest.fixture()
def project(s3_server, tmp_path):
    """A fresh project prefix with one published release, and sync settings pointing at it."""
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    publish_release(client, prefix, tmp_path, seed=1, release="r1")
    config = sync_config(s3_server.endpoint, prefix, tmp_path / "data")
    return client, prefix, config


def cli(config, *extra) -> int:
    return main(["sync", "--bucket", config.bucket, "--prefix", config.prefix, "--endpoint-url", config.endpoint_url,
                 "--data-dir", str(config.data_dir), "--device", "cpu", *extra])


def test_first_sync_activates_usable_version(project):
    _, _, config = project

    result = run_sync(config)

    assert result.status == ACTIVATED
    assert result.active_before is None
    active = resolve_active(config.data_dir)
    assert active.version_id == result.version_id
    assert active.version_id.startswith("r1-")
    contract = load_contract(active.onnx_contract)
    assert contract.model_id == STUDENT_ID
    assert contract.model_path.is_file()
    gallery = load_gallery(active.galleries[STUDENT_ID])
    check_compatible(gallery, STUDENT_ID, contract.output.dim)
    assert result.received_bytes == result.plan.total_bytes


def test_first_sync_sets_safe_modes(project):
    _, _, config = project
    run_sync(config)

    root = versions.versions_dir(config.data_dir)
    for folder, dirs, files in os.walk(root):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755, folder
        for name in files:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
            assert mode & ~0o644 == 0, (name, oct(mode))


def test_second_sync_is_noop(project):
    _, _, config = project
    first = run_sync(config)
    version_json = versions.version_path(config.data_dir, first.version_id) / "version.json"
    before = version_json.stat().st_mtime_ns

    second = run_sync(config)

    assert second.status == UP_TO_DATE
    assert second.version_id == first.version_id
    assert second.received_bytes == 0
    assert version_json.stat().st_mtime_ns == before


def test_new_gallery_reuses_model(project, tmp_path):
    client, prefix, config = project
    first = run_sync(config)
    publish_release(client, prefix, tmp_path, seed=1, release="r2", model=False, gallery_seed=7, gallery_rows=30)

    second = run_sync(config)

    assert second.status == ACTIVATED
    assert second.active_before == first.version_id
    assert second.version_id.startswith("r2-")
    assert len(load_gallery(resolve_active(config.data_dir).galleries[STUDENT_ID])) == 30
    model_size = next(f.size for f in second.plan.files if f.path.endswith(".onnx"))
    assert second.linked_bytes >= model_size
    assert second.received_bytes < second.plan.total_bytes - model_size + 1
    assert versions.version_path(config.data_dir, first.version_id).is_dir()


def test_new_model_and_prune(project, tmp_path):
    client, prefix, config = project
    config = sync_config(config.endpoint_url, prefix, config.data_dir, keep=2)
    ids = [run_sync(config).version_id]
    for seed, release in ((2, "r2"), (3, "r3")):
        publish_release(client, prefix, tmp_path, seed=seed, release=release)
        result = run_sync(config)
        ids.append(result.version_id)

    assert result.pruned == [ids[0]]
    installed = [info.version_id for info in versions.installed_versions(config.data_dir)]
    assert sorted(installed) == sorted(ids[1:])
    assert resolve_active(config.data_dir).version_id == ids[2]


def test_rollback_then_held_then_force(project, tmp_path):
    client, prefix, config = project
    first = run_sync(config).version_id
    publish_release(client, prefix, tmp_path, seed=2, release="r2")
    second = run_sync(config).version_id

    assert rollback_version(config) == (second, first)
    assert resolve_active(config.data_dir).version_id == first

    held = run_sync(config)
    assert held.status == HELD
    assert resolve_active(config.data_dir).version_id == first
    assert run_sync(config, check=True).status == HELD

    forced = run_sync(config, force=True)
    assert forced.status == ACTIVATED
    assert forced.received_bytes == 0
    assert resolve_active(config.data_dir).version_id == second


def test_check_reports_update(project, tmp_path, capsys):
    client, prefix, config = project

    assert cli(config, "--check") == 10
    assert "update available" in capsys.readouterr().out
    assert resolve_active(config.data_dir) is None

    run_sync(config)
    assert cli(config, "--check") == 0
    assert "up to date" in capsys.readouterr().out

    publish_release(client, prefix, tmp_path, seed=2, release="r2")
    assert cli(config, "--check") == 10


def test_dry_run_changes_nothing(project, capsys):
    _, _, config = project

    assert cli(config, "--dry-run") == 0

    out = capsys.readouterr().out
    assert "update available" in out
    assert "student_stage2_final.onnx" in out
    assert "download" in out
    result = run_sync(config, dry_run=True)
    assert result.status == UPDATE_AVAILABLE
    assert result.download_bytes == result.plan.total_bytes
    assert resolve_active(config.data_dir) is None
    assert not any(versions.versions_dir(config.data_dir).iterdir())


def test_cli_sync_versions_and_rollback(project, tmp_path, capsys):
    client, prefix, config = project
    assert cli(config) == 0
    publish_release(client, prefix, tmp_path, seed=2, release="r2")
    assert cli(config) == 0
    out = capsys.readouterr().out
    assert "activated version r2-" in out

    assert main(["versions", "--data-dir", str(config.data_dir)]) == 0
    table = capsys.readouterr().out
    active_lines = [line for line in table.splitlines() if line.startswith("*")]
    assert len(active_lines) == 1
    assert "r2-" in active_lines[0]

    assert cli(config, "--rollback") == 0
    assert "rolled back from r2-" in capsys.readouterr().out
    assert main(["versions", "--json", "--data-dir", str(config.data_dir)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["release"] for row in rows if row["active"]] == ["r1"]
    assert [row["rolled_back"] for row in rows if row["release"] == "r2"] == [True]


def test_cli_error_is_one_line(s3_server, tmp_path, capsys):
    config = sync_config(s3_server.endpoint, new_prefix(), tmp_path / "data")

    assert cli(config) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "project manifest not found" in err[0]


def test_origin_manifest_without_extension(s3_server, tmp_path, caplog):
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    publish_origin(client, prefix, tmp_path)
    config = sync_config(s3_server.endpoint, prefix, tmp_path / "data", device="hailo8l")

    result = run_sync(config)

    assert result.status == ACTIVATED
    assert result.plan.integrity == "etag"
    assert result.plan.hef is None
    assert "weaker" in caplog.text
    assert "reference path" in caplog.text  # the stale bucket-root path is ignored, with a log line
    active = resolve_active(config.data_dir)
    contract = load_contract(active.onnx_contract)
    assert contract.model_id == STUDENT_ID
    assert contract.file == "student_stage2_final.onnx"
    assert contract.input.name == "input"
    assert contract.output.name == "embeddings"
    gallery = load_gallery(active.galleries[STUDENT_ID])
    assert gallery.producer == STUDENT_ID
    synced = {f.path.rsplit("/", 1)[-1] for f in result.plan.files}
    assert "usearch.index" not in synced
    assert "student_stage2_final.pt" not in synced
    assert run_sync(config).status == UP_TO_DATE


def test_hailo_device_gets_hef_and_its_gallery(project, tmp_path):
    client, prefix, config = project
    publish_hailo(client, prefix, tmp_path, seed=5, release="r1-hailo")
    hailo = sync_config(config.endpoint_url, prefix, config.data_dir, device="hailo8")

    result = run_sync(hailo)

    active = resolve_active(config.data_dir)
    assert result.plan.hef is not None
    assert active.hef_contract is not None
    hef = load_contract(active.hef_contract)
    assert hef.format == "hef"
    assert hef.model_path.is_file()
    assert set(active.galleries) == {STUDENT_ID, HAILO_ID}
    check_compatible(load_gallery(active.galleries[HAILO_ID]), HAILO_ID, hef.output.dim)

    cpu_only = run_sync(config)
    assert cpu_only.status == ACTIVATED
    assert resolve_active(config.data_dir).hef_contract is None


def test_hef_for_other_chip_skipped(project, tmp_path):
    client, prefix, config = project
    publish_hailo(client, prefix, tmp_path, seed=5, release="r1-hailo8", target="hailo8")
    hailo8l = sync_config(config.endpoint_url, prefix, config.data_dir, device="hailo8l")

    result = run_sync(hailo8l)

    assert result.plan.hef is None
    assert any("cannot run" in note for note in result.plan.notes)
    assert resolve_active(config.data_dir).hef_contract is None


def test_large_file_downloads_in_parallel_parts(s3_server, tmp_path):
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    publish_release(client, prefix, tmp_path, seed=1, release="big", gallery_rows=2000)  # about 6 MB of embeddings
    config = sync_config(s3_server.endpoint, prefix, tmp_path / "data", part_size_mb=1, workers=4)

    result = run_sync(config)

    assert result.status == ACTIVATED
    embeddings = next(f for f in result.plan.files if f.path.endswith("embeddings.npy"))
    assert embeddings.size > 5 * config.part_size
    assert len(load_gallery(resolve_active(config.data_dir).galleries[STUDENT_ID])) == 2000
    staged = versions.versions_dir(config.data_dir)
    assert not list(staged.rglob("*.part"))
    assert not list(staged.rglob("*.part.json"))
    assert not list(staged.rglob("*.part.written"))



def test_blurred_references_published_and_synced(s3_server, tmp_path):
    import numpy as np

    from pokedge.gallery import blurred
    from pokedge.sync.publish import PublishRequest, publish

    from s3_server import BUCKET, STUDENT, build_gallery, build_model

    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    folder = build_gallery(tmp_path / "gallery", rows=20)
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((20, len(blurred.BLURS), 768)).astype(np.float32)
    values, scales = blurred.quantize(vectors / np.linalg.norm(vectors, axis=2, keepdims=True))
    np.save(folder / blurred.VECTORS, values)
    np.save(folder / blurred.SCALES, scales)
    (folder / blurred.MANIFEST).write_text(json.dumps({"schema": blurred.SCHEMA, "producer": STUDENT_ID,
                                                       "cards": 20, "blurs": [list(b) for b in blurred.BLURS]}))
    model, contract = build_model(tmp_path / "model", 1)
    publish(client, BUCKET, prefix, PublishRequest(model=STUDENT, model_file=model, contract=contract,
                                                   gallery=folder, release="r1"))
    config = sync_config(s3_server.endpoint, prefix, tmp_path / "data")

    result = run_sync(config)

    assert result.status == ACTIVATED
    gallery = load_gallery(resolve_active(config.data_dir).galleries[STUDENT_ID])
    assert gallery.blurred is not None
    assert np.array_equal(np.asarray(gallery.blurred.vectors), values)
