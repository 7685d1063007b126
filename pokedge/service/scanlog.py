"""The scan log: every confirmed, unknown and low-confidence card in SQLite, with JPEGs of the unsure ones.

Layout under the folder: `scans.db` (SQLite, WAL mode so the HTTP API reads
while the frame loop writes) and `images/YYYY-MM-DD/*.jpg` (the warped card
of unknown and low-confidence scans). Writes go through one writer thread,
so a slow SD card never stalls the frame loop. A failed write (disk full,
read-only file system) keeps the record in memory and retries every few
seconds. The error is logged once a minute, not once per record.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from pokedge.errors import PokedgeError
from pokedge.service.ratelimit import RateLimitedLog

_log = logging.getLogger(__name__)

DB_NAME = "scans.db"
IMAGE_DIR = "images"
SCHEMA_VERSION = 1
JPEG_QUALITY = 90
RETRY_SECONDS = 5.0

COLUMNS = ("time", "state", "card_id", "name", "set_id", "set_name", "number", "score", "margin", "track_id",
           "frame", "model", "gallery", "version", "backend", "alternatives", "image")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,            -- Unix time in seconds
    state TEXT NOT NULL,           -- confirmed, unknown_card or low_confidence
    card_id TEXT,                  -- the confirmed card or a low-confidence guess; NULL for unknown_card
    name TEXT,
    set_id TEXT,
    set_name TEXT,
    number TEXT,
    score REAL,                    -- fused top-1 cosine similarity
    margin REAL,
    track_id INTEGER,
    frame INTEGER,
    model TEXT,                    -- model id of the embedding model
    gallery TEXT,                  -- gallery version: producer and build time
    version TEXT,                  -- synced version id, or shipped-default
    backend TEXT,
    alternatives TEXT,             -- JSON list of {card_id, score}
    image TEXT                     -- JPEG path relative to the scan log folder
);
CREATE INDEX IF NOT EXISTS scans_card_id ON scans (card_id);
CREATE INDEX IF NOT EXISTS scans_state ON scans (state);
"""


class ScanLogError(PokedgeError):
    """The scan log cannot be opened or read."""


