"""Playing recorded frames at their native rate, the way a camera would deliver them."""

from __future__ import annotations

import math

from pokedge.capture.base import now


class Pacer:
    """Decides which recorded frame is due and how long to wait for it.

    In real time, frame `n` of a pass is due `n / fps` seconds after the pass
    started. A reader that falls behind skips to the frame due now, as a live
    camera drops the frames that were not read in time. A reader that is ahead
    waits. With `realtime=False` every frame is delivered at once, in order.
    """

    def __init__(self, fps: float, realtime: bool = True):
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"frame rate must be a positive number of frames per second, got {fps!r}")
        self.fps = float(fps)
        self.realtime = realtime
        self._start: float | None = None

    def restart(self) -> None:
        """Start a new pass: the next frame planned becomes frame 0 of the timeline."""
        self._start = None

    def plan(self, index: int) -> tuple[int, float]:
        """Return (index of the frame to deliver, seconds to wait before delivering it).

        `index` is the next frame the reader would deliver; the returned index
        is never smaller.
        """
        if not self.realtime:
            return index, 0.0

        clock = now()
        if self._start is None:
            self._start = clock - index / self.fps
        due = int((clock - self._start) * self.fps)
        if due > index:
            return due, 0.0
        return index, self._start + index / self.fps - clock
