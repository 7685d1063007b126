"""`pokedge doctor`: what this machine offers pokedge, and which backend `auto` would pick and why.

It runs anywhere: every check that finds nothing (no HailoRT, no device, no
camera, no /sys) reports that and moves on.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

from pokedge import __version__, paths
from pokedge.backends.hailo_options import add_hailo_arguments, hailo_options_from_args
from pokedge.backends.probe import find_hef_contract, probe_hailo
from pokedge.backends.pcie import hailo_pcie_links
from pokedge.backends.select import explain_auto
from pokedge.contract import ModelContract, load_contract
from pokedge.errors import PokedgeError

_log = logging.getLogger(__name__)

# Roots of the kernel interfaces read here; tests point them at temporary folders.
SYS_PCI_DEVICES = Path("/sys/bus/pci/devices")
DEV_DIR = Path("/dev")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check Python, HailoRT, the Hailo device, camera, model and gallery",
        description="Print what pokedge finds on this machine and which backend --backend auto would pick, "
        "with the reason and the fix.")
    parser.add_argument("--model", type=Path, metavar="CONTRACT", help="ONNX model contract to check")
    parser.add_argument("--hef", type=Path, metavar="CONTRACT", help="HEF model contract to check")
    parser.add_argument("--gallery", type=Path, metavar="DIR", help="gallery folder to check")
    parser.add_argument("--data-dir", type=Path, help="folder of synced versions (default ~/.local/share/pokedge)")
    parser.add_argument("--no-open", action="store_true",
                        help="only probe the Hailo device; do not open it (opening takes it briefly)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_hailo_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = collect(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Gather every check into one dict."""
    report: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "pokedge": __version__,
        "packages": package_versions(),
    }
    models = resolve_models(args)
    report["models"] = models["report"]

    probe = probe_hailo(models["hef"])
    report["hailo"] = probe.to_dict()
    report["pcie"] = pcie_links()
    report["camera"] = camera_info()

    selection = explain_auto(models["onnx"], models["hef"], hailo_options_from_args(args), try_open=not args.no_open)
    report["auto_backend"] = {"backend": selection.backend, "reason": selection.reason, "fix": selection.fix}
    return report


