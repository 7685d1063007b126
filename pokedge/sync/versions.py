"""Installed versions in the data folder, the active-version pointer, rollback and pruning.

Layout of the data folder (`--data-dir`, default `pokedge.paths.data_dir()`):

    <data-dir>/
      current -> versions/<version-id>      symlink; switched with one atomic rename
      state.json                            activation stack and rolled-back version ids
      .sync.lock                            flock held by a running sync or rollback
      versions/
        <version-id>/                       one complete, verified, validated version
          version.json                      the files and contracts of this version (below)
          models/<model>/<model file>       e.g. student_stage2_final.onnx or a .hef
          models/<model>/contract.json      the model's I/O contract
          models/<model>/<extra files>      e.g. a parity record
          galleries/<gallery>/              one gallery folder per producing model
            embeddings.npy index.json metadata.json gallery.json [thresholds.json same_art.json printed_totals.json
            blurred.npy blurred_scales.npy blurred.json]
        .staging-<version-id>/              a version being downloaded; resumed by the next run
        .trash-<version-id>/                a version being deleted

`version.json` names the CPU ONNX contract, the optional HEF contract, and
the gallery folder of each producer model id, all relative to the version
folder, plus every file with its key, size and sha256. A version folder is
renamed from `.staging-<id>` only after every file is verified and the
model and gallery pass validation, so a folder under its plain id is always
complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pokedge.sync.errors import UnsafeKeyError, VersionError
from pokedge.sync.files import fsync_dir, make_dir, write_json
from pokedge.sync.keys import check_name, local_path

_log = logging.getLogger(__name__)

VERSION_SCHEMA = "pokedge.version/1"
VERSION_FILE = "version.json"
STATE_FILE = "state.json"
CURRENT = "current"
VERSIONS = "versions"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class ActiveVersion:
    """The files of the active version, as absolute paths."""

    version_id: str
    path: Path
    onnx_contract: Path
    hef_contract: Path | None
    galleries: dict[str, Path]  # producer model id -> gallery folder


@dataclass(frozen=True)
class VersionFile:
    """One file of a version, relative to the version folder."""

    path: str
    key: str
    size: int
    sha256: str
    etag: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """The contents of version.json."""

    version_id: str
    selection: str  # hash of what was selected from the manifest; equal selections are the same version
    release: str | None
    created_at: str
    integrity: str  # "sha256" when the manifest gave checksums, "etag" otherwise
    onnx_contract: str
    hef_contract: str | None
    galleries: dict[str, str]
    files: tuple[VersionFile, ...]
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VERSION_SCHEMA,
            "version_id": self.version_id,
            "selection": self.selection,
            "release": self.release,
            "created_at": self.created_at,
            "integrity": self.integrity,
            "source": self.source,
            "onnx_contract": self.onnx_contract,
            "hef_contract": self.hef_contract,
            "galleries": self.galleries,
            "files": [vars(f) for f in self.files],
        }


def versions_dir(data_dir: Path) -> Path:
    return Path(data_dir) / VERSIONS


def version_path(data_dir: Path, version_id: str) -> Path:
    return versions_dir(data_dir) / version_id


def staging_path(data_dir: Path, version_id: str) -> Path:
    return versions_dir(data_dir) / f"{STAGING_PREFIX}{version_id}"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_version_info(folder: Path) -> VersionInfo:
    """Read and check `folder/version.json`; raise VersionError naming the fault."""
    path = folder / VERSION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VersionError(f"{path} is missing; the version folder is incomplete, run 'pokedge sync'") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VersionError(f"{path} is not valid JSON ({exc}); run 'pokedge sync' to reinstall it") from None

    try:
        return _version_info_from_dict(data, folder)
    except (KeyError, TypeError, ValueError, UnsafeKeyError) as exc:
        raise VersionError(f"{path} is damaged ({exc}); run 'pokedge sync' to reinstall it") from None


def _version_info_from_dict(data: dict[str, Any], folder: Path) -> VersionInfo:
    if data.get("schema") != VERSION_SCHEMA:
        raise ValueError(f"schema is {data.get('schema')!r}, expected {VERSION_SCHEMA!r}")
    # Every path must stay inside the version folder, even if version.json was edited.
    for relative in [data["onnx_contract"], data.get("hef_contract"), *data["galleries"].values()]:
        if relative is not None:
            local_path(folder, relative, VERSION_FILE)

    files = tuple(VersionFile(f["path"], f["key"], int(f["size"]), f["sha256"], f.get("etag")) for f in data["files"])
    return VersionInfo(
        version_id=check_name(data["version_id"], "version_id"),
        selection=str(data["selection"]),
        release=data.get("release"),
        created_at=str(data["created_at"]),
        integrity=str(data["integrity"]),
        onnx_contract=data["onnx_contract"],
        hef_contract=data.get("hef_contract"),
        galleries=dict(data["galleries"]),
        files=files,
        source=dict(data.get("source") or {}),
    )


def write_version_info(folder: Path, info: VersionInfo) -> None:
    write_json(folder / VERSION_FILE, info.to_dict())


def active_version_id(data_dir: Path) -> str | None:
    """Return the id the `current` pointer names, or None when no version is active."""
    link = Path(data_dir) / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VersionError(f"{link} is not a symlink ({exc}); remove it and run 'pokedge sync'") from None

    parent, _, version_id = target.partition("/")
    if parent != VERSIONS or not version_id:
        raise VersionError(f"{link} points at {target!r}, not at versions/<id>; remove it and run 'pokedge sync'")
    try:
        return check_name(version_id, CURRENT)
    except UnsafeKeyError:
        raise VersionError(f"{link} points at {target!r}, which is not a version id") from None


def resolve_active(data_dir: Path) -> ActiveVersion | None:
    """Return the active version's contracts and galleries, or None when no version was ever activated.

    Raise VersionError when the pointer or the version it names is damaged,
    so a caller never silently runs something other than what was activated.
    """
    version_id = active_version_id(data_dir)
    if version_id is None:
        return None

    folder = version_path(data_dir, version_id)
    if not folder.is_dir():
        raise VersionError(f"the active version {version_id} is missing from {versions_dir(data_dir)}; "
                           f"run 'pokedge sync' or 'pokedge sync --rollback'")
    info = read_version_info(folder)
    return ActiveVersion(
        version_id=version_id,
        path=folder,
        onnx_contract=folder / info.onnx_contract,
        hef_contract=folder / info.hef_contract if info.hef_contract else None,
        galleries={producer: folder / relative for producer, relative in info.galleries.items()},
    )


def installed_versions(data_dir: Path) -> list[VersionInfo]:
    """Return the complete versions in the versions folder, oldest first; damaged ones are logged and skipped."""
    root = versions_dir(data_dir)
    if not root.is_dir():
        return []

    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            found.append(read_version_info(folder))
        except VersionError as exc:
            _log.warning("ignoring damaged version folder %s: %s", folder, exc)
    return sorted(found, key=lambda info: (info.created_at, info.version_id))


def incomplete_versions(data_dir: Path) -> list[str]:
    """Return the ids of versions still being staged."""
    root = versions_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(p.name[len(STAGING_PREFIX):] for p in root.iterdir() if p.name.startswith(STAGING_PREFIX))


def install_staged(data_dir: Path, version_id: str) -> Path:
    """Rename a verified `.staging-<id>` folder to `<id>`; the rename is atomic and fsynced."""
    staged = staging_path(data_dir, version_id)
    final = version_path(data_dir, version_id)
    if final.exists():
        raise VersionError(f"{final} already exists; it should have been reused or moved back to staging")
    os.rename(staged, final)
    fsync_dir(versions_dir(data_dir))
    return final


def reopen_installed(data_dir: Path, version_id: str) -> Path:
    """Move an installed but inactive version back to staging, so a failed check can repair it."""
    staged = staging_path(data_dir, version_id)
    if staged.exists():
        remove_tree(staged)
    os.rename(version_path(data_dir, version_id), staged)
    fsync_dir(versions_dir(data_dir))
    return staged


def activate(data_dir: Path, version_id: str) -> None:
    """Point `current` at an installed version with one atomic rename, then fsync the folder."""
    data_dir = Path(data_dir)
    if not (version_path(data_dir, version_id) / VERSION_FILE).is_file():
        raise VersionError(f"cannot activate {version_id}: {version_path(data_dir, version_id)} is not a complete "
                           f"version")
    previous = active_version_id(data_dir)

    tmp = data_dir / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS}/{version_id}", tmp)
    os.replace(tmp, data_dir / CURRENT)
    fsync_dir(data_dir)

    state = load_state(data_dir)
    stack = [v for v in state["stack"] if v != version_id]
    if previous and previous != version_id and previous not in stack:
        stack.append(previous)
    state["stack"] = stack + [version_id]
    save_state(data_dir, state)
    _log.info("activated version %s (was %s)", version_id, previous or "none")


def rollback(data_dir: Path) -> tuple[str, str]:
    """Activate the version that was active before the current one; return (from, to).

    The version rolled back from is recorded, so `pokedge sync` does not
    reinstall it until `--force` is given.
    """
    current = active_version_id(data_dir)
    if current is None:
        raise VersionError(f"no version is active in {data_dir}; nothing to roll back")

    installed = {info.version_id: info for info in installed_versions(data_dir)}
    state = load_state(data_dir)
    earlier = [v for v in state["stack"] if v != current and v in installed]
    if not earlier:
        # No activation history (state lost or first install): fall back to install order.
        created = installed[current].created_at if current in installed else ""
        earlier = [v for v, info in installed.items() if v != current and info.created_at <= created]
    if not earlier:
        raise VersionError(f"no earlier version is installed in {versions_dir(data_dir)}; "
                           f"the active version {current} is the only one")

    target = earlier[-1]
    activate(data_dir, target)
    state = load_state(data_dir)
    state["stack"] = [v for v in state["stack"] if v != current]
    state["rolled_back"] = sorted(set(state["rolled_back"]) | {current})
    save_state(data_dir, state)
    return current, target


def prune(data_dir: Path, keep: int) -> list[str]:
    """Delete installed versions beyond the newest `keep`, never the active one; return the deleted ids.

    Versions on the activation stack (rollback targets) are kept before
    other versions of the same age.
    """
    current = active_version_id(data_dir)
    installed = installed_versions(data_dir)
    stack = load_state(data_dir)["stack"]

    def rank(info: VersionInfo) -> tuple[int, int, str]:
        on_stack = stack.index(info.version_id) if info.version_id in stack else -1
        return (info.version_id == current, on_stack, info.created_at)

    ordered = sorted(installed, key=rank, reverse=True)
    removed = [info.version_id for info in ordered[keep:]]
    for version_id in removed:
        _log.info("pruning version %s (keeping %d)", version_id, keep)
        remove_tree(version_path(data_dir, version_id))

    if removed:
        state = load_state(data_dir)
        state["stack"] = [v for v in state["stack"] if v not in removed]
        save_state(data_dir, state)
    return removed


def clean_leftovers(data_dir: Path, keep_staging: str | None = None) -> list[str]:
    """Delete stale `.staging-*` folders (except `keep_staging`), `.trash-*` folders and pointer temp files."""
    root = versions_dir(data_dir)
    removed = []
    if root.is_dir():
        for folder in root.iterdir():
            stale_staging = folder.name.startswith(STAGING_PREFIX) and folder.name != f"{STAGING_PREFIX}{keep_staging}"
            if stale_staging or folder.name.startswith(TRASH_PREFIX):
                _log.info("removing leftover %s from an interrupted run", folder)
                remove_tree(folder)
                removed.append(folder.name)
    for tmp in Path(data_dir).glob(f".{CURRENT}.*.tmp"):
        tmp.unlink(missing_ok=True)
    return removed


def remove_tree(folder: Path) -> None:
    """Rename a folder to `.trash-<name>` first, so a crash mid-delete never leaves a half version under its id."""
    if not folder.exists():
        return
    name = folder.name.removeprefix(STAGING_PREFIX).removeprefix(TRASH_PREFIX)
    trash = folder.with_name(f"{TRASH_PREFIX}{name}")
    if folder != trash:
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(folder, trash)
        fsync_dir(folder.parent)
    shutil.rmtree(trash)


def load_state(data_dir: Path) -> dict[str, list[str]]:
    """Read state.json (activation stack, rolled-back ids); a missing or damaged file reads as empty."""
    path = Path(data_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stack = [str(v) for v in data.get("stack", [])]
        rolled_back = [str(v) for v in data.get("rolled_back", [])]
    except FileNotFoundError:
        return {"stack": [], "rolled_back": []}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        _log.warning("ignoring damaged %s (%s); rollback falls back to install order", path, exc)
        return {"stack": [], "rolled_back": []}
    return {"stack": stack, "rolled_back": rolled_back}


def save_state(data_dir: Path, state: dict[str, list[str]]) -> None:
    write_json(Path(data_dir) / STATE_FILE, state)


def forget_rollback(data_dir: Path, version_id: str) -> None:
    """Allow sync to activate a version that was rolled back from."""
    state = load_state(data_dir)
    if version_id in state["rolled_back"]:
        state["rolled_back"].remove(version_id)
        save_state(data_dir, state)


def ensure_layout(data_dir: Path) -> None:
    make_dir(versions_dir(data_dir))
