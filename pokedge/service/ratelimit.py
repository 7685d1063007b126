"""Logging a repeating error once per interval, with the count of repeats it held back."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """Logs the first occurrence of each key at once, later ones at most once per `interval` seconds.

    A held-back message is counted; the next one that gets through says how
    many were suppressed since the last one.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0):
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args) -> bool:
        """Log `message % args` unless `key` was logged less than `interval` ago; return whether it was logged."""
        clock = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and clock - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = clock
            suppressed = self._suppressed.pop(key, 0)

        if suppressed:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, suppressed, self.interval)
        self.logger.log(level, message, *args)
        return True

    def error(self, key: str, message: str, *args) -> bool:
        return self.log(logging.ERROR, key, message, *args)

    def warning(self, key: str, message: str, *args) -> bool:
        return self.log(logging.WARNING, key, message, *args)
