"""Hailo chip detection, and the compatibility of HEF targets with chips."""

from __future__ import annotations

import glob
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

from pokedge.sync.files import write_json

_log = logging.getLogger(__name__)

# NOTE: HEFs compiled for the Hailo-8L are reported to run on the Hailo-8, but not the reverse.
# This comes from vendor forum reports and is not verified on hardware here.
_RUNS_ON = {
    "hailo8l": {"hailo8l", "hailo8"},
    "hailo8": {"hailo8"},
}
DEVICE_FILE = "device.json"
_ARCHITECTURE = re.compile(r"Device Architecture:\s*(HAILO8L|HAILO8)\b", re.IGNORECASE)


def detect_device(setting: str = "auto", data_dir: Path | None = None) -> str:
    """Return "cpu", "hailo8" or "hailo8l"; `setting` other than "auto" is returned as is.

    A chip identified once is remembered in `<data_dir>/device.json`, because
    identification fails while the daemon has the device open, and a device that
    forgot its chip would sync a CPU-only version and back again.
    """
    if setting != "auto":
        return setting
    if not glob.glob("/dev/hailo[0-9]*"):
        return "cpu"

    cache = Path(data_dir) / DEVICE_FILE if data_dir else None
    architecture = _identify_with_cli()
    if architecture is not None:
        _log.info("detected a %s", architecture)
        if cache is not None:
            _remember(cache, architecture)
        return architecture

    remembered = _recall(cache) if cache is not None else None
    if remembered is not None:
        _log.info("could not identify the Hailo chip now (busy or hailortcli missing); using the %s identified "
                  "earlier", remembered)
        return remembered
    _log.warning("found a Hailo device node but could not identify the chip (hailortcli missing or failed); "
                 "syncing the CPU model only. Set device = \"hailo8l\" or \"hailo8\" in the [sync] config "
                 "to choose the HEF")
    return "cpu"


def _remember(cache: Path, architecture: str) -> None:
    try:
        write_json(cache, {"architecture": architecture})
    except OSError as exc:
        _log.warning("could not record the Hailo chip in %s: %s", cache, exc)


def _recall(cache: Path) -> str | None:
    try:
        architecture = json.loads(cache.read_text()).get("architecture")
    except (OSError, ValueError, AttributeError):
        return None
    return architecture if architecture in _RUNS_ON else None


def hef_runs_on(target: str, device: str) -> bool:
    """Return whether a HEF compiled for `target` can run on `device`."""
    return device in _RUNS_ON.get(target.lower(), set())


def _identify_with_cli() -> str | None:
    cli = shutil.which("hailortcli")
    if cli is None:
        return None
    try:
        result = subprocess.run([cli, "fw-control", "identify"], capture_output=True, text=True, timeout=15,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log.warning("hailortcli fw-control identify failed: %s", exc)
        return None
    match = _ARCHITECTURE.search(result.stdout)
    return match.group(1).lower() if match else None
