"""A progress line on a terminal, plain log lines elsewhere (systemd, CI, pipes)."""

from __future__ import annotations

import logging
import sys
import time

_log = logging.getLogger(__name__)


class Progress:
    """Reports `done` of `total` items; redraws one line on a TTY, logs every `log_every_s` otherwise."""

    def __init__(self, label: str, stream=None, log_every_s: float = 10.0):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every_s = log_every_s
        self._started = time.monotonic()
        self._last_log = 0.0

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} ({rate:.1f}/s)")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
        elif done >= total or elapsed - self._last_log >= self.log_every_s:
            self._last_log = elapsed
            _log.info("%s: %d/%d (%.1f/s)", self.label, done, total, rate)
