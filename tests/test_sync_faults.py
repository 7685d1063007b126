"""Faults during `pokedge sync`, each ending with the previously active version intact and a clear error.

The faults: corrupt objects, cut connections, a stopped server, a full disk, bad manifests, unsafe keys,
a model that does not fit its contract, and a process killed or stopped mid-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from pokedge.sync import versions
from pokedge.sync.errors import (ChecksumError, DiskSpaceError, LockError, ManifestError, TransferError,
                                 UnsafeKeyError, ValidationError)
from pokedge.sync.lock import DataDirLock
from pokedge.sync.runner import ACTIVATED, run_sync
from pokedge.sync.transfer import partial_bytes, partial_paths
from pokedge.sync.versions import resolve_active

from s3_server import (BUCKET, STUDENT, CuttingProxy, SeaweedServer, get_manifest, new_prefix, origin_manifest,
                       publish_origin, publish_release, put_manifest, s3_client, s3_server, sync_config)

__all__ = ["s3_server"]

TESTS_DIR = Path(__file__).resolve().parent
BIG_ROWS = 2000  # about 6 MB of embeddings: several 1 MiB parts

Project = namedtuple("Project", "client prefix config first")


@pytest.fixture()
def project(s3_server, tmp_path):
    """A project whose release r1 is synced and active."""
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    publish_release(client, prefix, tmp_path, seed=1, release="r1")
    config = sync_config(s3_server.endpoint, prefix, tmp_path / "data")
    first = run_sync(config).version_id
    return Project(client, prefix, config, first)


def assert_still_active(project: Project) -> None:
    """The version that was active before the fault is active, complete and loadable."""
    active = resolve_active(project.config.data_dir)
    assert active is not None
    assert active.version_id == project.first
    assert active.onnx_contract.is_file()
    assert all(folder.is_dir() for folder in active.galleries.values())


def gallery_key(extension: dict, name: str = "embeddings.npy") -> str:
    return extension["galleries"][STUDENT]["files"][name]["key"]


def staged_file(config, version_id: str, name: str = "embeddings.npy") -> Path:
    return versions.staging_path(config.data_dir, version_id) / "galleries" / STUDENT / name


def test_corrupt_object_rejected(project, tmp_path):
    extension = publish_release(project.client, project.prefix, tmp_path, seed=2, release="r2")
    key = project.prefix + gallery_key(extension)
    body = bytearray(project.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[-10] ^= 0xFF  # same size, different content
    project.client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))

    with pytest.raises(ChecksumError) as caught:
        run_sync(project.config)

    assert key in str(caught.value)
    assert "sha256" in str(caught.value)
    assert_still_active(project)
    staging = versions.versions_dir(project.config.data_dir)
    assert not list(staging.glob(".staging-*/**/embeddings.npy*"))


def test_object_size_differs_from_manifest(project, tmp_path):
    extension = publish_release(project.client, project.prefix, tmp_path, seed=2, release="r2")
    project.client.put_object(Bucket=BUCKET, Key=project.prefix + gallery_key(extension, "index.json"), Body=b"{}")

    with pytest.raises(ChecksumError, match="bytes on the server"):
        run_sync(project.config)
    assert_still_active(project)


def test_cut_connection_then_resume(project, tmp_path):
    publish_release(project.client, project.prefix, tmp_path, seed=1, release="r2", model=False, gallery_rows=BIG_ROWS)
    proxy = CuttingProxy(int(project.config.endpoint_url.rsplit(":", 1)[1]))
    config = sync_config(proxy.endpoint, project.prefix, project.config.data_dir, retries=1)
    try:
        plan = run_sync(config, dry_run=True).plan
        embeddings = next(f for f in plan.files if f.path.endswith("embeddings.npy"))
        proxy.cut_after(embeddings.size // 2, reject_new=True)

        with pytest.raises(TransferError) as caught:
            run_sync(config)
        assert "next sync resumes" in str(caught.value)
        assert_still_active(project)
        kept = partial_bytes(staged_file(config, plan.version_id), embeddings.etag, embeddings.size)
        assert 0 < kept < embeddings.size

        proxy.heal()
        preview = run_sync(config, dry_run=True)
        result = run_sync(config)
    finally:
        proxy.close()

    resumed = [a for a in preview.actions if a.file.path.endswith("embeddings.npy")]
    assert [(a.route, a.have_bytes) for a in resumed] == [("resume", kept)]
    assert result.status == ACTIVATED
    # Everything not yet downloaded is fetched once; the kept bytes are not fetched again.
    assert result.received_bytes == preview.download_bytes
    assert preview.download_bytes < plan.total_bytes - kept + 1


def test_cut_connection_retried_in_same_run(project, tmp_path):
    publish_release(project.client, project.prefix, tmp_path, seed=1, release="r2", model=False, gallery_rows=BIG_ROWS)
    proxy = CuttingProxy(int(project.config.endpoint_url.rsplit(":", 1)[1]))
    config = sync_config(proxy.endpoint, project.prefix, project.config.data_dir, retries=2)
    try:
        proxy.cut_after(2 << 20)
        result = run_sync(config)
    finally:
        proxy.close()

    assert result.status == ACTIVATED
    assert result.received_bytes == result.plan.total_bytes - result.linked_bytes


def test_server_stopped_mid_sync(s3_server, tmp_path):
    # A server of its own, because this test stops and restarts it; s3_server provides the credentials.
    server = SeaweedServer(tmp_path / "seaweedfs").start()
    try:
        client = s3_client(server.endpoint)
        prefix = new_prefix()
        publish_release(client, prefix, tmp_path, seed=1, release="r1")
        config = sync_config(server.endpoint, prefix, tmp_path / "data", retries=1)
        first = run_sync(config).version_id
        publish_release(client, prefix, tmp_path, seed=2, release="r2", gallery_rows=BIG_ROWS)

        stopped = []

        def stop_server_at_30_percent(done: int) -> None:
            if not stopped and done > 0.3 * BIG_ROWS * 768 * 4:
                stopped.append(done)
                server.stop()

        with pytest.raises(TransferError) as caught:
            run_sync(config, on_bytes=stop_server_at_30_percent)
        assert stopped
        assert "s3://" in str(caught.value)
        assert resolve_active(config.data_dir).version_id == first

        server.start()
        result = run_sync(config)
        assert result.status == ACTIVATED
        assert result.received_bytes < result.plan.total_bytes - stopped[0] // 2
    finally:
        server.stop()


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs; skipped where this process may not mount one."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; disk-full handling is not exercised")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture()
def project_on_tmpfs(s3_server, small_tmpfs, tmp_path):
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    publish_release(client, prefix, tmp_path, seed=1, release="r1")
    config = sync_config(s3_server.endpoint, prefix, small_tmpfs / "data")
    first = run_sync(config).version_id
    publish_release(client, prefix, tmp_path, seed=2, release="r2", gallery_rows=1000)  # about 3 MB
    return Project(client, prefix, config, first)


def test_disk_full_rejected_before_download(project_on_tmpfs):
    with pytest.raises(DiskSpaceError) as caught:
        run_sync(project_on_tmpfs.config)

    assert "MiB are free" in str(caught.value)
    assert_still_active(project_on_tmpfs)
    assert not list(versions.versions_dir(project_on_tmpfs.config.data_dir).rglob("*.part"))


def test_disk_full_during_download(project_on_tmpfs, monkeypatch):
    # Another writer can fill the disk after the free-space check; pretend the check saw plenty.
    from pokedge.sync import stage

    monkeypatch.setattr(stage.shutil, "disk_usage", lambda path: _Usage(free=1 << 40))
    with pytest.raises(DiskSpaceError) as caught:
        run_sync(project_on_tmpfs.config)

    assert "no space left" in str(caught.value)
    assert_still_active(project_on_tmpfs)


_Usage = namedtuple("_Usage", "free")


def test_invalid_json_manifest(project):
    put_manifest(project.client, project.prefix, b"{\"models\": ")

    with pytest.raises(ManifestError, match="not valid JSON"):
        run_sync(project.config)
    assert_still_active(project)


def test_malformed_manifest_field(project):
    manifest = get_manifest(project.client, project.prefix)
    manifest["pokedge"]["models"][STUDENT]["file"]["size"] = "large"
    put_manifest(project.client, project.prefix, manifest)

    with pytest.raises(ManifestError) as caught:
        run_sync(project.config)
    assert f"pokedge.models.{STUDENT}.file.size" in str(caught.value)
    assert_still_active(project)


@pytest.mark.parametrize("where, value", [
    ("model", "../../../../etc/passwd"),
    ("model", "/etc/passwd"),
    ("model", "models/../../outside.onnx"),
    ("gallery-file", "../evil.npy"),
])
def test_unsafe_keys_rejected(project, tmp_path, where, value):
    manifest = get_manifest(project.client, project.prefix)
    if where == "model":
        manifest["pokedge"]["models"][STUDENT]["file"]["key"] = value
    else:
        files = manifest["pokedge"]["galleries"][STUDENT]["files"]
        files[value] = files["index.json"]
    put_manifest(project.client, project.prefix, manifest)
    before = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(UnsafeKeyError):
        run_sync(project.config)
    assert_still_active(project)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_origin_s3_path_outside_prefix_rejected(s3_server, tmp_path):
    client = s3_client(s3_server.endpoint)
    prefix = new_prefix()
    publish_origin(client, prefix, tmp_path)
    manifest = origin_manifest(prefix)
    manifest["models"][STUDENT]["s3_path"] = f"s3://{BUCKET}/other-project/models/"
    put_manifest(client, prefix, manifest)

    with pytest.raises(UnsafeKeyError, match="outside the project prefix"):
        run_sync(sync_config(s3_server.endpoint, prefix, tmp_path / "data"))
    assert resolve_active(tmp_path / "data") is None


@pytest.mark.parametrize("dynamic_output", [False, True], ids=["declared-512", "dynamic-shape"])
def test_wrong_output_dim_rejected(project, tmp_path, dynamic_output):
    publish_release(project.client, project.prefix, tmp_path, seed=2, release="r2", validate=False, dim=512,
                    contract_dim=768, dynamic_output=dynamic_output)

    with pytest.raises(ValidationError) as caught:
        run_sync(project.config)

    assert "512" in str(caught.value)
    assert_still_active(project)
    assert versions.incomplete_versions(project.config.data_dir) == []


def test_gallery_from_other_model_rejected(project, tmp_path):
    publish_release(project.client, project.prefix, tmp_path, seed=2, release="r2", validate=False)
    manifest = get_manifest(project.client, project.prefix)
    key = project.prefix + manifest["pokedge"]["galleries"][STUDENT]["files"]["gallery.json"]["key"]
    gallery_json = json.loads(project.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    gallery_json["producer"] = "some-other-model:v9"
    body = json.dumps(gallery_json).encode()
    project.client.put_object(Bucket=BUCKET, Key=key, Body=body)
    ref = manifest["pokedge"]["galleries"][STUDENT]["files"]["gallery.json"]
    ref.update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
    put_manifest(project.client, project.prefix, manifest)

    with pytest.raises(ValidationError, match="some-other-model:v9"):
        run_sync(project.config)
    assert_still_active(project)


def test_concurrent_sync_locked_out(project):
    with DataDirLock(project.config.data_dir):
        with pytest.raises(LockError, match="another pokedge sync"):
            run_sync(project.config)


def run_until_killed(config, patch: str) -> subprocess.CompletedProcess:
    """Run a sync in a child process that SIGKILLs itself at the point `patch` names."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}
    code = f"""
import json, os, signal, sys, time
sys.path.insert(0, {str(TESTS_DIR)!r})
from pokedge.sync import runner, versions
from pokedge.sync.config import SyncConfig
from pathlib import Path

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

settings = json.loads({json.dumps(json.dumps(settings))})
settings["data_dir"] = Path(settings["data_dir"])
config = SyncConfig(**settings)
on_bytes = None
{patch}
runner.run_sync(config, on_bytes=on_bytes)
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("patch", [
    "runner._validate_or_discard = die",  # staged and verified, not yet validated or installed
    "versions.activate = die",  # installed under its id, not yet active
], ids=["before-validation", "before-activation"])
def test_killed_between_staging_and_activation(project, tmp_path, patch):
    publish_release(project.client, project.prefix, tmp_path, seed=2, release="r2")
    (versions.versions_dir(project.config.data_dir) / ".staging-abandoned").mkdir()

    killed = run_until_killed(project.config, patch)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_still_active(project)
    result = run_sync(project.config)
    assert result.status == ACTIVATED
    assert result.received_bytes == 0
    assert resolve_active(project.config.data_dir).version_id == result.version_id
    leftovers = [p.name for p in versions.versions_dir(project.config.data_dir).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_killed_mid_download_resumes(project, tmp_path):
    publish_release(project.client, project.prefix, tmp_path, seed=1, release="r2", model=False, gallery_rows=BIG_ROWS)
    plan = run_sync(project.config, dry_run=True).plan
    embeddings = next(f for f in plan.files if f.path.endswith("embeddings.npy"))
    # On loopback the whole file arrives in milliseconds, faster than the half-second checkpoint interval.
    # So at 40 % every worker pauses for 0.7 s, and the first progress report after a checkpoint of the
    # download state has reached the disk kills the process.
    sidecar = partial_paths(staged_file(project.config, plan.version_id))[1]
    patch = f"""
