"""Cheap checks that a Hailo device can run a HEF, before opening it.

The probe looks for device nodes (/dev/hailo*), imports `hailo_platform`,
scans for devices, reads the device architecture, and checks it against the
HEF's target from the model contract. A hailo8l HEF runs on Hailo-8L and on
Hailo-8 (HailoRT warns); a hailo8 HEF runs only on Hailo-8. What the probe
cannot see (a device held by another process, a service that is down) shows
up when the backend opens, and is mapped the same way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pokedge.backends.hailo_errors import (
    DRIVER_OPERATION_FAILED,
    HEF_NOT_COMPATIBLE_WITH_DEVICE,
    OUT_OF_PHYSICAL_DEVICES,
    HailoFailure,
    failure_for_code,
    failure_from_exception,
)
from pokedge.contract import ModelContract, load_contract
from pokedge.errors import ContractError

_log = logging.getLogger(__name__)

# Folder holding the device nodes; tests point it at a temporary folder.
DEV_DIR = Path("/dev")

# Device architecture (as HailoRT names it) -> HEF targets it runs.
RUNNABLE_TARGETS = {
    "HAILO8": ("hailo8", "hailo8l"),
    "HAILO8_A0": ("hailo8", "hailo8l"),
    "HAILO8L": ("hailo8l",),
}
HEF_TARGETS = ("hailo8", "hailo8l")


@dataclass
class HailoProbe:
    """Result of a probe; when `usable` is False, `failure` gives the reason and the fix."""

    usable: bool
    summary: str
    failure: HailoFailure | None = None
    hailort_version: str | None = None
    device_nodes: list[str] = field(default_factory=list)
    device_ids: list[str] = field(default_factory=list)
    architecture: str | None = None
    hef_target: str | None = None
    import_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failure"] = asdict(self.failure) if self.failure else None
        return data


def probe_hailo(hef_contract: ModelContract | None = None, *, identify: bool = True) -> HailoProbe:
    """Check device nodes, the HailoRT binding, the device and the HEF target; failures are returned, not raised."""
    probe = HailoProbe(usable=False, summary="")
    probe.device_nodes = device_nodes()

    try:
        import hailo_platform
    except ImportError as exc:
        hailo_platform = None
        import_failure = failure_from_exception(exc)
        probe.import_error = str(exc)
    else:
        probe.hailort_version = str(getattr(hailo_platform, "__version__", "unknown"))

    if not probe.device_nodes:
        return _fail(probe, HailoFailure(
            reason=f"no Hailo device node in {DEV_DIR} (expected {DEV_DIR / 'hailo0'})",
            fix="check that the AI Kit or AI HAT+ is seated ('lspci | grep -i hailo'), install the driver "
            "with 'sudo apt install dkms hailo-all', and reboot",
            code=OUT_OF_PHYSICAL_DEVICES,
            status="HAILO_OUT_OF_PHYSICAL_DEVICES",
        ))
    denied = [node for node in probe.device_nodes if not os.access(node, os.R_OK | os.W_OK)]
    if denied:
        return _fail(probe, HailoFailure(
            reason=f"permission denied on {', '.join(denied)} for user id {os.getuid()}",
            fix="the hailo udev rule gives mode 0666: reinstall hailo-all or add the rule, then "
            "'sudo udevadm trigger'; or run pokedge as a user that can open the node",
            code=DRIVER_OPERATION_FAILED,
            status="HAILO_DRIVER_OPERATION_FAILED",
        ))
    if hailo_platform is None:
        return _fail(probe, import_failure)

    try:
        probe.device_ids = [str(device_id) for device_id in hailo_platform.Device.scan()]
    except Exception as exc:  # Device.scan can leak the raw _pyhailort status class
        return _fail(probe, failure_from_exception(exc))
    if not probe.device_ids:
        return _fail(probe, failure_for_code(OUT_OF_PHYSICAL_DEVICES))

    if identify:
        probe.architecture = read_architecture(hailo_platform, probe.device_ids[0])

    if hef_contract is not None:
        failure = check_hef_target(hef_contract, probe.architecture)
        probe.hef_target = hef_target(hef_contract)
        if failure is not None:
            return _fail(probe, failure)

    probe.usable = True
    probe.summary = (
        f"{probe.architecture or 'Hailo device (architecture not read)'} at {probe.device_ids[0]}, "
        f"HailoRT {probe.hailort_version}"
        + (f", HEF for {probe.hef_target}" if probe.hef_target else "")
    )
    return probe


def device_nodes() -> list[str]:
    """List the Hailo character devices (/dev/hailo0, ...)."""
    try:
        return sorted(str(path) for path in DEV_DIR.glob("hailo*") if not path.is_dir())
    except OSError:
        return []


def read_architecture(hailo_platform: Any, device_id: str) -> str | None:
    """Read the device architecture name (HAILO8L, HAILO8, ...); None when the device cannot be opened for control."""
    device = None
    try:
        device = hailo_platform.Device(device_id)
        architecture = device.control.identify().device_architecture
        return str(getattr(architecture, "name", architecture)).upper()
    except Exception as exc:  # Device(id) is not wrapped and can leak the raw status class
        _log.info("could not read the architecture of Hailo device %s: %s", device_id, exc)
        return None
    finally:
        if device is not None:
            try:
                device.release()
            except Exception as exc:  # closing a control handle; nothing depends on it
                _log.debug("releasing Hailo device %s failed: %s", device_id, exc)


def hef_target(contract: ModelContract) -> str | None:
    """Return the Hailo architecture the HEF was compiled for, from the contract's `target`; None if not a Hailo target."""
    target = (contract.target or "").strip().lower().replace("-", "")
    return target if target in HEF_TARGETS else None


def check_hef_target(contract: ModelContract, architecture: str | None) -> HailoFailure | None:
    """Return the failure when a HEF compiled for the contract's target cannot run on `architecture`."""
    target = hef_target(contract)
    if target is None:
        _log.info("contract %s gives no Hailo target (%r); HailoRT checks the HEF when it loads",
                  contract.source, contract.target)
        return None
    if architecture is None:
        return None

    runnable = RUNNABLE_TARGETS.get(architecture)
    if runnable is None or target not in runnable:
        failure = failure_for_code(HEF_NOT_COMPATIBLE_WITH_DEVICE)
        return HailoFailure(
            reason=f"HEF {contract.model_path.name} is compiled for {target}, which cannot run on this "
            f"{architecture} device",
            fix=failure.fix,
            code=failure.code,
            status=failure.status,
        )
    if architecture.startswith("HAILO8") and architecture != "HAILO8L" and target == "hailo8l":
        _log.info("running a hailo8l HEF on a %s device; a hailo8 build of the model would be faster", architecture)
    return None


def find_hef_contract(model_dir: Path) -> ModelContract | None:
    """Return the first valid HEF contract (`*.contract.json` with format hef) in a folder, or None."""
    if not model_dir.is_dir():
        return None
    for path in sorted(model_dir.glob("*.contract.json")):
        try:
            contract = load_contract(path)
        except ContractError as exc:
            _log.debug("skipping %s: %s", path, exc)
            continue
        if contract.format == "hef":
            return contract
    return None


def _fail(probe: HailoProbe, failure: HailoFailure) -> HailoProbe:
    probe.usable = False
    probe.failure = failure
    probe.summary = failure.reason
    return probe
