"""`pokedge sync` and `pokedge versions`: pull models and galleries from the S3 project, list and roll back versions."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
from pathlib import Path

from pokedge.sync import versions
from pokedge.sync.config import DEVICES, SyncConfig, load_config
from pokedge.sync.runner import ACTIVATED, HELD, UP_TO_DATE, UPDATE_AVAILABLE, SyncResult, rollback_version, run_sync

_log = logging.getLogger(__name__)

MIB = 1 << 20
# Exit status of `pokedge sync --check` when the manifest selects a version that is not active.
EXIT_UPDATE_AVAILABLE = 10


def register(subparsers) -> None:
    sync = subparsers.add_parser(
        "sync", help="pull the production model and gallery from S3 and activate them",
        description="Download what this device needs from the S3 project, verify every file, check that the "
                    "model loads and fits its gallery, then switch to the new version atomically.")
    mode = sync.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would change and how many bytes, change nothing")
    mode.add_argument("--check", action="store_true",
                      help=f"exit 0 when up to date, {EXIT_UPDATE_AVAILABLE} when an update exists; change nothing")
    mode.add_argument("--rollback", action="store_true", help="activate the previously active version")
    sync.add_argument("--force", action="store_true", help="install the selected version even if it was rolled back from")
    sync.add_argument("--device", choices=DEVICES, help="device kind: auto detects a Hailo chip (default auto)")
    sync.add_argument("--keep", type=int, help="installed versions to keep, the active one included (default 3)")
    sync.add_argument("--workers", type=int, help="parallel connections per file (default 4)")
    sync.add_argument("--retries", type=int, help="retries of a failed download part before giving up (default 5)")
    add_source_options(sync)
    sync.set_defaults(func=run)

    listing = subparsers.add_parser("versions", help="list installed versions and mark the active one",
                                    description="List the versions in the data folder; '*' marks the active one.")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    add_source_options(listing)
    listing.set_defaults(func=run_versions)


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every sync command: where the project lives and where versions go."""
    parser.add_argument("--bucket", help="S3 bucket of the project (default pokemon-card-training-us-east-2)")
    parser.add_argument("--prefix", help="project prefix in the bucket (default project/pokemon-card-recognition/)")
    parser.add_argument("--region", help="AWS region of the bucket (default us-east-2)")
    parser.add_argument("--endpoint-url", help="URL of an S3-compatible endpoint, instead of AWS S3")
    parser.add_argument("--data-dir", type=Path, help="folder of the installed versions "
                                                      "(default $POKEDGE_DATA_DIR or ~/.local/share/pokedge)")
    parser.add_argument("--config", type=Path, help="TOML config file with a [sync] table "
                                                   "(default $POKEDGE_CONFIG, /etc/pokedge/sync.toml, "
                                                   "~/.config/pokedge/sync.toml)")


def config_from_args(args: argparse.Namespace) -> SyncConfig:
    names = ("bucket", "prefix", "region", "endpoint_url", "data_dir", "device", "keep", "workers", "retries")
    flags = {name: getattr(args, name, None) for name in names}
    return load_config(flags, config_path=args.config)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _run(args, config)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame) -> None:
    """Turn SIGTERM (systemd stopping the unit) into an exception, so partial downloads save their state."""
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace, config: SyncConfig) -> int:
    if args.rollback:
        previous, target = rollback_version(config)
        print(f"rolled back from {previous} to {target}")
        print("run 'systemctl reload pokedge.service' if the daemon is running; "
              f"'pokedge sync' will not reinstall {previous} until you pass --force")
        return 0

    result = run_sync(config, dry_run=args.dry_run, check=args.check, force=args.force)
    if args.check:
        print(_status_line(result))
        return EXIT_UPDATE_AVAILABLE if result.status == UPDATE_AVAILABLE else 0
    if args.dry_run:
        _print_dry_run(result, config)
        return 0
    _print_summary(result)
    return 0