import threading
from pathlib import Path
sidecar = Path({str(sidecar)!r})
resume = threading.Event()
phase = [0]
def on_bytes(done):
    if phase[0] == 2 and sidecar.exists():
        die()
    if phase[0] == 0 and done > 0.4 * {embeddings.size}:
        phase[0] = 1
        time.sleep(0.7)
        phase[0] = 2
        resume.set()
    elif phase[0] == 1:
        resume.wait()
"""
    killed = run_until_killed(project.config, patch)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_still_active(project)
    kept = partial_bytes(staged_file(project.config, plan.version_id), embeddings.etag, embeddings.size)
    assert kept >= 0.3 * embeddings.size
    preview = run_sync(project.config, dry_run=True)
    result = run_sync(project.config)
    assert result.status == ACTIVATED
    assert result.received_bytes == preview.download_bytes
    assert preview.download_bytes <= plan.total_bytes - kept


def test_sigterm_saves_partial_download(project, tmp_path):
    publish_release(project.client, project.prefix, tmp_path, seed=1, release="r2", model=False, gallery_rows=BIG_ROWS)
    plan = run_sync(project.config, dry_run=True).plan
    embeddings = next(f for f in plan.files if f.path.endswith("embeddings.npy"))
    config = project.config
    code = f"""
import os, signal, sys
from pokedge.sync import progress
add = progress.ByteProgress.add

def add_then_terminate(self, count):
    add(self, count)
    if self.done > 0.4 * self.total and not getattr(self, "terminated", False):
        self.terminated = True
        os.kill(os.getpid(), signal.SIGTERM)  # what systemd sends when it stops the unit

progress.ByteProgress.add = add_then_terminate
from pokedge.cli import main
sys.exit(main(["sync", "--bucket", {config.bucket!r}, "--prefix", {config.prefix!r}, "--endpoint-url",
               {config.endpoint_url!r}, "--data-dir", {str(config.data_dir)!r}, "--device", "cpu"]))
"""
    environment = {**os.environ, "POKEDGE_SYNC_PART_SIZE_MB": "1", "POKEDGE_CONFIG": os.devnull}
    stopped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env=environment)

    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert_still_active(project)
    kept = partial_bytes(staged_file(config, plan.version_id), embeddings.etag, embeddings.size)
    assert kept >= 0.3 * embeddings.size
    assert run_sync(config).status == ACTIVATED
