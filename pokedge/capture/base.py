"""The interface every frame source implements, and the errors it raises.

A frame source yields BGR uint8 frames (OpenCV channel order, which the
recognition pipeline expects) with a monotonic timestamp. `read(timeout)`
returns within about `timeout` seconds or raises one of four errors.
CaptureTimeout means a stall, and CorruptFrame a frame that arrived but
cannot be used (the caller skips it). EndOfStream means a file or folder has
no more frames, and SourceUnavailable that the device is absent, busy or gone.
Its subclass SourceUnusable, raised by `open`, means retrying cannot help.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pokedge.errors import PokedgeError


class CaptureError(PokedgeError):
    """A frame source failed; the subclass names the kind of failure."""


class SourceUnavailable(CaptureError):
    """The device or file cannot be opened or stopped delivering (absent, busy, unplugged)."""


class SourceUnusable(SourceUnavailable):
    """A source that cannot work on this machine until the user acts (a missing driver package), so it is not reopened."""


class CaptureTimeout(CaptureError):
    """No frame arrived within the read timeout."""


class CorruptFrame(CaptureError):
    """A frame arrived but cannot be used (truncated buffer, wrong shape, undecodable image)."""


class EndOfStream(CaptureError):
    """A file or folder source has delivered its last frame."""


@dataclass
class Frame:
    """One captured frame."""

    image: np.ndarray  # BGR uint8 [H, W, 3], C-contiguous
    timestamp: float  # time.monotonic() seconds when the frame was captured
    sequence: int  # frame number within the source, counting from 0 at open
    lores: np.ndarray | None = None  # BGR uint8 low-resolution copy, when the source has one
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceHealth:
    """A source's report on itself; `state` is one of ok, degraded, ended, closed."""

    state: str
    detail: str = ""
    frames: int = 0
    corrupt_frames: int = 0
    dropped_frames: int = 0  # frames a paced source skipped because the reader fell behind
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "frames": self.frames,
                "corrupt_frames": self.corrupt_frames, "dropped_frames": self.dropped_frames, **self.extra}


@runtime_checkable
class FrameSource(Protocol):
    """A camera, video or folder that yields BGR frames.

    `open` raises SourceUnavailable with the reason and the fix. `read` may be
    called only between `open` and `close`, from one thread. `close` is safe
    to call twice and after a failed `open`.
    """

    name: str

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame: ...

    def close(self) -> None: ...

    def health(self) -> SourceHealth: ...


def check_frame(image: Any, source: str, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return `image` as a C-contiguous BGR uint8 array, or raise CorruptFrame naming the fault.

    `expected_shape` is the shape of the frames the source delivered so far. A
    frame of another size within one session is corrupt (a torn buffer), because
    a stream does not change its format without being reopened.
    """
    if not isinstance(image, np.ndarray):
        raise CorruptFrame(f"{source}: frame is {type(image).__name__}, not an image array")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CorruptFrame(f"{source}: frame is {image.dtype} {list(image.shape)}, expected uint8 [H, W, 3]")
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise CorruptFrame(f"{source}: frame is {image.shape[1]}x{image.shape[0]} px, too small to be a camera frame")
    if expected_shape is not None and image.shape != expected_shape:
        raise CorruptFrame(f"{source}: frame is {list(image.shape)}, but this session delivered {list(expected_shape)}")
    return np.ascontiguousarray(image)


def now() -> float:
    """Monotonic seconds, the clock of every frame timestamp."""
    return time.monotonic()