def _status_line(result: SyncResult) -> str:
    if result.status == UP_TO_DATE:
        return f"up to date: version {result.version_id} is active"
    if result.status == HELD:
        return (f"version {result.version_id} is available but was rolled back from; "
                f"'pokedge sync --force' installs it again")
    return (f"update available: version {result.version_id} "
            f"(active: {result.active_before or 'none'}, {result.plan.total_bytes / MIB:.1f} MiB in total)")


def _print_dry_run(result: SyncResult, config: SyncConfig) -> None:
    plan = result.plan
    print(_status_line(result))
    print(f"device: {result.device}; integrity: {plan.integrity}")
    print(f"CPU model: {plan.onnx.contract.model_id} ({plan.onnx.file})")
    if plan.hef:
        print(f"HEF model: {plan.hef.contract.model_id} ({plan.hef.file})")
    for note in plan.notes:
        print(f"note: {note}")
    if result.status == UP_TO_DATE:
        return

    for action in result.actions:
        detail = {
            "staged": "already staged",
            "link": f"reuse from {action.source.parent.relative_to(config.resolved_data_dir())}" if action.source else "reuse",
            "resume": f"resume, {action.have_bytes} of {action.file.size} bytes present",
            "download": "download",
        }[action.route]
        print(f"  {action.file.path:<60} {action.file.size / MIB:9.2f} MiB  {detail}")
    free = shutil.disk_usage(config.resolved_data_dir()).free
    print(f"would download {result.download_bytes} bytes ({result.download_bytes / MIB:.1f} MiB); "
          f"{free / MIB:.0f} MiB free in {config.resolved_data_dir()}")


def _print_summary(result: SyncResult) -> None:
    if result.status != ACTIVATED:
        print(_status_line(result))
        return
    print(f"activated version {result.version_id} (was {result.active_before or 'none'}): "
          f"downloaded {result.received_bytes / MIB:.1f} MiB, reused {result.linked_bytes / MIB:.1f} MiB")
    if result.pruned:
        print(f"pruned: {', '.join(result.pruned)}")


def run_versions(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    data_dir = config.resolved_data_dir()
    rows = _version_rows(data_dir)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print(f"no versions installed in {data_dir}; run 'pokedge sync'")
        return 0

    print(f"  {'VERSION':<32} {'RELEASE':<22} {'INSTALLED':<21} {'SIZE':>10}  MODELS")
    for row in rows:
        mark = "*" if row["active"] else " "
        size = f"{row['size'] / MIB:.1f} MiB" if row["size"] is not None else "-"
        flags = ""
        if row["incomplete"]:
            flags = " (incomplete)"
        elif row["rolled_back"]:
            flags = " (rolled back)"
        print(f"{mark} {row['version_id']:<32} {str(row['release'] or '-'):<22} {row['created_at'] or '-':<21} "
              f"{size:>10}  {', '.join(row['models'])}{flags}")
    return 0


def _version_rows(data_dir: Path) -> list[dict]:
    active = versions.active_version_id(data_dir)
    rolled_back = set(versions.load_state(data_dir)["rolled_back"])
    rows = []
    for info in versions.installed_versions(data_dir):
        folder = versions.version_path(data_dir, info.version_id)
        rows.append({
            "version_id": info.version_id,
            "active": info.version_id == active,
            "release": info.release,
            "created_at": info.created_at,
            "size": sum(f.size for f in info.files),
            "models": _model_ids(folder, info),
            "integrity": info.integrity,
            "rolled_back": info.version_id in rolled_back,
            "incomplete": False,
        })
    for version_id in versions.incomplete_versions(data_dir):
        rows.append({"version_id": version_id, "active": False, "release": None, "created_at": None, "size": None,
                     "models": [], "integrity": None, "rolled_back": False, "incomplete": True})
    return rows


def _model_ids(folder: Path, info: versions.VersionInfo) -> list[str]:
    from pokedge.contract import load_contract
    from pokedge.errors import ContractError

    ids = []
    for relative in filter(None, [info.onnx_contract, info.hef_contract]):
        try:
            contract = load_contract(folder / relative)
            ids.append(f"{contract.model_id} ({contract.format})")
        except ContractError as exc:
            ids.append(f"unreadable contract: {exc}")
    return ids
