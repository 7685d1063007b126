"""On-disk cache of built FAISS indexes, so a large gallery's graph is built once, not at every start.

A cache entry is named by a hash of the digest of the gallery's embedding
bytes, the row count and dimension, the index parameters and the FAISS version, so a changed gallery, another index type
or a FAISS upgrade never loads a stale index. The folder is
POKEDGE_CACHE_DIR, else systemd's CACHE_DIRECTORY, else
$XDG_CACHE_HOME/pokedge, else ~/.cache/pokedge; indexes go in its `index`
subfolder. A cache that cannot be read or written is logged and skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from pokedge.gallery.index_choice import IndexSpec
from pokedge.gallery.store import embeddings_digest

_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Return the folder of cached indexes."""
    env = os.environ.get("POKEDGE_CACHE_DIR")
    if env:
        return Path(env) / "index"
    systemd = os.environ.get("CACHE_DIRECTORY")  # set by systemd's CacheDirectory=
    if systemd:
        return Path(systemd.split(":")[0]) / "index"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "pokedge" / "index"


def cache_key(vectors: np.ndarray, spec: IndexSpec, digest: str | None = None) -> str:
    """Return a hex key for `vectors` (float32 rows) searched with `spec`.

    `digest` is `embeddings_digest(vectors)` when the caller has it already,
    as a loaded Gallery does; without it the rows are hashed here.
    """
    import faiss

    key = hashlib.blake2b(digest_size=16)
    key.update(f"{spec!r}|{vectors.shape}|faiss {faiss.__version__}|".encode())
    key.update((digest or embeddings_digest(vectors)).encode())
    return key.hexdigest()


def load_or_build(spec: IndexSpec, vectors: np.ndarray, build: Callable[[], object], folder: Path | None = None,
                  digest: str | None = None):
    """Return the cached index for (`vectors`, `spec`), else call `build()` and store its result.

    `digest` is passed on to cache_key().
    """
    import faiss

    folder = folder or cache_dir()
    path = folder / f"{cache_key(vectors, spec, digest)}.faiss"
    if path.is_file():
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:  # FAISS reports a damaged or truncated file as RuntimeError
            _log.warning("cached index %s is unreadable (%s); rebuilding it", path, exc)
        else:
            _log.debug("loaded cached %s index from %s", spec.label(), path)
            return index

    index = build()
    _store(faiss, index, path)
    return index


def _store(faiss, index, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        _log.warning("could not cache the index at %s (%s); it will be rebuilt at the next start", path, exc)
        tmp.unlink(missing_ok=True)
        return
    _log.info("cached the %d-row index at %s", index.ntotal, path)
