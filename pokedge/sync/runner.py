"""One sync run: fetch the manifest, plan, stage, verify, validate, activate, prune.

The active version changes only in the last step, by the atomic swap in
`versions.activate`, so any failure before it leaves the device running
what it ran before. A run stopped at any point (network loss, power cut,
kill) is picked up by the next run: partial downloads resume, a version
staged but not activated is checked again and activated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pokedge.sync import versions
from pokedge.sync.config import SyncConfig
from pokedge.sync.device import detect_device
from pokedge.sync.errors import ValidationError, VersionError
from pokedge.sync.lock import DataDirLock
from pokedge.sync.manifest import parse_manifest
from pokedge.sync.plan import SyncPlan, build_plan
from pokedge.sync.s3 import RetryPolicy, fetch_manifest, make_client
from pokedge.sync.stage import FileAction, assess, stage_version, verify_installed
from pokedge.sync.validate import validate_version

_log = logging.getLogger(__name__)

UP_TO_DATE = "up-to-date"
UPDATE_AVAILABLE = "update-available"
ACTIVATED = "activated"
HELD = "held"  # the selected version was rolled back from; --force installs it again


@dataclass
class SyncResult:
    """The outcome of one sync run: the plan, the status and the bytes moved."""

    status: str
    plan: SyncPlan
    device: str
    active_before: str | None
    actions: list[FileAction] = field(default_factory=list)
    received_bytes: int = 0
    linked_bytes: int = 0
    pruned: list[str] = field(default_factory=list)

    @property
    def version_id(self) -> str:
        return self.plan.version_id

    @property
    def download_bytes(self) -> int:
        return sum(action.download_bytes for action in self.actions)


def run_sync(config: SyncConfig, *, dry_run: bool = False, check: bool = False, force: bool = False,
             client: Any = None, on_bytes: Callable[[int], None] | None = None) -> SyncResult:
    """Bring the data folder to the version the manifest selects for this device.

    With `check` or `dry_run` no version is staged, installed or activated.
    The result's status then reports whether an update exists, and for a
    dry run its actions list how each file would arrive.
    """
    data_dir = config.resolved_data_dir()
    versions.ensure_layout(data_dir)
    client = client or make_client(config)

    if check or dry_run:
        return _inspect(config, data_dir, client, with_actions=dry_run)
    with DataDirLock(data_dir):
        return _sync_locked(config, data_dir, client, force, on_bytes)


def rollback_version(config: SyncConfig) -> tuple[str, str]:
    """Activate the previously active version; return (from, to)."""
    data_dir = config.resolved_data_dir()
    with DataDirLock(data_dir):
        return versions.rollback(data_dir)


def _plan(config: SyncConfig, data_dir: Path, client: Any) -> tuple[SyncPlan, str]:
    data, etag = fetch_manifest(client, config.bucket, config.manifest_key, RetryPolicy.from_config(config))
    manifest = parse_manifest(data)
    device = detect_device(config.device, data_dir)
    plan = build_plan(manifest, config, device, client, manifest_etag=etag)
    for note in plan.notes:
        _log.info("%s", note)
    _log.info("manifest selects version %s for this %s device (%d files, %d bytes)", plan.version_id, device,
              len(plan.files), plan.total_bytes)
    return plan, device


def _status(plan: SyncPlan, data_dir: Path) -> tuple[str, str | None]:
    active = versions.active_version_id(data_dir)
    if active is not None:
        try:
            info = versions.read_version_info(versions.version_path(data_dir, active))
        except VersionError as exc:
            _log.warning("the active version %s is damaged (%s); it will be replaced", active, exc)
            return UPDATE_AVAILABLE, active
        if info.selection == plan.selection:
            return UP_TO_DATE, active
    if plan.version_id in versions.load_state(data_dir)["rolled_back"]:
        return HELD, active
    return UPDATE_AVAILABLE, active


def _inspect(config: SyncConfig, data_dir: Path, client: Any, with_actions: bool) -> SyncResult:
    plan, device = _plan(config, data_dir, client)
    status, active = _status(plan, data_dir)
    result = SyncResult(status, plan, device, active)
    if with_actions and status != UP_TO_DATE:
        installed = versions.version_path(data_dir, plan.version_id)
        folder = installed if installed.is_dir() else versions.staging_path(data_dir, plan.version_id)
        result.actions = assess(plan, data_dir, folder)
    return result


def _sync_locked(config: SyncConfig, data_dir: Path, client: Any, force: bool,
                 on_bytes: Callable[[int], None] | None) -> SyncResult:
    plan, device = _plan(config, data_dir, client)
    status, active = _status(plan, data_dir)
    result = SyncResult(status, plan, device, active)
    if status == UP_TO_DATE:
        _log.info("version %s is active and up to date", active)
        return result
    if status == HELD and not force:
        _log.warning("version %s was rolled back from; not installing it again (use --force)", plan.version_id)
        return result
    versions.forget_rollback(data_dir, plan.version_id)

    versions.clean_leftovers(data_dir, keep_staging=plan.version_id)
    if not _reuse_installed(plan, data_dir):
        staging = versions.staging_path(data_dir, plan.version_id)
        staged = stage_version(plan, config, data_dir, staging, client, on_bytes=on_bytes)
        result.received_bytes = staged.received_bytes
        result.linked_bytes = staged.linked_bytes
        _validate_or_discard(staging, staged.info)
        versions.install_staged(data_dir, plan.version_id)

    versions.activate(data_dir, plan.version_id)
    result.status = ACTIVATED
    result.pruned = versions.prune(data_dir, config.keep)
    return result


def _reuse_installed(plan: SyncPlan, data_dir: Path) -> bool:
    """Check a version installed earlier (kept for rollback, or staged by a run killed before activation).

    Return True when it can be activated as is; otherwise move it back to
    staging so the normal path repairs it.
    """
    folder = versions.version_path(data_dir, plan.version_id)
    if not folder.is_dir():
        return False
    try:
        info = versions.read_version_info(folder)
    except VersionError as exc:
        _log.warning("installed version %s is damaged (%s); staging it again", plan.version_id, exc)
        versions.reopen_installed(data_dir, plan.version_id)
        return False
    damaged = verify_installed(folder, info) if info.selection == plan.selection else ["(different selection)"]
    if not damaged:
        validate_version(folder, info)
        _log.info("reusing installed version %s", plan.version_id)
        return True
    _log.warning("installed version %s does not match (%s); staging it again", plan.version_id, ", ".join(damaged))
    versions.reopen_installed(data_dir, plan.version_id)
    return False


def _validate_or_discard(staging: Path, info: versions.VersionInfo) -> None:
    try:
        validate_version(staging, info)
    except ValidationError:
        # The files are verified but unusable together; keeping them would only fail again next run.
        versions.remove_tree(staging)
        raise
