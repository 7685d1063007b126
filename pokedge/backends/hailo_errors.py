"""HailoRT failures mapped to reasons a user can act on.

HailoRT's Python binding raises `HailoRTException` subclasses, chained from a
raw `_pyhailort.HailoRTStatusException` whose first argument is the numeric
status. Which subclass a status gets depends on the version (code 36 is
`HailoRTPCIeDriverException` up to 4.19 and `HailoRTDriverOperationFailedException`
from 4.20; `HailoRTHEFNotCompatibleWithDevice` exists from 4.21), so this
module reads the numeric status and never the class. Status numbers are those
of `hailo/hailort.h`, stable from 4.17 to 5.x.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pokedge.errors import BackendError

SERVICE_FIX = (
    "run 'sudo systemctl enable --now hailort.service' and set hailo multi_process_service "
    "in every process that shares the device"
)

# Status numbers from hailo/hailort.h.
TIMEOUT = 4
INVALID_OPERATION = 6
INVALID_FRAME = 25
INVALID_HEF = 26
DRIVER_OPERATION_FAILED = 36
NOT_FOUND = 61
COMMUNICATION_CLOSED = 62
STREAM_ABORT = 63
DRIVER_NOT_INSTALLED = 64
DEVICE_IN_USE = 73
OUT_OF_PHYSICAL_DEVICES = 74
INVALID_DRIVER_VERSION = 76
RPC_FAILED = 77
DRIVER_TIMEOUT = 87
HEF_NOT_COMPATIBLE_WITH_DEVICE = 93

# Failures worth retrying after re-creating the VDevice: the device or the
# service stalled or dropped a stream, but the setup itself is sound.
TRANSIENT_CODES = frozenset({TIMEOUT, INVALID_FRAME, COMMUNICATION_CLOSED, STREAM_ABORT, RPC_FAILED, DRIVER_TIMEOUT})

_IN_USE_FIX = (
    "check that the board is seated and the driver loaded ('ls /dev/hailo*', 'lspci | grep -i hailo'); "
    "if another process holds the device ('sudo fuser -v /dev/hailo0'), stop it, or " + SERVICE_FIX
)

# code -> (status name, reason, fix)
_REASONS: dict[int, tuple[str, str, str]] = {
    TIMEOUT: (
        "HAILO_TIMEOUT",
        "inference on the Hailo device timed out",
        "check 'dmesg | grep hailo' and the board temperature; raise hailo timeout_ms if other models share the device",
    ),
    INVALID_OPERATION: (
        "HAILO_INVALID_OPERATION",
        "HailoRT rejected the operation (often a buffer of the wrong size or layout)",
        "check that the HEF's input and output shapes match the model contract; hailort.log has the details",
    ),
    INVALID_FRAME: (
        "HAILO_INVALID_FRAME",
        "the Hailo device returned an invalid frame",
        "retry; if it repeats, check 'dmesg | grep hailo' and the PCIe link",
    ),
    INVALID_HEF: (
        "HAILO_INVALID_HEF",
        "HailoRT rejected the HEF: the file is damaged, or (HailoRT before 4.21) it was compiled for "
        "another Hailo architecture",
        "recompile the model for hailo8l with a Dataflow Compiler that matches this HailoRT "
        "('hailortcli parse-hef FILE' shows the target), or copy the HEF again",
    ),
    DRIVER_OPERATION_FAILED: (
        "HAILO_DRIVER_OPERATION_FAILED",
        "the Hailo driver refused the operation, usually permission denied on /dev/hailo0",
        "check 'ls -l /dev/hailo0' (the hailo udev rule gives mode 0666); run as a user with access and "
        "read 'dmesg | grep hailo' for driver errors",
    ),
    NOT_FOUND: (
        "HAILO_NOT_FOUND",
        "HailoRT could not find a requested item (an input, output or network name)",
        "check the input and output names in the HEF contract against 'hailortcli parse-hef FILE'",
    ),
    COMMUNICATION_CLOSED: (
        "HAILO_COMMUNICATION_CLOSED",
        "the connection to the Hailo device closed",
        "retry; if it repeats, check 'dmesg | grep hailo' and the hailort service",
    ),
    STREAM_ABORT: (
        "HAILO_STREAM_ABORT",
        "a Hailo inference stream was aborted",
        "retry; if it repeats, check 'dmesg | grep hailo' and the PCIe link",
    ),
    DRIVER_NOT_INSTALLED: (
        "HAILO_DRIVER_NOT_INSTALLED",
        "the hailo_pci kernel driver is not loaded",
        "install it with 'sudo apt install dkms hailo-all' and reboot; 'lsmod | grep hailo' should list hailo_pci",
    ),
    DEVICE_IN_USE: (
        "HAILO_DEVICE_IN_USE",
        "the requested Hailo device is in use by another process",
        _IN_USE_FIX,
    ),
    OUT_OF_PHYSICAL_DEVICES: (
        "HAILO_OUT_OF_PHYSICAL_DEVICES",
        "no free Hailo device: none is present, or another process holds it",
        _IN_USE_FIX,
    ),
    INVALID_DRIVER_VERSION: (
        "HAILO_INVALID_DRIVER_VERSION",
        "the HailoRT library and the hailo_pci driver have different versions",
        "install matching versions ('sudo apt install --reinstall hailo-all', or matching hailort and "
        "hailo-dkms packages) and reboot",
    ),
    RPC_FAILED: (
        "HAILO_RPC_FAILED",
        "the HailoRT multi-process service did not answer",
        "start it with 'sudo systemctl enable --now hailort.service' (socket /tmp/hailort_uds.sock, or "
        "HAILORT_SERVICE_ADDRESS), or turn hailo multi_process_service off",
    ),
    DRIVER_TIMEOUT: (
        "HAILO_DRIVER_TIMEOUT",
        "the Hailo driver timed out",
        "retry; if it repeats, check 'dmesg | grep hailo' and reboot",
    ),
    HEF_NOT_COMPATIBLE_WITH_DEVICE: (
        "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE",
        "the HEF was compiled for another Hailo architecture than this device",
        "recompile the model with --hw-arch hailo8l: a hailo8l HEF runs on Hailo-8L and Hailo-8, "
        "a hailo8 HEF only on Hailo-8",
    ),
}

# Exception class name -> status, for exceptions whose chain lost the raw status.
_CLASS_CODES = {
    "HailoRTTimeout": TIMEOUT,
    "HailoRTInvalidOperationException": INVALID_OPERATION,
    "HailoRTInvalidFrameException": INVALID_FRAME,
    "HailoRTInvalidHEFException": INVALID_HEF,
    "HailoRTPCIeDriverException": DRIVER_OPERATION_FAILED,
    "HailoRTDriverOperationFailedException": DRIVER_OPERATION_FAILED,
    "HailoRTNotFoundException": NOT_FOUND,
    "HailoCommunicationClosedException": COMMUNICATION_CLOSED,
    "HailoRTStreamAborted": STREAM_ABORT,
    "HailoRTHEFNotCompatibleWithDevice": HEF_NOT_COMPATIBLE_WITH_DEVICE,
}

_STATUS_IN_MESSAGE = re.compile(r"error:\s*(\d+)")


@dataclass(frozen=True)
class HailoFailure:
    """A HailoRT failure with its status, the reason in plain words and the fix."""

    reason: str
    fix: str
    code: int | None = None
    status: str | None = None
    transient: bool = False

    def message(self) -> str:
        status = f" ({self.status}, status {self.code})" if self.code is not None else ""
        return f"{self.reason}{status}; fix: {self.fix}"


class HailoUnavailable(BackendError):
    """The Hailo backend cannot be opened; `failure` gives the reason and the fix."""

    def __init__(self, failure: HailoFailure):
        super().__init__(f"Hailo backend unavailable: {failure.message()}")
        self.failure = failure


class HailoRunError(BackendError):
    """Inference on the Hailo device failed and retries did not help."""

    def __init__(self, failure: HailoFailure, attempts: int):
        super().__init__(f"Hailo inference failed after {attempts} attempt(s): {failure.message()}")
        self.failure = failure
        self.attempts = attempts


def status_code(exc: BaseException) -> int | None:
    """Find the numeric HailoRT status behind an exception, following its cause chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "HailoRTStatusException" and current.args:
            match = re.match(r"\s*(\d+)", str(current.args[0]))
            if match:
                return int(match.group(1))
        match = _STATUS_IN_MESSAGE.search(str(current))
        if match:
            return int(match.group(1))
        code = _CLASS_CODES.get(type(current).__name__)
        if code is not None:
            return code
        current = current.__cause__ or current.__context__
    return None


