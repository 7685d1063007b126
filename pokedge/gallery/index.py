"""FAISS search over a gallery, with top-k de-duplicated by card id."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

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
    """Exact inner-product search on unit-norm embeddings (cosine similarity)."""

    def __init__(self, gallery: Gallery, threads: int | None = None):
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        self.gallery = gallery
        self._index = faiss.IndexFlatIP(gallery.dim)
        self._index.add(np.ascontiguousarray(gallery.embeddings, dtype=np.float32))
        _log.debug("FAISS IndexFlatIP built: %d rows, dim %d", self._index.ntotal, gallery.dim)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Return, per query row, the k best distinct cards, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.gallery.dim:
            raise ValueError(f"queries must be float32 [N, {self.gallery.dim}], got {list(queries.shape)}")
        if len(queries) == 0:
            return []

        fetch = min(self._index.ntotal, max(k, 1) * OVERFETCH)
        scores, rows = self._index.search(queries, fetch)
        return [self._distinct(score_row, id_row, k) for score_row, id_row in zip(scores, rows)]

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
