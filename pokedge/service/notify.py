"""The systemd notification protocol (sd_notify), spoken over the NOTIFY_SOCKET datagram socket.

Written with the socket module so the service needs no systemd bindings.
systemd sets NOTIFY_SOCKET for Type=notify units: an absolute path, or an
abstract socket name starting with "@". Each message is one datagram of
newline-separated VAR=value lines (sd_notify(3)). Outside systemd the
variable is unset and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

_log = logging.getLogger(__name__)


class Notifier:
    """Sends READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and STOPPING=1 to the service manager."""

    def __init__(self, address: str | None = None):
        self.address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._socket: socket.socket | None = None
        self._failed = False
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send one datagram of `lines`; return whether it was sent. Failures are logged once, never raised."""
        if not self.address:
            return False
        message = "\n".join(lines).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, _socket_address(self.address))
        except (OSError, ValueError) as exc:
            if not self._failed:
                _log.error("sd_notify to %s failed (%s); systemd will not see readiness or watchdog pings",
                           self.address, exc)
            self._failed = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status_line(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status_line(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        # systemd 253+ requires MONOTONIC_USEC with RELOADING=1 for Type=notify-reload; older ones ignore it.
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status_line(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start or stop time (EXTEND_TIMEOUT_USEC), for a slow model load."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Return the watchdog timeout in seconds from WATCHDOG_USEC, or None when the watchdog is off.

    WATCHDOG_PID, when set, must be this process (sd_watchdog_enabled(3)).
    """
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        _log.warning("WATCHDOG_USEC=%r is not a number of microseconds; watchdog pings disabled", usec)
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """Sends WATCHDOG=1 at most every quarter of the watchdog timeout, so a hung caller misses it."""

    def __init__(self, notifier: Notifier, timeout: float | None):
        self.notifier = notifier
        self.timeout = timeout
        self.interval = timeout / 4 if timeout else None
        self._last = 0.0
        self.pings = 0

    def ping(self) -> None:
        if self.interval is None:
            return
        clock = time.monotonic()
        if clock - self._last < self.interval:
            return
        self._last = clock
        if self.notifier.watchdog():
            self.pings += 1


def _status_line(status: str | None) -> list[str]:
    if not status:
        return []
    return ["STATUS=" + " ".join(status.splitlines())]


def _socket_address(address: str) -> str | bytes:
    if address.startswith("@"):
        return b"\0" + address[1:].encode("utf-8")
    if address.startswith("/"):
        return address
    raise ValueError(f"NOTIFY_SOCKET={address!r} is neither an absolute path nor an abstract socket (@name); "
                     f"vsock addresses are not supported")
