"""Keeping a frame source alive: reopen with backoff on a stall or error, skip and count corrupt frames."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pokedge.capture.base import (CaptureError, CaptureTimeout, CorruptFrame, EndOfStream, Frame, FrameSource,
                                  SourceHealth, SourceUnusable, now)
from pokedge.service.ratelimit import RateLimitedLog

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays between reopen attempts: the first is immediate, then `initial` doubling up to `maximum` seconds.

    The maximum bounds how long frames stay away after the camera is back.
    """

    initial: float = 0.5
    maximum: float = 2.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reopen attempt `attempt` (0-based)."""
        if attempt <= 0:
            return 0.0
        return min(self.initial * self.factor ** (attempt - 1), self.maximum)


class SupervisedSource:
    """Wraps a FrameSource so `read` never raises for a device fault.

    `read(timeout)` returns a Frame, or None when no frame is available this
    time (the source is down, reopening, stalled, or the frame was corrupt).
    It raises EndOfStream once a file or folder source has ended. The source
    is reopened after `stall_reads` timeouts in a row or after any other
    capture error, with `backoff` between failed attempts. `open` and `read`
    raise SourceUnusable when the source cannot work until the user acts
    (picamera2 not installed) instead of retrying it.
    Call `read`, `open` and `close` from one thread (the frame loop); `health`
    may be called from any thread.
    """

    def __init__(self, source: FrameSource, backoff: Backoff | None = None, stall_reads: int = 2):
        self.source = source
        self.name = source.name
        self.backoff = backoff or Backoff()
        self.stall_reads = stall_reads
        self._lock = threading.Lock()
        self._state = "closed"
        self._detail = ""
        self._is_open = False
        self._attempt = 0
        self._retry_at = 0.0
        self._timeouts_in_row = 0
        self._down_since: float | None = None
        self.opens = 0
        self.reopens = 0
        self.failed_opens = 0
        self.timeouts = 0
        self.corrupt_frames = 0
        self.errors = 0
        self.frames = 0
        self.last_frame_at: float | None = None
        self.last_error: str | None = None
        self.last_recovery_s: float | None = None
        self._corrupt_log = RateLimitedLog(_log, 60.0)

    @property
    def state(self) -> str:
        return self._state

    def open(self) -> bool:
        """Try to open the source now; return whether it is up (on failure, reads keep retrying)."""
        return self._try_open()

    def read(self, timeout: float) -> Frame | None:
        if self._state == "ended":
            raise EndOfStream(f"{self.name} has ended")
        if not self._is_open and not self._wait_and_reopen(timeout):
            return None

        try:
            frame = self.source.read(timeout)
        except CaptureTimeout as exc:
            return self._on_timeout(exc)
        except CorruptFrame as exc:
            self.corrupt_frames += 1
            self._corrupt_log.warning("corrupt", "%s: corrupt frame skipped (%d so far): %s", self.name,
                                      self.corrupt_frames, exc)
            return None
        except EndOfStream:
            self._set_state("ended", "the file or folder has no more frames")
            raise
        except CaptureError as exc:
            self._restart(str(exc))
            return None
        except Exception as exc:  # a driver raising something unexpected must not end the frame loop
            _log.exception("%s: unexpected error while reading a frame", self.name)
            self._restart(f"{type(exc).__name__}: {exc}")
            return None

        self._on_frame(frame)
        return frame

    def _on_frame(self, frame: Frame) -> None:
        self._timeouts_in_row = 0
        self.frames += 1
        self.last_frame_at = frame.timestamp
        if self._down_since is not None:
            self.last_recovery_s = frame.timestamp - self._down_since
            _log.warning("%s: frames flowing again after %.1f s down", self.name, self.last_recovery_s)
            self._down_since = None
        if self._state != "ok" or self._detail:
            self._set_state("ok", "")

    def _on_timeout(self, exc: CaptureTimeout) -> None:
        self.timeouts += 1
        self._timeouts_in_row += 1
        if self._timeouts_in_row >= self.stall_reads:
            self._restart(f"stalled: {self._timeouts_in_row} reads in a row timed out ({exc})")
        else:
            _log.info("%s: %s", self.name, exc)
        return None

    def _wait_and_reopen(self, timeout: float) -> bool:
        """Sleep until the next attempt is due (at most `timeout`), then try to open; return whether it is up."""
        wait = self._retry_at - now()
        if wait > timeout:
            time.sleep(timeout)
            return False
        if wait > 0:
            time.sleep(wait)
        return self._try_open()

    def _try_open(self) -> bool:
        try:
            self.source.open()
        except SourceUnusable as exc:
            self._on_unusable(exc)
            raise
        except Exception as exc:  # SourceUnavailable normally; any driver error counts as a failed attempt
            self.failed_opens += 1
            self._attempt += 1
            self._close_quietly()
            delay = self.backoff.delay(self._attempt)
            self._retry_at = now() + delay
            self.last_error = str(exc)
            if self._down_since is None:
                self._down_since = now()
            self._set_state("degraded", f"cannot open: {exc}")
            log = _log.error if self._attempt == 1 or self._attempt % 30 == 0 else _log.info
            log("%s: open failed (attempt %d, next in %.1f s): %s", self.name, self._attempt, delay, exc)
            return False

        if self.opens:
            self.reopens += 1
            _log.warning("%s: reopened after %d failed attempt(s)", self.name, self._attempt)
        self.opens += 1
        self._attempt = 0
        self._timeouts_in_row = 0
        self._is_open = True
        if self._state != "ok":
            self._set_state("ok" if self._down_since is None else "degraded", "opened, waiting for frames")
        return True

    def _on_unusable(self, exc: SourceUnusable) -> None:
        self.failed_opens += 1
        self.last_error = str(exc)
        self._close_quietly()
        self._set_state("closed", f"cannot open: {exc}")

    def _restart(self, reason: str) -> None:
        """Close the source after a fault; the next read reopens it at once, later attempts back off."""
        self.errors += 1
        self.last_error = reason
        if self._down_since is None:
            self._down_since = now()
        _log.error("%s: %s; reopening the source", self.name, reason)
        self._close_quietly()
        self._attempt = 0
        self._retry_at = now()
        self._set_state("degraded", reason)

    def _close_quietly(self) -> None:
        self._is_open = False
        try:
            self.source.close()
        except Exception as exc:  # closing a failed device may fail too; the reopen still goes ahead
            _log.warning("%s: close failed: %s", self.name, exc)

    def _set_state(self, state: str, detail: str) -> None:
        with self._lock:
            self._state = state
            self._detail = detail

    def close(self) -> None:
        self._close_quietly()
        if self._state != "ended":
            self._set_state("closed", "")
        _log.info("%s closed after %d frames (%d reopens, %d corrupt frames skipped)", self.name, self.frames,
                  self.reopens, self.corrupt_frames)

    def health(self) -> SourceHealth:
        with self._lock:
            state, detail = self._state, self._detail
        inner = self.source.health()
        extra = {"source": self.name, "reopens": self.reopens, "failed_opens": self.failed_opens,
                 "timeouts": self.timeouts, "errors": self.errors, "last_error": self.last_error,
                 "last_recovery_s": self.last_recovery_s,
                 "last_frame_age_s": round(now() - self.last_frame_at, 3) if self.last_frame_at else None,
                 **inner.extra}
        return SourceHealth(state, detail, self.frames, self.corrupt_frames, inner.dropped_frames, extra)
