"""The downscaled working copy of a frame and the images every strategy shares.

Detection runs on a copy whose longest side is about `WORK_SIDE` pixels, so
its cost does not grow with the camera resolution. Grey image, gradients and
edge map are computed once here and reused by every strategy and by the
quad score.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

# Longest side of the working copy, px. A card that fills 3% of a 4:3 frame is
# still about 75 x 105 px at this size, enough to fit its edges.
WORK_SIDE = 640

# Canny hysteresis thresholds as percentiles of the gradient magnitude (L1
# Sobel units), bounded so that flat frames do not turn noise into edges.
_CANNY_HIGH_PERCENTILE = 92
_CANNY_HIGH_RANGE = (60.0, 400.0)
_CANNY_LOW_RATIO = 0.4


@dataclass
class WorkFrame:
    """A frame scaled to the working size, with cached derived images.

    `scale` converts frame pixels to working pixels (work = frame * scale).
    """

    bgr: np.ndarray
    scale: float

    @classmethod
    def from_frame(cls, frame: np.ndarray, work_side: int = WORK_SIDE) -> "WorkFrame":
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)

        scale = min(1.0, work_side / max(frame.shape[:2]))
        if scale == 1.0:
            return cls(frame, 1.0)
        work = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return cls(work, scale)

    @property
    def shape(self) -> tuple[int, int]:
        return self.bgr.shape[0], self.bgr.shape[1]

    @property
    def area(self) -> float:
        return float(self.bgr.shape[0] * self.bgr.shape[1])

    @cached_property
    def grey(self) -> np.ndarray:
        return cv2.cvtColor(self.bgr, cv2.COLOR_BGR2GRAY)

    @cached_property
    def smooth(self) -> np.ndarray:
        """Grey image with a 5 x 5 Gaussian blur, which removes JPEG noise and print halftone."""
        return cv2.GaussianBlur(self.grey, (5, 5), 0)

    @cached_property
    def hsv(self) -> np.ndarray:
        return cv2.cvtColor(self.bgr, cv2.COLOR_BGR2HSV)

    @cached_property
    def gradients(self) -> tuple[np.ndarray, np.ndarray]:
        """Sobel x and y derivatives (int16) of the colour channel with the strongest response.

        Using the strongest of B, G and R per pixel keeps card edges that
        differ from the background in hue but not in brightness.
        """
        blurred = cv2.GaussianBlur(self.bgr, (5, 5), 0)
        dx = cv2.Sobel(blurred, cv2.CV_16S, 1, 0, ksize=3)
        dy = cv2.Sobel(blurred, cv2.CV_16S, 0, 1, ksize=3)
        # Per-channel strength |dx| + |dy| at a quarter scale so that it fits uint8 for the fast cv2 calls.
        strength = cv2.split(cv2.add(cv2.convertScaleAbs(dx, alpha=0.25), cv2.convertScaleAbs(dy, alpha=0.25)))
        dx_channels, dy_channels = cv2.split(dx), cv2.split(dy)
        gx, gy, best = dx_channels[0].copy(), dy_channels[0].copy(), strength[0].copy()
        for channel in (1, 2):
            stronger = cv2.compare(strength[channel], best, cv2.CMP_GT)
            gx = cv2.copyTo(dx_channels[channel], stronger, gx)
            gy = cv2.copyTo(dy_channels[channel], stronger, gy)
            best = cv2.max(best, strength[channel])
        return gx, gy

    @cached_property
    def magnitude(self) -> np.ndarray:
        """L1 gradient magnitude |dx| + |dy| as float32, in Sobel 3 x 3 units (a 0-255 step gives 1020)."""
        gx, gy = self.gradients
        return (np.abs(gx.astype(np.float32)) + np.abs(gy.astype(np.float32)))

    @cached_property
    def edge_threshold(self) -> float:
        """Gradient magnitude that counts as a strong edge in this frame (the Canny high threshold)."""
        sample = self.magnitude[::4, ::4]
        high = float(np.percentile(sample, _CANNY_HIGH_PERCENTILE))
        return float(np.clip(high, *_CANNY_HIGH_RANGE))

    @cached_property
    def edges(self) -> np.ndarray:
        """Canny edge map (uint8, 0 or 255) from the colour gradients."""
        gx, gy = self.gradients
        high = self.edge_threshold
        return cv2.Canny(gx, gy, _CANNY_LOW_RATIO * high, high)