class ScanLog:
    """Appends scan records from the frame loop and runs queries from any thread."""

    def __init__(self, folder: Path | str, *, save_images: bool = True, min_free_bytes: int = 200 * 1024 * 1024,
                 max_pending: int = 10_000, connect: Callable[..., sqlite3.Connection] = sqlite3.connect,
                 error_interval: float = 60.0):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.save_images = save_images
        self.min_free_bytes = min_free_bytes
        self._connect = connect
        self._queue: queue.Queue = queue.Queue()
        self._pending: deque[dict[str, Any]] = deque()
        self._max_pending = max_pending
        self._errors = RateLimitedLog(_log, error_interval)
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self.written = 0
        self.write_errors = 0
        self.dropped = 0
        self.images = 0
        self.images_skipped = 0
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> "ScanLog":
        """Create the folder and schema, then start the writer thread; raise ScanLogError with the fix."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = self._open_db()
            db.close()
        except (OSError, sqlite3.Error) as exc:
            raise ScanLogError(f"cannot open the scan log at {self.path} ({exc}); check the folder exists and is "
                               f"writable by this user, or pass another --data-dir") from exc

        self._thread = threading.Thread(target=self._run, name="scanlog-writer", daemon=True)
        self._thread.start()
        _log.info("scan log at %s (%d scans so far)", self.path, self.count())
        return self

    def _open_db(self) -> sqlite3.Connection:
        db = self._connect(str(self.path), timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise sqlite3.DatabaseError(f"{self.path} has schema version {version}, newer than this pokedge "
                                        f"({SCHEMA_VERSION}); upgrade pokedge")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.commit()
        return db

    def close(self, timeout: float = 3.0) -> None:
        """Write what is queued (waiting at most `timeout` seconds) and stop the writer thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            _log.error("scan log writer did not finish within %.1f s; %d record(s) not written", timeout,
                       self._queue.qsize() + len(self._pending))
        elif self._pending:
            _log.error("scan log closed with %d record(s) not written: %s", len(self._pending), self.last_error)

    # -- writing -----------------------------------------------------------------------------------

    def add(self, record: dict[str, Any], image: np.ndarray | None = None) -> None:
        """Queue one scan (keys from COLUMNS; `image` is the BGR warped card); returns at once."""
        if self._thread is None:
            raise ScanLogError("the scan log is not open; call open() first")
        self._idle.clear()
        self._queue.put({**record, "_image": image if self.save_images else None})

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record was written or failed; return whether none is left pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.05):
                return not self._pending
        return False

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        while True:
            try:
                item = self._queue.get(timeout=RETRY_SECONDS if self._pending else None)
            except queue.Empty:
                item = False  # retry time: try the pending records again
            if item is None:
                self._drain(db)
                break
            if item is not False:
                self._hold(item)
            db = self._drain(db)
            if self._queue.empty():
                self._idle.set()
        if db is not None:
            db.close()

    def _hold(self, item: dict[str, Any]) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            self._errors.error("dropped", "scan log backlog is full (%d records); dropping the oldest",
                               self._max_pending)
        self._pending.append(item)

    def _drain(self, db: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """Write pending records oldest first; stop at the first failure and keep the rest for a retry."""
        while self._pending:
            record = self._pending[0]
            self._write_image(record)
            try:
                if db is None:
                    db = self._open_db()
                self._insert(db, record)
            except (sqlite3.Error, OSError) as exc:
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._errors.error("write", "scan log write failed, %d record(s) kept for a retry in %.0f s: %s "
                                   "(free disk space or check %s)", len(self._pending), RETRY_SECONDS, exc, self.path)
                if db is not None:
                    db.close()
                return None
            self._pending.popleft()
            self.written += 1
        return db

    def _insert(self, db: sqlite3.Connection, record: dict[str, Any]) -> None:
        values = [record.get(name) for name in COLUMNS]
        alternatives = record.get("alternatives")
        values[COLUMNS.index("alternatives")] = json.dumps(alternatives) if alternatives is not None else None
        with db:
            db.execute(f"INSERT INTO scans ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", values)

    def _write_image(self, record: dict[str, Any]) -> None:
        """Save the record's crop as a JPEG once; on failure the record is kept without an image."""
        image = record.pop("_image", None)
        if image is None:
            return
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            free = None
        if free is not None and free < self.min_free_bytes:
            self.images_skipped += 1
            self._errors.warning("space", "only %d MB free under %s; scan images are not saved until space is freed",
                                 free // (1024 * 1024), self.folder)
            return

        stamp = datetime.fromtimestamp(record["time"], timezone.utc)
        relative = Path(IMAGE_DIR) / stamp.strftime("%Y-%m-%d") / (
            f"{stamp.strftime('%H%M%S-%f')}_t{record.get('track_id')}_{record.get('state')}.jpg")
        try:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise OSError(f"JPEG encoding of a {image.shape} image failed")
            _write_file(self.folder / relative, data.tobytes())
        except OSError as exc:
            self.images_skipped += 1
            self.last_error = f"image: {exc}"
            self._errors.error("image", "cannot save scan image %s: %s", relative, exc)
            return
        record["image"] = str(relative)
        self.images += 1

    # -- reading -----------------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        return db

    def count(self, state: str | None = None) -> int:
        db = self._read()
        try:
            if state:
                return db.execute("SELECT COUNT(*) FROM scans WHERE state = ?", (state,)).fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM scans").fetchone()[0]
        finally:
            db.close()

    def scans(self, limit: int = 50, offset: int = 0, state: str | None = None) -> list[dict[str, Any]]:
        """Return scans newest first."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        db = self._read()
        try:
            rows = db.execute(f"SELECT * FROM scans {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                              [*args, limit, offset]).fetchall()
        finally:
            db.close()
        return [_row_dict(row) for row in rows]

    def get(self, scan_id: int) -> dict[str, Any] | None:
        db = self._read()
        try:
            row = db.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        finally:
            db.close()
        return _row_dict(row) if row else None

    def image_path(self, scan: dict[str, Any]) -> Path | None:
        """Return the absolute path of a scan's JPEG, if it has one inside the scan log folder."""
        relative = scan.get("image")
        if not relative:
            return None
        path = (self.folder / relative).resolve()
        if self.folder.resolve() not in path.parents:
            return None
        return path

    def collection(self) -> list[dict[str, Any]]:
        """Return one row per confirmed card: its facts, quantity, and first and last seen (ISO 8601 UTC)."""
        db = self._read()
        try:
            rows = db.execute(
                "SELECT card_id, MAX(name) AS name, MAX(set_id) AS set_id, MAX(set_name) AS set_name, "
                "MAX(number) AS number, COUNT(*) AS quantity, MIN(time) AS first_seen, MAX(time) AS last_seen "
                "FROM scans WHERE state = 'confirmed' AND card_id IS NOT NULL "
                "GROUP BY card_id ORDER BY set_id, card_id").fetchall()
        finally:
            db.close()
        out = []
        for row in rows:
            item = dict(row)
            item["first_seen"] = iso_time(item["first_seen"])
            item["last_seen"] = iso_time(item["last_seen"])
            out.append(item)
        return out

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written, "pending": len(self._pending) + self._queue.qsize(),
                "write_errors": self.write_errors, "dropped": self.dropped, "images": self.images,
                "images_skipped": self.images_skipped, "last_error": self.last_error}


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["iso_time"] = iso_time(item["time"])
    if item.get("alternatives"):
        try:
            item["alternatives"] = json.loads(item["alternatives"])
        except json.JSONDecodeError:
            pass
    return item


def _write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a full disk leaves no truncated JPEG behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
