"""Staging a version: reuse what is already on disk, download the rest, verify each file, write the metadata.

Each planned file is placed in `versions/.staging-<id>/` by the cheapest
route: already there from an interrupted run, hard-linked from an installed
version with the same checksum, resumed from a partial download, or
downloaded. Every file is verified afterwards, whatever its route.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pokedge.contract import file_sha256
from pokedge.gallery import store
from pokedge.sync.config import SyncConfig
from pokedge.sync.errors import ChecksumError, DiskSpaceError, SyncError
from pokedge.sync.files import DIR_MODE, FILE_MODE, fsync_dir, make_dir, write_json
from pokedge.sync.keys import local_path
from pokedge.sync.plan import CONTRACT_FILE, PlannedFile, SyncPlan
from pokedge.sync.progress import ByteProgress
from pokedge.sync.transfer import TransferSettings, download_object, partial_bytes, remove_partial
from pokedge.sync.verify import Expected, verify_file
from pokedge.sync.versions import (VersionFile, VersionInfo, installed_versions, now_utc, version_path,
                                   write_version_info)

_log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass(frozen=True)
class FileAction:
    """The route by which one planned file reaches the staging folder."""

    file: PlannedFile
    route: str  # "staged", "link", "resume" or "download"
    source: Path | None = None  # for "link": the installed copy
    have_bytes: int = 0  # for "resume": bytes already downloaded

    @property
    def download_bytes(self) -> int:
        return self.file.size - self.have_bytes if self.route in ("resume", "download") else 0


@dataclass
class StageResult:
    info: VersionInfo
    received_bytes: int
    linked_bytes: int


def assess(plan: SyncPlan, data_dir: Path, staging: Path) -> list[FileAction]:
    """Decide each file's route without changing anything on disk."""
    by_sha, by_etag = _installed_copies(data_dir)
    actions = []
    for planned in plan.files:
        dest = local_path(staging, planned.path, planned.key)
        if dest.is_file() and dest.stat().st_size == planned.size:
            actions.append(FileAction(planned, "staged"))
            continue
        source = by_sha.get(planned.sha256) if planned.sha256 else by_etag.get((planned.key, planned.size, planned.etag))
        if source is not None and source.is_file() and source.stat().st_size == planned.size:
            actions.append(FileAction(planned, "link", source=source))
            continue
        have = partial_bytes(dest, planned.etag, planned.size)
        actions.append(FileAction(planned, "resume" if have else "download", have_bytes=have))
    return actions


def _installed_copies(data_dir: Path) -> tuple[dict[str, Path], dict[tuple, Path]]:
    """Index the files of installed versions by sha256, and by (key, size, ETag)."""
    by_sha: dict[str, Path] = {}
    by_etag: dict[tuple, Path] = {}
    for info in installed_versions(data_dir):
        folder = version_path(data_dir, info.version_id)
        for recorded in info.files:
            path = folder / recorded.path
            by_sha.setdefault(recorded.sha256, path)
            if recorded.etag:
                by_etag.setdefault((recorded.key, recorded.size, recorded.etag), path)
    return by_sha, by_etag


def check_free_space(folder: Path, needed: int, reserve_mb: int) -> None:
    """Raise DiskSpaceError unless `needed` bytes plus the reserve fit in the folder's file system."""
    free = shutil.disk_usage(folder).free
    required = needed + reserve_mb * MIB
    if required > free:
        raise DiskSpaceError(f"the sync needs {needed / MIB:.1f} MiB plus a {reserve_mb} MiB reserve in {folder}, but "
                             f"only {free / MIB:.1f} MiB are free; free space, lower 'keep' to prune old versions, "
                             f"or lower 'reserve_mb'")


def stage_version(plan: SyncPlan, config: SyncConfig, data_dir: Path, staging: Path, client: Any,
                  on_bytes: Callable[[int], None] | None = None) -> StageResult:
    """Fill the staging folder with verified files, contracts, gallery manifests and version.json."""
    make_dir(staging)
    actions = assess(plan, data_dir, staging)
    needed = sum(action.download_bytes for action in actions)
    check_free_space(staging, needed, config.reserve_mb)

    settings = TransferSettings(config.workers, config.part_size, config.retries, config.backoff_s)
    progress = ByteProgress(needed, on_bytes=on_bytes)
    received = 0
    linked = 0
    recorded = []
    for action in actions:
        dest = local_path(staging, action.file.path, action.file.key)
        make_dir(dest.parent)
        route, got = _place(action, dest, client, config, settings, progress)
        received += got
        linked += action.file.size if route == "link" else 0
        # A file verified by sha256 has the manifest's checksum; others are hashed once here.
        sha256 = action.file.sha256 or file_sha256(dest)
        recorded.append(VersionFile(action.file.path, action.file.key, action.file.size, sha256,
                                    action.file.etag or None))
    if needed:
        progress.finish()

    _write_contracts(plan, staging, {f.path: f.sha256 for f in recorded})
    _write_missing_gallery_manifests(plan, staging)
    info = _version_info(plan, config, recorded)
    write_version_info(staging, info)
    _fsync_tree(staging)
    return StageResult(info, received, linked)


