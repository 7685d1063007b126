"""The versions folder without a server: activation, resolve_active, rollback, pruning, leftovers, ETags."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pokedge.sync import versions
from pokedge.sync.errors import VersionError
from pokedge.sync.verify import Expected, etag_matches, verify_file
from pokedge.sync.errors import ChecksumError
from pokedge.sync.versions import VersionInfo, activate, resolve_active, rollback

STUDENT_ID = "efficientnet-student-stage2:v2.0"


def install(data_dir: Path, version_id: str, created_at: str) -> Path:
    """Write a minimal installed version (version.json and its named files)."""
    folder = versions.version_path(data_dir, version_id)
    (folder / "models/student").mkdir(parents=True)
    (folder / "models/student/contract.json").write_text("{}")
    (folder / "galleries/student").mkdir(parents=True)
    info = VersionInfo(version_id=version_id, selection=version_id, release=None, created_at=created_at,
                       integrity="sha256", onnx_contract="models/student/contract.json", hef_contract=None,
                       galleries={STUDENT_ID: "galleries/student"}, files=())
    versions.write_version_info(folder, info)
    return folder


def test_no_active_version_resolves_to_none(tmp_path):
    assert resolve_active(tmp_path) is None


def test_activate_switches_pointer(tmp_path):
    install(tmp_path, "v1", "2026-01-01T00:00:00Z")
    install(tmp_path, "v2", "2026-01-02T00:00:00Z")

    activate(tmp_path, "v1")
    activate(tmp_path, "v2")

    active = resolve_active(tmp_path)
    assert active.version_id == "v2"
    assert os.readlink(tmp_path / "current") == "versions/v2"
    assert active.onnx_contract == tmp_path / "versions/v2/models/student/contract.json"
    assert active.galleries == {STUDENT_ID: tmp_path / "versions/v2/galleries/student"}
    assert active.hef_contract is None
    assert not list(tmp_path.glob(".current.*"))


def test_activate_incomplete_version_rejected(tmp_path):
    (versions.versions_dir(tmp_path) / "half").mkdir(parents=True)
    with pytest.raises(VersionError, match="not a complete version"):
        activate(tmp_path, "half")


@pytest.mark.parametrize("target", ["../elsewhere", "/etc", "versions/../../x", "other/v1"])
def test_damaged_pointer_raises(tmp_path, target):
    os.symlink(target, tmp_path / "current")
    with pytest.raises(VersionError):
        resolve_active(tmp_path)


def test_pointer_to_missing_version_raises(tmp_path):
    os.symlink("versions/gone", tmp_path / "current")
    with pytest.raises(VersionError, match="missing"):
        resolve_active(tmp_path)


def test_version_json_escaping_folder_raises(tmp_path):
    folder = install(tmp_path, "v1", "2026-01-01T00:00:00Z")
    text = (folder / "version.json").read_text().replace('"models/student/contract.json"', '"../../x.json"')
    (folder / "version.json").write_text(text)
    activate_link = tmp_path / "current"
    os.symlink("versions/v1", activate_link)

    with pytest.raises(VersionError, match="damaged"):
        resolve_active(tmp_path)


def test_rollback_walks_activation_stack(tmp_path):
    for i in (1, 2, 3):
        install(tmp_path, f"v{i}", f"2026-01-0{i}T00:00:00Z")
        activate(tmp_path, f"v{i}")

    assert rollback(tmp_path) == ("v3", "v2")
    assert rollback(tmp_path) == ("v2", "v1")
    with pytest.raises(VersionError, match="no earlier version"):
        rollback(tmp_path)
    assert resolve_active(tmp_path).version_id == "v1"
    assert versions.load_state(tmp_path)["rolled_back"] == ["v2", "v3"]


def test_rollback_without_state_uses_install_order(tmp_path):
    install(tmp_path, "v1", "2026-01-01T00:00:00Z")
    install(tmp_path, "v2", "2026-01-02T00:00:00Z")
    activate(tmp_path, "v2")
    (tmp_path / "state.json").write_text("not json")

    assert rollback(tmp_path) == ("v2", "v1")


def test_rollback_without_active_version_raises(tmp_path):
    with pytest.raises(VersionError, match="no version is active"):
        rollback(tmp_path)


def test_prune_keeps_active_and_newest(tmp_path):
    for i in (1, 2, 3, 4):
        install(tmp_path, f"v{i}", f"2026-01-0{i}T00:00:00Z")
    activate(tmp_path, "v1")

    removed = versions.prune(tmp_path, keep=2)

    assert sorted(removed) == ["v2", "v3"]
    remaining = sorted(p.name for p in versions.versions_dir(tmp_path).iterdir())
    assert remaining == ["v1", "v4"]
    assert resolve_active(tmp_path).version_id == "v1"


def test_clean_leftovers_keeps_current_staging(tmp_path):
    root = versions.versions_dir(tmp_path)
    for name in (".staging-old", ".staging-new", ".trash-v0"):
        (root / name).mkdir(parents=True)
    (tmp_path / ".current.123.tmp").symlink_to("versions/x")

    removed = versions.clean_leftovers(tmp_path, keep_staging="new")

    assert sorted(removed) == [".staging-old", ".trash-v0"]
    assert sorted(p.name for p in root.iterdir()) == [".staging-new"]
    assert not (tmp_path / ".current.123.tmp").is_symlink()


def test_installed_versions_skips_damaged(tmp_path):
    install(tmp_path, "v1", "2026-01-01T00:00:00Z")
    (versions.versions_dir(tmp_path) / "broken").mkdir()

    assert [info.version_id for info in versions.installed_versions(tmp_path)] == ["v1"]


def test_single_part_etag_checked(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"pokedge" * 1000)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()

    assert etag_matches(path, f'"{md5}"') is True
    assert etag_matches(path, '"' + "0" * 32 + '"') is False
    assert etag_matches(path, f'"{md5}"', encryption="aws:kms") is None


def test_multipart_etag_checked(tmp_path):
    part = 8 << 20
    data = os.urandom(part + 1000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digests = hashlib.md5(data[:part]).digest() + hashlib.md5(data[part:]).digest()
    etag = f'"{hashlib.md5(digests).hexdigest()}-2"'

    assert etag_matches(path, etag) is True
    assert etag_matches(path, '"' + "0" * 32 + '-2"') is None


def test_verify_file_reports_size_and_checksum(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()

    assert verify_file(path, Expected(3, sha256=good), "blob") == "sha256"
    with pytest.raises(ChecksumError, match="expected 4"):
        verify_file(path, Expected(4, sha256=good), "blob")
    with pytest.raises(ChecksumError, match="sha256"):
        verify_file(path, Expected(3, sha256="0" * 64), "blob")
