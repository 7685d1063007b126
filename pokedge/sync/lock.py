"""An exclusive lock on the data folder, so two syncs (the timer and a user) never stage at once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pokedge.sync.errors import LockError

LOCK_NAME = ".sync.lock"


class DataDirLock:
    """Holds `flock` on `<data-dir>/.sync.lock` while in a `with` block; the kernel drops it if the process dies."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK_NAME
        self._fd = -1

    def __enter__(self) -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise LockError(f"another pokedge sync or rollback (pid {holder}) is using {self.path.parent}; "
                            f"wait for it to finish") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc_info) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