def failure_for_code(code: int) -> HailoFailure:
    """Describe a numeric HailoRT status."""
    known = _REASONS.get(code)
    if known is None:
        return HailoFailure(
            reason=f"HailoRT failed with status {code}",
            fix="read hailort.log (its folder is set by HAILORT_LOGGER_PATH) and 'dmesg | grep hailo'",
            code=code,
            status=None,
            transient=False,
        )
    status, reason, fix = known
    return HailoFailure(reason=reason, fix=fix, code=code, status=status, transient=code in TRANSIENT_CODES)


def failure_from_exception(exc: BaseException) -> HailoFailure:
    """Describe an exception raised by `hailo_platform` or by importing it."""
    if isinstance(exc, ImportError):
        return failure_from_import_error(exc)
    if isinstance(exc, HailoUnavailable):
        return exc.failure

    code = status_code(exc)
    if code is not None:
        return failure_for_code(code)

    text = str(exc)
    if "device not found" in text.lower():
        return HailoFailure(
            reason="no Hailo device found",
            fix=_IN_USE_FIX,
            code=None,
        )
    if "process" in text.lower() and "created" in text.lower():
        return HailoFailure(
            reason=f"a HailoRT object was used from another process than the one that created it ({text})",
            fix="open the Hailo backend in the process that runs inference, after any fork",
        )
    return HailoFailure(
        reason=f"HailoRT failed: {type(exc).__name__}: {text}",
        fix="read hailort.log (its folder is set by HAILORT_LOGGER_PATH) and 'dmesg | grep hailo'",
    )


def failure_from_import_error(exc: ImportError) -> HailoFailure:
    """Describe a failed `import hailo_platform`."""
    text = str(exc)
    if "does not match" in text or "version" in text.lower():
        return HailoFailure(
            reason=f"the HailoRT Python binding does not match the installed HailoRT library ({text})",
            fix="install the binding of the same version as the library: 'sudo apt install --reinstall "
            "hailo-all python3-hailort', or the matching hailort wheel",
        )
    return HailoFailure(
        reason=f"the HailoRT Python package hailo_platform is not importable ({text})",
        fix="install it with 'sudo apt install hailo-all' (python3-hailort); in a venv, create it with "
        "--system-site-packages so the system package is visible",
    )
