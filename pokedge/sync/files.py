"""Durable file operations: writes and renames that survive a power cut once they return."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
DIR_MODE = 0o755


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new, renamed or removed names) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path) -> Path:
    """Create a folder and its parents with mode 0755."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary name, fsync it, and rename it into place with mode 0644."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    fsync_dir(path.parent)