def package_versions() -> dict[str, str | None]:
    """Versions of the packages inference depends on; None when one is missing."""
    from importlib import metadata

    versions = {}
    for name in ("numpy", "onnxruntime", "opencv-python-headless", "faiss-cpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resolve_models(args: argparse.Namespace) -> dict[str, Any]:
    """Find the active model, HEF and gallery, and check each; a missing file is reported, not raised."""
    report: dict[str, Any] = {"active_version": active_version(args.data_dir)}
    onnx: ModelContract | None = None
    hef: ModelContract | None = None
    gallery_dir: Path | None = args.gallery

    try:
        from pokedge.recognition.runtime import resolve_sources

        sources = resolve_sources(args.model, args.gallery, args.data_dir)
        report["source"] = sources.version
        gallery_dir = sources.gallery_dir
        onnx = load_contract(sources.onnx_contract)
        hef_path = args.hef or sources.hef_contract
        hef = load_contract(hef_path) if hef_path else find_hef_contract(onnx.model_path.parent)
    except PokedgeError as exc:
        report["error"] = str(exc)
        if onnx is None and (args.model or paths.DEFAULT_CONTRACT).is_file():
            onnx = _try_contract(args.model or paths.DEFAULT_CONTRACT, report)

    report["onnx"] = _contract_summary(onnx)
    report["hef"] = _contract_summary(hef)
    report["gallery"] = gallery_summary(gallery_dir, onnx, hef)
    return {"report": report, "onnx": onnx, "hef": hef}


def active_version(data_dir: Path | None) -> str | None:
    """The active synced version id, or None when sync is not installed or nothing is active."""
    try:
        from pokedge.sync.versions import resolve_active
    except ImportError:
        return None
    try:
        active = resolve_active(Path(data_dir) if data_dir else paths.data_dir())
    except PokedgeError as exc:
        return f"unreadable: {exc}"
    return getattr(active, "version_id", None) if active is not None else None


def _try_contract(path: Path, report: dict[str, Any]) -> ModelContract | None:
    try:
        return load_contract(path)
    except PokedgeError as exc:
        report["error"] = str(exc)
        return None


def _contract_summary(contract: ModelContract | None) -> dict[str, Any] | None:
    if contract is None:
        return None
    path = contract.model_path
    return {
        "model_id": contract.model_id,
        "contract": str(contract.source),
        "file": str(path),
        "present": path.is_file(),
        "format": contract.format,
        "target": contract.target,
        "hailo_encoding": contract.input.hailo_encoding,
    }


def gallery_summary(gallery_dir: Path | None, onnx: ModelContract | None, hef: ModelContract | None) -> dict | None:
    """Load the gallery and tell which of the two models may search it."""
    if gallery_dir is None:
        return None
    from pokedge.gallery.store import load_gallery
    from pokedge.parity import gallery_allowed

    summary: dict[str, Any] = {"path": str(gallery_dir)}
    try:
        gallery = load_gallery(gallery_dir, mmap=True)
    except PokedgeError as exc:
        summary["error"] = str(exc)
        return summary
    summary.update({"producer": gallery.producer, "rows": len(gallery), "cards": len(gallery.cards),
                    "dim": gallery.dim})

    for label, contract, backend in (("onnx", onnx, "onnx"), ("hailo", hef, "hailo")):
        if contract is None:
            continue
        try:
            gallery_allowed(gallery, _Named(backend, contract), contract.model_path.parent)
            summary[f"usable_with_{label}"] = "yes"
        except PokedgeError as exc:
            summary[f"usable_with_{label}"] = f"no: {exc}"
    return summary


class _Named:
    """The two attributes of a backend that gallery_allowed reads."""

    def __init__(self, name: str, contract: ModelContract):
        self.name = name
        self.contract = contract


def pcie_links() -> list[dict[str, Any]]:
    """Link speed and width of every Hailo PCIe function, read from sysfs."""
    return hailo_pcie_links(SYS_PCI_DEVICES)


def camera_info() -> dict[str, Any]:
    """Cameras libcamera reports through picamera2, and the V4L2 nodes present."""
    info: dict[str, Any] = {"video_nodes": sorted(str(p) for p in DEV_DIR.glob("video*"))}
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        info["picamera2"] = f"not installed ({exc}); on a Pi: 'sudo apt install python3-picamera2'"
        return info
    try:
        cameras = Picamera2.global_camera_info()
    except Exception as exc:  # libcamera errors surface as several types depending on the version
        info["picamera2"] = f"failed: {type(exc).__name__}: {exc}"
        return info
    info["picamera2"] = [{"model": c.get("Model"), "location": c.get("Location"), "id": c.get("Id")}
                         for c in cameras]
    return info


def print_report(report: dict[str, Any]) -> None:
    """Print the report as aligned lines, one check a line."""
    rows: list[tuple[str, str]] = []
    rows.append(("python", f"{report['python']['version']} ({report['python']['executable']})"))
    rows.append(("pokedge", report["pokedge"]))
    rows.append(("packages", ", ".join(f"{k} {v or 'missing'}" for k, v in report["packages"].items())))

    hailo = report["hailo"]
    rows.append(("hailort", hailo["hailort_version"] or f"not importable ({hailo['import_error']})"))
    device = ", ".join(hailo["device_ids"]) or "none found"
    nodes = ", ".join(hailo["device_nodes"]) or "no /dev/hailo* node"
    rows.append(("hailo device", f"{device}; architecture {hailo['architecture'] or 'unknown'}; {nodes}"))
    if hailo["failure"]:
        rows.append(("hailo problem", f"{hailo['failure']['reason']}; fix: {hailo['failure']['fix']}"))
    links = report["pcie"]
    rows.append(("pcie link", "; ".join(
        f"{link['address']} {link['current_link_speed']} x{link['current_link_width']} "
        f"(max {link['max_link_speed']} x{link['max_link_width']})" for link in links) or "no Hailo PCIe function in sysfs"))

    camera = report["camera"]
    cameras = camera["picamera2"]
    if isinstance(cameras, list):
        cameras = ", ".join(f"{c['model']} ({c['location']})" for c in cameras) or "none connected"
    rows.append(("camera", f"picamera2: {cameras}; V4L2 nodes: {len(camera['video_nodes'])}"))

    models = report["models"]
    rows.append(("synced version", models.get("active_version") or "none active"))
    for key, label in (("onnx", "onnx model"), ("hef", "hef model")):
        item = models.get(key)
        if item is None:
            rows.append((label, "none"))
            continue
        extra = f", encoding {item['hailo_encoding']}, target {item['target']}" if key == "hef" else ""
        present = "" if item["present"] else " (FILE MISSING)"
        rows.append((label, f"{item['model_id']} at {item['file']}{present}{extra}"))
    if models.get("error"):
        rows.append(("model problem", models["error"]))
    gallery = models.get("gallery")
    if gallery is None:
        rows.append(("gallery", "none"))
    elif "error" in gallery:
        rows.append(("gallery", f"{gallery['path']}: {gallery['error']}"))
    else:
        rows.append(("gallery", f"{gallery['path']}: producer {gallery['producer']}, {gallery['rows']} rows, "
                                f"{gallery['cards']} cards, dim {gallery['dim']}"))
        for key in ("usable_with_onnx", "usable_with_hailo"):
            if key in gallery:
                rows.append((key.replace("_", " "), gallery[key]))

    auto = report["auto_backend"]
    rows.append(("auto backend", f"{auto['backend']}: {auto['reason']}"))
    if auto["fix"] and auto["backend"] != "hailo":
        rows.append(("to use hailo", auto["fix"]))

    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