def _place(action: FileAction, dest: Path, client: Any, config: SyncConfig, settings: TransferSettings,
           progress: ByteProgress) -> tuple[str, int]:
    """Put one file in place by its route, falling back to a download; return the route taken and bytes received."""
    planned = action.file
    expected = Expected(planned.size, planned.sha256, planned.etag, planned.encryption)
    name = f"s3://{config.bucket}/{planned.key}"

    if action.route == "staged":
        if _verifies(dest, expected, name):
            _log.debug("%s already staged", planned.path)
            return "staged", 0
        dest.unlink()
    if action.route == "link":
        if _link(action.source, dest) and _verifies(dest, expected, name):
            _log.info("reused %s from %s", planned.path, action.source.parent)
            return "link", 0
        dest.unlink(missing_ok=True)

    progress.start_file(planned.path)
    part, received = download_object(client, config.bucket, planned.key, dest, planned.size, planned.etag,
                                     settings, progress)
    try:
        method = verify_file(part, expected, name)
    except ChecksumError:
        remove_partial(dest)
        raise
    if method == "size":
        _log.warning("%s: checked by size only (its ETag is not an MD5 pokedge can reproduce)", name)

    os.replace(part, dest)
    remove_partial(dest)
    return "download", received


def _verifies(path: Path, expected: Expected, name: str) -> bool:
    try:
        verify_file(path, expected, name)
    except ChecksumError as exc:
        _log.warning("local copy %s does not match (%s); downloading it again", path, exc)
        return False
    return True


def _link(source: Path, dest: Path) -> bool:
    """Hard-link an installed file into staging (a copy across file systems); return False on failure."""
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, dest)
    except OSError as exc:
        _log.warning("could not reuse %s (%s); downloading it instead", source, exc)
        tmp.unlink(missing_ok=True)
        return False
    return True


def _write_contracts(plan: SyncPlan, staging: Path, checksums: dict[str, str]) -> None:
    """Write each model's contract beside it, with the sha256 of the file as installed."""
    for model in filter(None, [plan.onnx, plan.hef]):
        contract = replace(model.contract, sha256=checksums[model.file])
        write_json(staging / model.folder / CONTRACT_FILE, contract.to_dict())


def _write_missing_gallery_manifests(plan: SyncPlan, staging: Path) -> None:
    """Write gallery.json for a reference database that has none (the original tooling writes none)."""
    for gallery in plan.galleries:
        if gallery.has_manifest:
            continue
        folder = staging / gallery.folder
        try:
            rows, dim = np.load(folder / store.EMBEDDINGS, mmap_mode="r", allow_pickle=False).shape
            index = json.loads((folder / store.INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SyncError(f"cannot describe the reference database in {folder}: {exc}") from None
        manifest = {
            "schema": store.SCHEMA,
            "producer": gallery.producer,
            "dim": int(dim),
            "count": int(rows),
            "cards": len(set(index.values())) if isinstance(index, dict) else None,
            "metric": "inner_product",
            "created_at": now_utc(),
            "note": "written by pokedge sync; the published database had no gallery.json",
        }
        write_json(folder / store.MANIFEST, manifest)


def _version_info(plan: SyncPlan, config: SyncConfig, recorded: list[VersionFile]) -> VersionInfo:
    return VersionInfo(
        version_id=plan.version_id,
        selection=plan.selection,
        release=plan.release,
        created_at=now_utc(),
        integrity=plan.integrity,
        onnx_contract=f"{plan.onnx.folder}/{CONTRACT_FILE}",
        hef_contract=f"{plan.hef.folder}/{CONTRACT_FILE}" if plan.hef else None,
        galleries={g.producer: g.folder for g in plan.galleries},
        files=tuple(recorded),
        source={"bucket": config.bucket, "prefix": config.prefix, "endpoint_url": config.endpoint_url,
                "manifest_etag": plan.manifest_etag},
    )


def _fsync_tree(root: Path) -> None:
    """Set modes (0644 files, 0755 folders) and fsync every folder, so renames and new names are durable."""
    for folder, _, names in os.walk(root):
        for name in names:
            os.chmod(os.path.join(folder, name), FILE_MODE)
        os.chmod(folder, DIR_MODE)
        fsync_dir(Path(folder))


def verify_installed(folder: Path, info: VersionInfo) -> list[str]:
    """Return the paths of an installed version whose size or sha256 no longer match version.json."""
    damaged = []
    for recorded in info.files:
        path = folder / recorded.path
        if not path.is_file() or path.stat().st_size != recorded.size or file_sha256(path) != recorded.sha256:
            damaged.append(recorded.path)
    return damaged
