"""Choosing the backend: `auto`, `hailo` or `onnx`.

`onnx` opens ONNX Runtime. `hailo` opens the HEF on the Hailo device or
raises BackendError with the reason and the fix. `auto` probes for a usable
device and opens the HEF; when that fails for any reason it logs one warning
with the reason and the fix and opens ONNX Runtime instead. An `auto` Hailo
backend is wrapped in FallbackBackend, so a device that fails mid-run hands
the rest of the run to ONNX Runtime.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from pokedge.backends.base import Backend
from pokedge.backends.hailo_errors import HailoFailure, HailoUnavailable
from pokedge.backends.hailo_options import HailoOptions, hailo_options_from_dict
from pokedge.contract import ModelContract
from pokedge.errors import BackendError

_log = logging.getLogger(__name__)

CHOICES = ("auto", "hailo", "onnx")

# Reasons already warned about in this process: a daemon that re-opens its
# backend logs each reason once at WARNING, later at DEBUG.
_warned: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class Selection:
    """The backend `auto` picks, with the reason and, when Hailo is not used, the fix."""

    backend: str
    reason: str
    fix: str | None = None


def open_backend(choice: str, onnx_contract: ModelContract, hef_contract: ModelContract | None = None,
                 *, threads: int | None = None, hailo_options: dict | HailoOptions | None = None) -> Backend:
    """Open the backend named by `choice`; `auto` prefers a usable Hailo device and falls back to ONNX."""
    if choice not in CHOICES:
        raise BackendError(f"unknown backend {choice!r}; choose one of {', '.join(CHOICES)}")
    options = hailo_options_from_dict(hailo_options)

    if choice == "onnx":
        return _open_onnx(onnx_contract, threads)

    if choice == "hailo":
        if hef_contract is None:
            raise BackendError(
                "--backend hailo needs a HEF model contract (format hef) beside the ONNX model; "
                "add one or use --backend onnx"
            )
        try:
            return open_hailo(hef_contract, options)
        except HailoUnavailable as exc:
            raise BackendError(f"--backend hailo: {exc.failure.message()}") from exc

    backend, _ = _open_auto(onnx_contract, hef_contract, options, threads)
    return backend


def open_hailo(hef_contract: ModelContract, options: HailoOptions) -> Backend:
    """Probe the device, then open the Hailo backend; raise HailoUnavailable with the reason and fix."""
    from pokedge.backends.hailo import HailoBackend
    from pokedge.backends.probe import probe_hailo

    probe = probe_hailo(hef_contract)
    if not probe.usable:
        raise HailoUnavailable(probe.failure)
    return HailoBackend(hef_contract, options)


def explain_auto(onnx_contract: ModelContract | None, hef_contract: ModelContract | None,
                 hailo_options: dict | HailoOptions | None = None, *, try_open: bool = True) -> Selection:
    """Tell which backend `auto` would pick and why, opening and closing the Hailo backend if `try_open`."""
    options = hailo_options_from_dict(hailo_options)
    if hef_contract is None:
        return Selection("onnx", "no HEF model contract is configured, so there is nothing to run on a Hailo device",
                         "add a HEF and its contract (format hef) beside the ONNX model")
    if not try_open:
        from pokedge.backends.probe import probe_hailo

        probe = probe_hailo(hef_contract)
        if not probe.usable:
            return Selection("onnx", probe.failure.reason, probe.failure.fix)
        return Selection("hailo", f"{probe.summary} (probe only; the device was not opened)")

    try:
        backend = open_hailo(hef_contract, options)
    except HailoUnavailable as exc:
        return Selection("onnx", exc.failure.reason, exc.failure.fix)
    except BackendError as exc:
        return Selection("onnx", str(exc), "fix the HEF contract, or use --backend onnx")
    try:
        reason = f"HEF {hef_contract.model_path.name} opened on the Hailo device (HailoRT {backend.hailort_version})"
    finally:
        backend.close()
    return Selection("hailo", reason)


def _open_auto(onnx_contract: ModelContract, hef_contract: ModelContract | None, options: HailoOptions,
               threads: int | None) -> tuple[Backend, Selection]:
    from pokedge.backends.fallback import FallbackBackend

    if hef_contract is None:
        _log.info("backend auto: no HEF model contract configured; using ONNX Runtime")
        return _open_onnx(onnx_contract, threads), Selection("onnx", "no HEF model contract configured")

    try:
        hailo = open_hailo(hef_contract, options)
    except HailoUnavailable as exc:
        _warn_once(exc.failure)
        return _open_onnx(onnx_contract, threads), Selection("onnx", exc.failure.reason, exc.failure.fix)
    except BackendError as exc:
        _warn_once(HailoFailure(reason=str(exc), fix="fix the HEF contract, or use --backend onnx"))
        return _open_onnx(onnx_contract, threads), Selection("onnx", str(exc))

    _log.info("backend auto: using the Hailo device for %s", hef_contract.model_id)
    backend = FallbackBackend(hailo, lambda: _open_onnx(onnx_contract, threads))
    return backend, Selection("hailo", f"HEF {hef_contract.model_path.name} opened on the Hailo device")


def _open_onnx(contract: ModelContract, threads: int | None) -> Backend:
    from pokedge.backends.onnx import OnnxBackend

    return OnnxBackend(contract, threads=threads)


def _warn_once(failure: HailoFailure) -> None:
    key = f"{failure.code}:{failure.reason}"
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    if first:
        _log.warning("Hailo backend not used, running on ONNX Runtime (CPU): %s", failure.message())
    else:
        _log.debug("Hailo backend not used again: %s", failure.reason)
