"""Reading still images from files, with a clear error for each way a file can be bad."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import cv2
import numpy as np

from pokedge.errors import InputError

_log = logging.getLogger(__name__)

MIN_SIDE = 32
# The Camera Module 3 gives 12 MP and most phone photos stay under 40 MP.
# Larger frames (50-200 MP phone modes) cost seconds of CPU and hundreds of MB
# without helping recognition, so they are rejected with a request to downscale.
MAX_PIXELS = 40_000_000


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as a BGR uint8 frame; raise InputError naming the file and the fault."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None

    return decode_image(data, str(path))


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP, TIFF) into a BGR uint8 frame."""
    if not data:
        raise InputError(f"{name}: file is empty (0 bytes)")

    size = header_size(data)
    if size is not None:
        _check_size(size[0], size[1], name)
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise InputError(f"{name}: JPEG data is truncated (no end-of-image marker); copy the file again")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        raise InputError(f"{name}: PNG data is truncated (no IEND chunk); copy the file again")

    buffer = np.frombuffer(data, dtype=np.uint8)
    frame = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if frame is None:
        raise InputError(f"{name}: not a readable image (supported: JPEG, PNG, BMP, WebP, TIFF)")

    _check_size(frame.shape[1], frame.shape[0], name)
    return frame


def _check_size(width: int, height: int, name: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name}: image is {width}x{height} px, too small to hold a card (at least {MIN_SIDE} px a side)")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{name}: image is {width}x{height} px ({width * height / 1e6:.0f} MP), over the "
            f"{MAX_PIXELS // 1_000_000} MP limit; downscale it first"
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """Read (width, height) from a PNG or JPEG header without decoding; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        # Start-of-frame markers C0..CF carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not SOF markers.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None
