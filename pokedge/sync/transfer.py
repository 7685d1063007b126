"""Resumable, parallel, ranged download of one S3 object into a `.part` file.

The object is split into parts of `part_size` bytes, fetched by up to
`workers` threads with ranged GETs pinned to the object's ETag (If-Match), and
written in place with pwrite. Two small files beside the `.part` file record
the progress of each part:

- `.part.json`: bytes known to be on disk. It is replaced atomically after
  an fsync of the data, every half second once 256 KiB are new, at the
  latest every 2 MiB, and whenever the download stops (failure, or SIGTERM
  turned into an exception).
- `.part.written`: bytes handed to the kernel, with the kernel's boot id,
  overwritten in place every 1 MiB without an fsync. Those bytes survive a
  killed process, because the page cache outlives it, but not a power cut.

A resumed download trusts `.part.written` when the boot id is unchanged (no
power cut or crash since) and the file parses, and `.part.json` otherwise.
So a killed process loses at most 1 MiB per file, and a power cut loses
what arrived since the last fsync.

A part that fails is retried from the byte where it stopped, with
exponential backoff and jitter. The retry count resets whenever bytes
arrive, so a link that drops every few MiB still finishes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from pokedge.sync.errors import DiskSpaceError, SyncError, TransferError
from pokedge.sync.progress import ByteProgress
from pokedge.sync.s3 import RetryPolicy, describe_error, is_transient

_log = logging.getLogger(__name__)

CHUNK_SIZE = 256 << 10
RECORD_BYTES = 1 << 20
CHECKPOINT_SECONDS = 0.5
CHECKPOINT_MIN_BYTES = 256 << 10
CHECKPOINT_MAX_BYTES = 2 << 20
FILE_MODE = 0o644
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class TransferSettings:
    """Part size, parallel connections and retry limits of one download."""

    workers: int = 4
    part_size: int = 8 << 20
    retries: int = 5  # retries of a part in a row without new bytes
    backoff_s: float = 1.0


@dataclass
class _Part:
    start: int
    end: int  # inclusive
    done: int = 0  # bytes written to the file
    synced: int = 0  # bytes known to be on disk after an fsync

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def complete(self) -> bool:
        return self.done >= self.length


def partial_paths(dest: Path) -> tuple[Path, Path]:
    """Return the `.part` data file and its `.part.json` sidecar for a destination file."""
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _written_path(dest_or_state: Path) -> Path:
    """Return the `.part.written` record that sits beside a `.part.json` sidecar."""
    return dest_or_state.with_name(dest_or_state.name.removesuffix(".json") + ".written")


def remove_partial(dest: Path) -> None:
    """Delete the `.part` file of `dest` and its progress records."""
    part_path, state_path = partial_paths(dest)
    for path in (part_path, state_path, _written_path(state_path)):
        path.unlink(missing_ok=True)


def partial_bytes(dest: Path, etag: str, size: int) -> int:
    """Return how many bytes of `dest` an earlier, interrupted download already holds."""
    part_path, state_path = partial_paths(dest)
    parts = _load_parts(state_path, etag, size) if part_path.exists() else None
    return sum(min(p.done, p.length) for p in parts) if parts else 0


def download_object(client: Any, bucket: str, key: str, dest: Path, size: int, etag: str,
                    settings: TransferSettings, progress: ByteProgress | None = None) -> tuple[Path, int]:
    """Download s3://bucket/key into `dest`.part, resuming what an earlier run left; return the path and bytes received.

    The caller verifies the `.part` file and renames it into place.
    """
    download = _Download(client, bucket, key, dest, size, etag, settings, progress)
    return download.run(), download.received


class _Download:
    def __init__(self, client: Any, bucket: str, key: str, dest: Path, size: int, etag: str,
                 settings: TransferSettings, progress: ByteProgress | None):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.size = size
        self.etag = etag
        self.settings = settings
        self.progress = progress
        self.dest = dest
        self.part_path, self.state_path = partial_paths(dest)
        self.received = 0
        self._lock = threading.Lock()
        # _halt: start no new request (another part failed, or an interrupt). _abort: stop reading now
        # (interrupt only). After a failure elsewhere, a worker still reads its current response to the
        # end, because those bytes are kept for the next run.
        self._halt = threading.Event()
        self._abort = threading.Event()
        self._fd = -1
        self._parts: list[_Part] = []
        self._last_checkpoint = time.monotonic()
        self._unsaved = 0
        self._unrecorded = 0
        self._checkpointing = False
        self._boot_id = _boot_id()
        self._written_fd = -1

    def run(self) -> Path:
        self._parts = self._resume_or_start()
        pending = [part for part in self._parts if not part.complete]
        self._fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            self._reserve_space()
        except SyncError:
            self._abandon()
            raise

        try:
            if pending:
                _log.debug("%s: %d of %d parts to fetch", self.key, len(pending), len(self._parts))
                self._written_fd = os.open(_written_path(self.state_path), os.O_RDWR | os.O_CREAT, FILE_MODE)
                self._fetch_all(pending)
            os.fsync(self._fd)
        finally:
            self._save_state()
            os.close(self._fd)
            if self._written_fd >= 0:
                os.close(self._written_fd)
        os.chmod(self.part_path, FILE_MODE)
        return self.part_path

    def _abandon(self) -> None:
        """Close the file and delete it when it contains no downloaded bytes, so a failed allocation frees its space."""
        os.close(self._fd)
        self._fd = -1
        if not any(part.done for part in self._parts):
            remove_partial(self.dest)

    def _resume_or_start(self) -> list[_Part]:
        parts = _load_parts(self.state_path, self.etag, self.size) if self.part_path.exists() else None
        if parts is not None:
            kept = sum(min(p.done, p.length) for p in parts)
            _log.info("resuming %s: %d of %d bytes already downloaded", self.key, kept, self.size)
            return parts

        self.part_path.unlink(missing_ok=True)
        part_size = self.settings.part_size
        return [_Part(start, min(start + part_size, self.size) - 1) for start in range(0, self.size, part_size)]

    def _reserve_space(self) -> None:
        """Allocate the whole file up front, so a full disk fails here, clearly, and not mid-way."""
        try:
            os.posix_fallocate(self._fd, 0, self.size) if self.size else None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskSpaceError(f"no space left in {self.part_path.parent} for {self.key} ({self.size} bytes); "
                                     f"free space or lower the 'keep' setting") from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise SyncError(f"could not allocate {self.part_path}: {exc}") from None
            os.ftruncate(self._fd, self.size)

    def _fetch_all(self, pending: list[_Part]) -> None:
        workers = max(1, min(self.settings.workers, len(pending)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pokedge-sync") as pool:
            futures = [pool.submit(self._fetch_part, part) for part in pending]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:
                self._abort.set()
                self._halt.set()
                raise
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self._halt.set()
                wait(futures)
                raise failed[0].exception()

    def _fetch_part(self, part: _Part) -> None:
        failures = 0
        while not part.complete and not self._halt.is_set():
            offset = part.start + part.done
            error: BaseException | None = None
            try:
                self._stream_range(part, offset)
            except (BotoCoreError, ClientError, Urllib3Error, ConnectionError, TimeoutError) as exc:
                if not is_transient(exc) and not isinstance(exc, Urllib3Error):
                    raise describe_error(exc, self.bucket, self.key) from exc
                error = exc
            if part.complete or self._halt.is_set():
                return

            progressed = part.start + part.done > offset
            failures = 1 if progressed else failures + 1
            reason = error or "the server ended the response early"
            if failures > self.settings.retries:
                raise TransferError(f"download of s3://{self.bucket}/{self.key} failed at byte "
                                    f"{part.start + part.done} after {failures} attempt(s): {reason}; the "
                                    f"{self.received} bytes received are kept and the next sync resumes") from error
            self._wait_before_retry(failures, part.start + part.done, reason)

    def _stream_range(self, part: _Part, offset: int) -> None:
        response = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={offset}-{part.end}",
                                          IfMatch=self.etag)
        self._check_range(response, offset)
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                if self._abort.is_set():
                    return
                if len(chunk) > part.length - part.done:
                    raise TransferError(f"s3://{self.bucket}/{self.key}: the server sent more bytes than the "
                                        f"range {offset}-{part.end} asked for")
                self._write(part, chunk)
        finally:
            body.close()

    def _check_range(self, response: dict, offset: int) -> None:
        content_range = response.get("ContentRange")
        if content_range:
            start_text, _, total_text = content_range.removeprefix("bytes ").partition("/")
            start = int(start_text.split("-")[0])
            if start != offset or (total_text != "*" and int(total_text) != self.size):
                raise TransferError(f"s3://{self.bucket}/{self.key}: the server returned range {content_range}, "
                                    f"expected bytes from {offset} of a {self.size}-byte object")
        elif offset != 0 or int(response.get("ContentLength", -1)) != self.size:
            raise TransferError(f"s3://{self.bucket}/{self.key}: the server ignored the byte range request; "
                                f"resumable downloads need an S3 endpoint that supports Range")

    def _write(self, part: _Part, chunk: bytes) -> None:
        try:
            os.pwrite(self._fd, chunk, part.start + part.done)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskSpaceError(f"no space left in {self.part_path.parent} while writing {self.key}; "
                                     f"free space or lower the 'keep' setting") from None
            raise SyncError(f"could not write {self.part_path}: {exc}") from None

        with self._lock:
            part.done += len(chunk)
            self.received += len(chunk)
            self._unsaved += len(chunk)
            self._unrecorded += len(chunk)
            if self._unrecorded >= RECORD_BYTES:
                self._record_written()
            snapshot = self._take_checkpoint()
        if snapshot is not None:
            self._checkpoint(snapshot)
        if self.progress is not None:
            self.progress.add(len(chunk))

    def _take_checkpoint(self) -> list[int] | None:
        """Return the parts' written bytes when a checkpoint is due and none is running; the caller holds the lock."""
        now = time.monotonic()
        timely = now - self._last_checkpoint >= CHECKPOINT_SECONDS and self._unsaved >= CHECKPOINT_MIN_BYTES
        if self._checkpointing or not (timely or self._unsaved >= CHECKPOINT_MAX_BYTES):
            return None
        self._checkpointing = True
        self._last_checkpoint = now
        self._unsaved = 0
        return [p.done for p in self._parts]

    def _checkpoint(self, snapshot: list[int]) -> None:
        """fsync, then record the snapshot as synced; other workers keep writing meanwhile.

        Every byte the snapshot counts was written before the snapshot was
        taken, so the fsync covers it.
        """
        try:
            os.fsync(self._fd)
            with self._lock:
                for part, done in zip(self._parts, snapshot):
                    part.synced = max(part.synced, done)
                self._write_state()
        finally:
            with self._lock:
                self._checkpointing = False

    def _save_state(self) -> None:
        """Record the final progress; called when no worker is running."""
        try:
            os.fsync(self._fd)
            for part in self._parts:
                part.synced = part.done
        except OSError as exc:
            _log.warning("could not fsync %s: %s", self.part_path, exc)
        with self._lock:
            self._write_state()

    def _record_written(self) -> None:
        """Overwrite `.part.written` in place with the written bytes; the caller holds the lock.

        No rename and no fsync, so this costs microseconds. A torn record
        after a crash fails to parse and is ignored.
        """
        self._unrecorded = 0
        record = {"etag": self.etag, "boot_id": self._boot_id, "written": [p.done for p in self._parts]}
        data = json.dumps(record).encode()
        try:
            os.pwrite(self._written_fd, data, 0)
            os.ftruncate(self._written_fd, len(data))
        except OSError as exc:
            _log.debug("could not record written bytes of %s: %s", self.part_path, exc)

    def _write_state(self) -> None:
        """Replace the `.part.json` sidecar with the synced counts; the caller holds the lock."""
        if self._written_fd >= 0:
            self._record_written()
        state = {
            "etag": self.etag,
            "size": self.size,
            "parts": [[p.start, p.end, p.synced] for p in self._parts],
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            # A lost sidecar only costs a restart of this file on the next run.
            _log.warning("could not save download state %s: %s", self.state_path, exc)

    def _wait_before_retry(self, failures: int, offset: int, reason: object) -> None:
        delay = RetryPolicy(self.settings.retries, self.settings.backoff_s).delay(failures)
        _log.warning("retrying s3://%s/%s from byte %d in %.1f s (retry %d of %d) after: %s",
                     self.bucket, self.key, offset, delay, failures, self.settings.retries, reason)
        self._halt.wait(delay)


def _boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _load_parts(state_path: Path, etag: str, size: int) -> list[_Part] | None:
    """Read the sidecar; return None when it is missing, unreadable or describes another object.

    Each part resumes from its written bytes when the machine has not
    restarted since the sidecar was saved, else from its synced bytes.
    """
    try:
        state = json.loads(state_path.read_text())
        if state["etag"] != etag or state["size"] != size:
            _log.info("discarding partial download %s: the object changed on the server", state_path)
            return None
        parts = [_Part(int(start), int(end), int(synced), int(synced)) for start, end, synced in state["parts"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _log.warning("discarding unreadable download state %s: %s", state_path, exc)
        return None

    covered = sum(p.length for p in parts)
    contiguous = all(a.end + 1 == b.start for a, b in zip(parts, parts[1:]))
    counts_valid = all(0 <= p.synced <= p.length for p in parts)
    if covered != size or not contiguous or (parts and parts[0].start != 0) or not counts_valid:
        _log.warning("discarding inconsistent download state %s", state_path)
        return None

    for part, written in zip(parts, _written_since_boot(_written_path(state_path), etag, len(parts))):
        part.done = max(part.synced, min(written, part.length))
    return parts


def _written_since_boot(path: Path, etag: str, count: int) -> list[int]:
    """Return the written counts of `.part.written` when they are from this boot, else zeros."""
    try:
        record = json.loads(path.read_bytes())
        written = [int(value) for value in record["written"]]
        usable = record["etag"] == etag and record["boot_id"] is not None and record["boot_id"] == _boot_id()
    except (OSError, ValueError, KeyError, TypeError):
        return [0] * count
    return written if usable and len(written) == count else [0] * count
