"""The process's one HailoRT VDevice, shared by every Hailo backend through leases.

HailoRT lets a process open a physical device once (a second VDevice with
the default group id fails with HAILO_OUT_OF_PHYSICAL_DEVICES), and a VDevice
may only be used in the process that created it. So pokedge keeps one VDevice
per process, counts its users, and releases it when the last lease closes. A
lease can re-create the VDevice after a device error; other leases notice the
new generation and re-configure their models.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from pokedge.backends.hailo_errors import HailoUnavailable, failure_from_exception
from pokedge.backends.hailo_options import HailoOptions

_log = logging.getLogger(__name__)

_lock = threading.RLock()
_vdevice: Any = None
_owner_pid: int | None = None
_generation = 0
_users = 0
_options: HailoOptions | None = None
# VDevices inherited through fork(): never released here (the parent owns
# them), only kept referenced so garbage collection does not release them.
_inherited: list[Any] = []


def import_hailo_platform():
    """Import the HailoRT binding; raise HailoUnavailable with the fix when it is missing or mismatched."""
    try:
        import hailo_platform
    except ImportError as exc:
        raise HailoUnavailable(failure_from_exception(exc)) from exc
    return hailo_platform


class VDeviceLease:
    """One user's claim on the shared VDevice."""

    def __init__(self, options: HailoOptions):
        self._options = options
        self._closed = False
        self.generation = -1
        self.vdevice = self.refresh()

    def refresh(self) -> Any:
        """Return the current VDevice, creating it if no lease holds one."""
        global _vdevice, _owner_pid, _generation, _options
        with _lock:
            _forget_if_forked()
            if _vdevice is None:
                _vdevice = _create_vdevice(self._options)
                _owner_pid = os.getpid()
                _generation += 1
                _options = self._options
            elif _options is not None and _options != self._options:
                _log.debug("reusing this process's VDevice opened with %s; requested %s", _options, self._options)
            self.vdevice = _vdevice
            self.generation = _generation
            return _vdevice

    def recreate(self) -> Any:
        """Release the VDevice this lease used and open a new one; raise HailoUnavailable on failure."""
        global _vdevice
        with _lock:
            _forget_if_forked()
            if _vdevice is not None and self.generation == _generation:
                _log.warning("re-creating the Hailo VDevice (generation %d)", _generation)
                _release(_vdevice)
                _vdevice = None
            return self.refresh()

    @property
    def stale(self) -> bool:
        """Whether another lease re-created the VDevice since this one last looked."""
        with _lock:
            return self.generation != _generation or _vdevice is None

    def close(self) -> None:
        global _vdevice, _users
        with _lock:
            if self._closed:
                return
            self._closed = True
            _users -= 1
            if _users <= 0:
                _users = 0
                if _vdevice is not None and _owner_pid == os.getpid():
                    _release(_vdevice)
                _vdevice = None


def acquire(options: HailoOptions) -> VDeviceLease:
    """Lease the process's VDevice, opening it on first use."""
    global _users
    with _lock:
        lease = VDeviceLease(options)
        _users += 1
        return lease


def users() -> int:
    """Number of open leases in this process."""
    with _lock:
        _forget_if_forked()
        return _users


def _forget_if_forked() -> None:
    global _vdevice, _owner_pid, _users
    if _vdevice is not None and _owner_pid != os.getpid():
        _log.info("process %d inherited a Hailo VDevice from process %s; opening its own", os.getpid(), _owner_pid)
        _inherited.append(_vdevice)
        _vdevice = None
        _owner_pid = None
        _users = 0


def _create_vdevice(options: HailoOptions) -> Any:
    hailo_platform = import_hailo_platform()
    VDevice = hailo_platform.VDevice

    try:
        params = VDevice.create_params()
        params.scheduling_algorithm = hailo_platform.HailoSchedulingAlgorithm.ROUND_ROBIN
        group_id = options.effective_group_id
        if group_id:
            params.group_id = group_id
        if options.multi_process_service:
            params.multi_process_service = True
        if options.device_ids:
            # The 4.18+ binding passes both params and device_ids to the extension.
            vdevice = VDevice(params, device_ids=list(options.device_ids))
        else:
            vdevice = VDevice(params)
    except Exception as exc:  # HailoRT raises HailoRTException subclasses or its raw status class
        raise HailoUnavailable(failure_from_exception(exc)) from exc

    _log.info("opened Hailo VDevice (HailoRT %s, group %s, multi-process service %s)",
              getattr(hailo_platform, "__version__", "unknown"), options.effective_group_id or "default",
              "on" if options.multi_process_service else "off")
    return vdevice


def _release(vdevice: Any) -> None:
    try:
        vdevice.release()
    except Exception as exc:  # a failing release must not hide the error that led here
        _log.warning("releasing the Hailo VDevice failed: %s", exc)
