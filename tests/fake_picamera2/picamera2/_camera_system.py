"""The simulated hardware behind the fake Picamera2: the cameras present, who has them open, their scene.

Tests drive it through `SYSTEM`: plug or unplug cameras, mark one as held by
another process, stall the stream, corrupt the next frames, and set the
scene (a function from frame number to a true-colour RGB image).
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

IMX708 = {"Model": "imx708", "Location": 2, "Rotation": 180,
          "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a"}
IMX219 = {"Model": "imx219", "Location": 2, "Rotation": 0,
          "Id": "/base/axi/pcie@120000/rp1/i2c@80000/imx219@10"}

# Controls the camera advertises, as Picamera2.camera_controls gives them: name -> (min, max, default).
COMMON_CONTROLS = {
    "ExposureTime": (1, 66666, 20000),
    "AnalogueGain": (1.0, 16.0, 1.0),
    "FrameDurationLimits": (8333, 120000, 33333),
    "NoiseReductionMode": (0, 4, 0),
}
AUTOFOCUS_CONTROLS = {
    "AfMode": (0, 2, 0),
    "AfTrigger": (0, 1, 0),
    "LensPosition": (0.0, 32.0, 1.0),
}


def _grey_scene(frame_number: int) -> np.ndarray:
    image = np.zeros((480, 640, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    image[..., 1] = 40
    image[..., 2] = 10
    return image


class CameraSystem:
    """Shared state of the simulated cameras; reset() restores one Camera Module 3 and a plain scene."""

    def __init__(self):
        self.condition = threading.Condition()
        self.reset()

    def reset(self) -> None:
        with self.condition:
            self.cameras: list[dict] = [dict(IMX708)]
            self.held_elsewhere: set[int] = set()
            self.open_cameras: dict[int, object] = {}
            self.stalled = False
            self.corrupt_next = 0
            self.realtime = False
            self.scene: Callable[[int], np.ndarray] = _grey_scene
            self.generation = 0  # bumped on unplug so open cameras notice they are gone
            self.condition.notify_all()

    def plug(self, info: dict | None = None) -> None:
        with self.condition:
            self.cameras = [dict(info or IMX708)]
            self.condition.notify_all()

    def unplug(self) -> None:
        """Remove every camera: new opens fail with IndexError, open cameras deliver no more frames."""
        with self.condition:
            self.cameras = []
            self.generation += 1
            self.condition.notify_all()

    def stall(self, stalled: bool = True) -> None:
        with self.condition:
            self.stalled = stalled
            self.condition.notify_all()

    def corrupt(self, frames: int = 1) -> None:
        """Make the next `frames` requests carry a truncated buffer."""
        with self.condition:
            self.corrupt_next += frames

    def controls_for(self, camera_num: int) -> dict:
        info = self.cameras[camera_num]
        controls = dict(COMMON_CONTROLS)
        if info.get("Model") == "imx708":
            controls.update(AUTOFOCUS_CONTROLS)
        return controls


SYSTEM = CameraSystem()
