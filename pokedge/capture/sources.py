"""Parsing `--source` specs and opening the matching frame source.

Specs: `picamera2` or `picamera2:N` (libcamera camera N), `opencv:INDEX`
(USB webcam), `opencv:URL` (rtsp://, http://), `opencv:/dev/videoN`,
`file:PATH` (video file) and `dir:PATH` (folder of images). A bare URL is
read as `opencv:URL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pokedge.capture.base import FrameSource
from pokedge.errors import InputError

KINDS = ("picamera2", "opencv", "file", "dir")
SPEC_HELP = "picamera2[:N], opencv:INDEX, opencv:URL, file:PATH or dir:PATH"


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # one of KINDS
    target: int | str  # camera number or index, URL, or path

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"

    @property
    def is_recording(self) -> bool:
        """True for files and folders, which end; cameras and streams do not."""
        return self.kind in ("file", "dir")


def parse_source_spec(spec: str) -> SourceSpec:
    """Parse a --source value; raise InputError naming the value and the accepted forms."""
    text = spec.strip()
    if "://" in text and not text.startswith("opencv:"):
        return SourceSpec("opencv", text)

    kind, _, target = text.partition(":")
    if kind not in KINDS:
        raise InputError(f"unknown source {spec!r}; use {SPEC_HELP}")

    if kind == "picamera2":
        return SourceSpec(kind, _camera_number(target or "0", spec))
    if not target:
        raise InputError(f"source {spec!r} has nothing after '{kind}:'; use {SPEC_HELP}")
    if kind == "opencv":
        return SourceSpec(kind, int(target) if target.isdigit() else target)
    return SourceSpec(kind, target)


def _camera_number(text: str, spec: str) -> int:
    if not text.isdigit():
        raise InputError(f"source {spec!r}: the camera number must be 0, 1, ...; got {text!r}")
    return int(text)


def build_source(spec: SourceSpec, *, loop: bool = False, realtime: bool = True, camera=None,
                 folder_fps: float | None = None) -> FrameSource:
    """Create (not open) the frame source for `spec`.

    `camera` is a Picamera2Options for picamera2 sources; `loop` and
    `realtime` apply to files and folders only.
    """
    if spec.kind == "picamera2":
        from dataclasses import replace

        from pokedge.capture.picamera2 import Picamera2Options, Picamera2Source

        options = replace(camera or Picamera2Options(), camera_num=int(spec.target))
        return Picamera2Source(options)

    if spec.kind == "opencv":
        from pokedge.capture.opencv import OpenCVCameraSource

        return OpenCVCameraSource(spec.target)

    _check_recording(spec)
    if spec.kind == "file":
        from pokedge.capture.opencv import VideoFileSource

        return VideoFileSource(spec.target, loop=loop, realtime=realtime)

    from pokedge.capture.folder import DEFAULT_FOLDER_FPS, FolderSource

    return FolderSource(spec.target, loop=loop, realtime=realtime, fps=folder_fps or DEFAULT_FOLDER_FPS)


def _check_recording(spec: SourceSpec) -> None:
    """Raise InputError for a file or folder source whose path is missing or of the other kind, or whose file is damaged.

    A camera may appear later, so only paths are checked before the source opens.
    """
    path = Path(str(spec.target))
    if not path.exists():
        raise InputError(f"source {spec}: {path} not found; check the path")
    if spec.kind == "file" and path.is_dir():
        raise InputError(f"source {spec}: {path} is a folder; use dir:{path} for a folder of images")
    if spec.kind == "dir" and not path.is_dir():
        raise InputError(f"source {spec}: {path} is not a folder; use file:{path} for a video file")
    if spec.kind == "file":
        _check_decodable(spec, path)


def _check_decodable(spec: SourceSpec, path: Path) -> None:
    """Raise InputError for a file source that OpenCV cannot decode, or for a damaged still image.

    OpenCV opens some damaged files as videos without frames, so the source would end at once without an error.
    It cannot open others, and the supervisor would keep reopening those.
    """
    from pokedge.capture.folder import IMAGE_SUFFIXES
    from pokedge.capture.image import read_image
    from pokedge.capture.opencv import decodes_a_frame

    if not decodes_a_frame(path):
        raise InputError(f"source {spec}: {path} cannot be decoded as an image or video (the file is damaged, "
                         f"truncated or in a format OpenCV does not read); copy the file again, or convert it "
                         f"to MJPG in .avi or H.264 in .mp4")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        # OpenCV's FFmpeg backend decodes a truncated JPEG into a frame whose missing part is black.
        try:
            read_image(path)
        except InputError as exc:
            raise InputError(f"source {spec}: {exc}") from None
