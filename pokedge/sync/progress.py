"""Download progress: a redrawn bar on a terminal, plain log lines elsewhere (systemd, pipes)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, TextIO

_log = logging.getLogger(__name__)

MIB = 1 << 20


class ByteProgress:
    """Counts downloaded bytes of a sync from several worker threads and reports them.

    `on_bytes`, when given, is called with the running total after each
    update; the command line passes None, tests use it to act mid-download.
    """

    def __init__(self, total: int, stream: TextIO | None = None, log_every_s: float = 10.0,
                 on_bytes: Callable[[int], None] | None = None):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every_s = log_every_s
        self.on_bytes = on_bytes
        self._label = ""
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_report = 0.0

    def start_file(self, label: str) -> None:
        with self._lock:
            self._label = label
        _log.info("downloading %s", label)

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            done = self.done
            now = time.monotonic()
            due = now - self._last_report >= (0.2 if self.tty else self.log_every_s)
            if due:
                self._last_report = now
        if due:
            self._report(done, now)
        if self.on_bytes is not None:
            self.on_bytes(done)

    def finish(self) -> None:
        self._report(self.done, time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _report(self, done: int, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        share = done / self.total if self.total else 1.0
        if self.tty:
            width = 30
            filled = int(width * min(share, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {share:4.0%} {done / MIB:7.1f}/{self.total / MIB:.1f} MiB "
                              f"{rate / MIB:5.1f} MiB/s {self._label[-40:]:<40}")
            self.stream.flush()
        else:
            _log.info("downloaded %.1f of %.1f MiB (%.0f%%, %.1f MiB/s)", done / MIB, self.total / MIB,
                      100 * share, rate / MIB)
