"""Loading the recognizer for the daemon, and reloading it off the frame loop after a sync.

A reload re-resolves the model and gallery (the active synced version, or
the explicit paths) and builds a complete new Recognizer on a worker thread
while the frame loop keeps running on the old one. The loop swaps it in
between two frames, so no frame is dropped and the camera stays open. A
failed reload leaves the old recognizer running.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pokedge.recognition.pipeline import Recognizer
from pokedge.recognition.runtime import RuntimeSources, open_recognizer, resolve_sources

_log = logging.getLogger(__name__)

# A number read is reused while its card stays matched at the same place, until this many seconds pass unseen.
REUSE_READS_S = 1.0


@dataclass
class LoadedRecognizer:
    """A recognizer and the versions it was built from, as the scan log records them."""

    recognizer: Recognizer
    sources: RuntimeSources
    info: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.recognizer.backend.close()


def describe(recognizer: Recognizer, sources: RuntimeSources) -> dict[str, Any]:
    """Return the model and gallery versions: model id and sha256, gallery producer, build time and size."""
    contract = recognizer.backend.contract
    gallery = recognizer.gallery
    created = str(gallery.manifest.get("created_at", ""))
    return {
        "model": contract.model_id,
        "model_sha256": (contract.sha256 or "")[:12],
        "gallery": f"{gallery.producer}@{created}" if created else gallery.producer,
        "gallery_path": str(gallery.path or sources.gallery_dir),
        "gallery_rows": len(gallery),
        "gallery_cards": len(gallery.cards),
        "version": sources.version,
        "thresholds_calibrated": recognizer.thresholds.calibrated,
    }


def load_recognizer(model: Path | None, gallery: Path | None, data_dir: Path | None, backend: str,
                    threads: int | None, read_numbers: bool = True, strip_extensions: bool = True) -> LoadedRecognizer:
    """Resolve and open the recognizer; crops are kept so unknown cards can be saved as JPEGs."""
    sources = resolve_sources(model, gallery, data_dir)
    recognizer = open_recognizer(sources, backend, threads=threads, top_k=5, keep_crops=True,
                                 read_numbers=read_numbers, reuse_reads_s=REUSE_READS_S,
                                 strip_extensions=strip_extensions)
    return LoadedRecognizer(recognizer, sources, describe(recognizer, sources))


class Reloader:
    """Builds a new recognizer on a worker thread when asked; the frame loop collects it with `take`."""

    def __init__(self, load: Callable[[], LoadedRecognizer]):
        self._load = load
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False
        self._ready: LoadedRecognizer | None = None
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_duration_s: float | None = None

    @property
    def in_progress(self) -> bool:
        with self._lock:
            return self._thread is not None

    @property
    def idle(self) -> bool:
        """True when no reload runs and no finished one waits to be taken."""
        with self._lock:
            return self._thread is None and self._ready is None

    def request(self) -> None:
        """Start a reload, or queue one more if a reload is running (a sync finished meanwhile)."""
        with self._lock:
            if self._thread is not None:
                self._again = True
                _log.info("reload requested while one is running; another follows it")
                return
            self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            _log.info("reloading model and gallery")
            try:
                loaded = self._load()
            except Exception as exc:  # a bad sync must not stop the service; the old recognizer keeps running
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                _log.error("reload failed, keeping the running model and gallery: %s", self.last_error)
                loaded = None
            self.last_duration_s = round(time.monotonic() - started, 3)

            with self._lock:
                if loaded is not None:
                    stale, self._ready = self._ready, loaded
                    self.reloads += 1
                    self.last_error = None
                else:
                    stale = None
                again, self._again = self._again, False
                if not again:
                    self._thread = None
            if stale is not None:
                stale.close()  # a newer reload finished before the loop collected this one
            if not again:
                return

    def take(self) -> LoadedRecognizer | None:
        """Return the new recognizer once, when one is ready."""
        with self._lock:
            loaded, self._ready = self._ready, None
        return loaded

    def status(self) -> dict[str, Any]:
        return {"in_progress": self.in_progress, "reloads": self.reloads, "failures": self.failures,
                "last_error": self.last_error, "last_duration_s": self.last_duration_s}
