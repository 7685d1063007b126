"""Which Hailo chip, if any, this device has, and which HEF targets it can run."""

from __future__ import annotations

import glob
import logging
import re
import shutil
import subprocess

_log = logging.getLogger(__name__)

# NOTE: HEFs compiled for the Hailo-8L are reported to run on the Hailo-8, not the reverse;
# this is taken from vendor forum reports and not verified on hardware here.
_RUNS_ON = {
    "hailo8l": {"hailo8l", "hailo8"},
    "hailo8": {"hailo8"},
}
_ARCHITECTURE = re.compile(r"Device Architecture:\s*(HAILO8L|HAILO8)\b", re.IGNORECASE)


def detect_device(setting: str = "auto") -> str:
    """Return "cpu", "hailo8" or "hailo8l"; `setting` other than "auto" is returned as is."""
    if setting != "auto":
        return setting
    if not glob.glob("/dev/hailo[0-9]*"):
        return "cpu"

    architecture = _identify_with_cli()
    if architecture is None:
        _log.warning("found a Hailo device node but could not identify the chip (hailortcli missing or failed); "
                     "syncing the CPU model only. Set device = \"hailo8l\" or \"hailo8\" in the [sync] config "
                     "to choose the HEF")
        return "cpu"
    _log.info("detected a %s", architecture)
    return architecture


def hef_runs_on(target: str, device: str) -> bool:
    """Whether a HEF compiled for `target` can run on `device`."""
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
