"""Frames from a folder of still images (`dir:PATH`), in file-name order, paced like a camera."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pokedge.capture.base import (CaptureTimeout, CorruptFrame, EndOfStream, Frame, SourceHealth,
                                  SourceUnavailable, now)
from pokedge.capture.image import read_image
from pokedge.capture.pacing import Pacer
from pokedge.errors import InputError

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_FOLDER_FPS = 5.0


class FolderSource:
    """Every image file in a folder as one frame each; frames may differ in size."""

    def __init__(self, path: Path | str, loop: bool = False, realtime: bool = True, fps: float = DEFAULT_FOLDER_FPS):
        self.path = Path(path)
        self.name = f"dir:{self.path}"
        self.loop = loop
        self.fps = fps
        self._pacer = Pacer(fps, realtime)
        self._files: list[Path] = []
        self._position = 0
        self._sequence = 0
        self._pass_frames = 0
        self._frames = 0
        self._corrupt = 0
        self._dropped = 0
        self._open = False
        self._ended = False

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceUnavailable(f"{self.path}: folder not found; check the path given to --source dir:PATH")

        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            raise SourceUnavailable(
                f"{self.path}: no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); add images or fix the path"
            )
        self._pacer.restart()
        self._position = 0
        self._pass_frames = 0
        self._open = True
        self._ended = False
        _log.info("opened %s: %d images at %.1f fps, %s", self.name, len(self._files), self.fps,
                  "looping" if self.loop else "playing once")

    def read(self, timeout: float) -> Frame:
        if not self._open:
            raise SourceUnavailable(f"{self.name} is not open; call open() first")
        if self._ended:
            raise EndOfStream(f"{self.name}: end of folder after {self._frames} frames")

        target, wait = self._pacer.plan(self._position)
        target = min(target, len(self._files))
        self._dropped += target - self._position
        self._position = target
        if wait > timeout:
            time.sleep(timeout)
            raise CaptureTimeout(f"{self.name}: next image is due in {wait:.2f} s, after the {timeout:.2f} s timeout")
        if wait > 0:
            time.sleep(wait)

        self._wrap_around()
        path = self._files[self._position]
        index = self._position
        self._position += 1
        try:
            image = read_image(path)
        except InputError as exc:
            self._corrupt += 1
            raise CorruptFrame(f"{self.name}: {exc}; skipped") from None

        self._pass_frames += 1
        self._frames += 1
        self._sequence += 1
        return Frame(image, now(), self._sequence - 1, metadata={"position": index, "file": path.name})

    def _wrap_around(self) -> None:
        """Start the next pass when the last file was delivered, or end the stream."""
        if self._position < len(self._files):
            return
        if not self.loop or self._pass_frames == 0:
            self._ended = True
            raise EndOfStream(f"{self.name}: end of folder after {self._frames} frames")
        self._position = 0
        self._pass_frames = 0
        self._pacer.restart()
        self._pacer.plan(0)

    def close(self) -> None:
        self._open = False

    def health(self) -> SourceHealth:
        if self._ended:
            state = "ended"
        elif self._open:
            state = "ok"
        else:
            state = "closed"
        return SourceHealth(state, f"{len(self._files)} images", self._frames, self._corrupt, self._dropped,
                            {"position": self._position, "loop": self.loop})
