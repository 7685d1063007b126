"""FAISS search over a gallery, with top-k de-duplicated by card id."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pokedge.gallery.index_choice import IndexSpec, build_index, choose_index, configure_search
from pokedge.gallery.store import Gallery

_log = logging.getLogger(__name__)

# Extra rows fetched per query so that k distinct cards survive de-duplication
# (the original database holds up to 3 scans of one card).
OVERFETCH = 4


@dataclass(frozen=True)
class Hit:
    card_id: str
    score: float  # cosine similarity, 1.0 is identical
    row: int


class GalleryIndex:
    """Inner-product search on unit-norm embeddings (cosine similarity).

    The index type comes from `spec`, else from `choose_index` by gallery
    size. Exact search runs on the gallery's own float32 array. An
    approximate index only proposes candidates: their scores are recomputed
    exactly from the gallery rows, so every reported score equals the exact
    cosine similarity. With `cache`, a built approximate index is stored on
    disk (see pokedge.gallery.index_cache) and loaded at the next start.
    """

    def __init__(self, gallery: Gallery, threads: int | None = None, spec: IndexSpec | None = None,
                 cache: bool = True, cache_folder: Path | None = None):
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        self.gallery = gallery
        self.spec = spec or choose_index(len(gallery), gallery.dim)
        # No copy when the gallery rows are already C-contiguous float32, as load_gallery returns them.
        self._vectors = np.ascontiguousarray(gallery.embeddings, dtype=np.float32)
        self._index = None if self.spec.exact else self._open_index(cache, cache_folder)
        _log.debug("gallery index ready: %s, %d rows, dim %d", self.spec.label(), len(self._vectors), gallery.dim)

    def _open_index(self, cache: bool, cache_folder: Path | None):
        def build():
            return build_index(self.spec, self._vectors)

        if not cache:
            return build()
        from pokedge.gallery.index_cache import load_or_build

        index = load_or_build(self.spec, self._vectors, build, cache_folder, self.gallery.digest)
        configure_search(index, self.spec)
        return index

    @property
    def ntotal(self) -> int:
        return len(self._vectors)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Return, per query row, the k best distinct cards, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.gallery.dim:
            raise ValueError(f"queries must be float32 [N, {self.gallery.dim}], got {list(queries.shape)}")
        if len(queries) == 0:
            return []

        fetch = min(self.ntotal, max(k, 1) * OVERFETCH)
        if self._index is None:
            scores, rows = self._search_exact(queries, fetch)
        else:
            scores, rows = self._search_rescored(queries, fetch)
        return [self._distinct(score_row, id_row, k) for score_row, id_row in zip(scores, rows)]

    def _search_exact(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        return faiss.knn(queries, self._vectors, fetch, metric=faiss.METRIC_INNER_PRODUCT)

    def _search_rescored(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Take the approximate index's candidates and rank them by exact inner product."""
        candidates = min(self.ntotal, max(fetch, self.spec.rerank))
        _, rows = self._index.search(queries, candidates)

        valid = rows >= 0
        gathered = self.gallery.rows(np.where(valid, rows, 0))  # [N, candidates, D]
        exact = np.einsum("ncd,nd->nc", gathered, queries)
        exact = np.where(valid, exact, -np.inf)

        order = np.argsort(-exact, axis=1, kind="stable")[:, :fetch]
        scores = np.take_along_axis(exact, order, axis=1)
        rows = np.where(np.isfinite(scores), np.take_along_axis(rows, order, axis=1), -1)
        return scores.astype(np.float32), rows

    def _distinct(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        for score, row in zip(scores, rows):
            if row < 0:
                break
            card_id = self.gallery.card_ids[row]
            if card_id in seen:
                continue
            seen.add(card_id)
            hits.append(Hit(card_id, float(score), int(row)))
            if len(hits) == k:
                break
        return hits
