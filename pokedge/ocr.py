"""Reading short lines of printed text with PP-OCR models on ONNX Runtime.

Two models do the work, both exported from PaddleOCR (Apache-2.0):

- a DB text detector, whose output is a probability map of "text here".
  The map is cut at a threshold, and every blob becomes a line box grown by
  the DB unclip distance (area * ratio / perimeter).
- a CRNN recognizer with CTC output, run on each line box scaled to
  48 pixels high. Its character list is stored in the model's metadata.

Only horizontal lines are read, which is what a rectified card shows. The
models ship in `models/ocr/`; `TextReader.available()` returns
whether they are there. A `SHA256SUMS` file beside them (the format of
`sha256sum`) lists their checksums, and a model that does not match is
not loaded.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from pokedge import paths
from pokedge.contract import file_sha256
from pokedge.errors import BackendError

_log = logging.getLogger(__name__)

OCR_DIR = paths.REPO_ROOT / "models" / "ocr"
DETECTOR_FILE = "ppocrv4-det.onnx"
RECOGNIZER_FILE = "ppocrv4-rec.onnx"
CHECKSUMS_FILE = "SHA256SUMS"

DET_THRESHOLD = 0.3  # probability above which a pixel is text
DET_BOX_SCORE = 0.5  # mean probability a line box must reach
DET_UNCLIP = 1.6  # DB unclip ratio
DET_STRIDE = 32  # the detector's input sides must be multiples of this
REC_HEIGHT = 48
REC_MAX_WIDTH = 640


class TextReader:
    """Finds and reads horizontal text lines in a BGR image."""

    def __init__(self, folder: Path = OCR_DIR, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        _verify_checksums(folder)
        self.detector = _open(ort, folder / DETECTOR_FILE, options)
        self.recognizer = _open(ort, folder / RECOGNIZER_FILE, options)
        self.charset = _charset(self.recognizer, folder / RECOGNIZER_FILE)
        self.detector_input = self.detector.get_inputs()[0].name
        self.recognizer_input = self.recognizer.get_inputs()[0].name

    @staticmethod
    def available(folder: Path = OCR_DIR) -> bool:
        return (folder / DETECTOR_FILE).is_file() and (folder / RECOGNIZER_FILE).is_file()

    def find_lines(self, image: np.ndarray, width: int = 960) -> list[tuple[int, int, int, int]]:
        """Return axis-aligned line boxes (x, y, w, h) in `image` pixels, top to bottom."""
        scale = width / image.shape[1]
        size = (_multiple(image.shape[1] * scale), _multiple(image.shape[0] * scale))
        tensor = _normalize(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        (probability,) = self.detector.run(None, {self.detector_input: tensor[None]})
        probability = probability[0, 0]

        mask = cv2.dilate((probability > DET_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        fx, fy = image.shape[1] / size[0], image.shape[0] / size[1]

        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if min(w, h) < 3:
                continue
            inside = mask[y:y + h, x:x + w] > 0
            if probability[y:y + h, x:x + w][inside].mean() < DET_BOX_SCORE:
                continue
            grow = w * h * DET_UNCLIP / (2 * (w + h))
            boxes.append(_clip_box((x - grow) * fx, (y - grow) * fy, (w + 2 * grow) * fx, (h + 2 * grow) * fy, image))
        return sorted((box for box in boxes if box[2] > 2 and box[3] > 2), key=lambda box: (box[1], box[0]))

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Read one line from each BGR crop: (text, mean character confidence)."""
        widths = [min(REC_MAX_WIDTH, math.ceil(REC_HEIGHT * c.shape[1] / max(c.shape[0], 1))) for c in crops]
        batch = np.zeros((len(crops), 3, REC_HEIGHT, max(widths)), np.float32)
        for n, (crop, crop_width) in enumerate(zip(crops, widths)):
            batch[n, :, :, :crop_width] = _normalize(cv2.resize(crop, (crop_width, REC_HEIGHT)))

        (scores,) = self.recognizer.run(None, {self.recognizer_input: batch})
        return [self._decode(row) for row in scores]

    def _decode(self, scores: np.ndarray) -> tuple[str, float]:
        """Greedy CTC: the best class per step, repeats merged, blanks (class 0) dropped."""
        best = scores.argmax(axis=1)
        keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
        if not keep.any():
            return "", 0.0
        text = "".join(self.charset[i - 1] for i in best[keep])
        return text, float(scores[keep, best[keep]].mean())


def _verify_checksums(folder: Path) -> None:
    """Check the models against `folder/SHA256SUMS` when the file exists; raise BackendError on a mismatch."""
    listing = folder / CHECKSUMS_FILE
    if not listing.is_file():
        return

    for line in filter(str.strip, listing.read_text().splitlines()):
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise BackendError(f"{listing}: invalid line {line!r}, expected '<sha256>  <file>' as sha256sum writes")
        expected, name = fields[0].lower(), fields[1].lstrip("*")  # "*" marks binary mode in sha256sum output
        path = folder / name
        if not path.is_file():
            continue  # a missing model gets its own error when it is opened
        actual = file_sha256(path)
        if actual != expected:
            raise BackendError(f"OCR model {path} has sha256 {actual}, but {listing} lists {expected}; "
                               f"the file is damaged or replaced, restore models/ocr/ from git")


def _open(ort, path: Path, options):
    if not path.is_file():
        raise BackendError(f"OCR model {path} is missing; reinstall pokedge or restore models/ocr/ from git")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable models
        raise BackendError(f"ONNX Runtime cannot load the OCR model {path}: {exc}; restore it from git") from None


def _charset(session, path: Path) -> list[str]:
    """Return the recognizer's classes after the CTC blank: the characters in its metadata, then a space."""
    characters = session.get_modelmeta().custom_metadata_map.get("character")
    if not characters:
        raise BackendError(f"OCR model {path} has no 'character' list in its metadata; it is not a PP-OCR recognizer")
    charset = characters.split("\n") + [" "]
    classes = session.get_outputs()[0].shape[-1]
    if isinstance(classes, int) and classes != len(charset) + 1:
        raise BackendError(f"OCR model {path}: {classes} output classes, but its metadata lists {len(charset)} "
                         f"characters (expected classes = characters + 1)")
    return charset


def _normalize(image: np.ndarray) -> np.ndarray:
    """Convert BGR uint8 HWC to float32 CHW in [-1, 1]."""
    return (image.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def _multiple(length: float) -> int:
    return max(DET_STRIDE, int(round(length / DET_STRIDE)) * DET_STRIDE)


def _clip_box(x: float, y: float, w: float, h: float, image: np.ndarray) -> tuple[int, int, int, int]:
    height, width = image.shape[:2]
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(math.ceil(x + w))), min(height, int(math.ceil(y + h)))
    return x0, y0, x1 - x0, y1 - y0
