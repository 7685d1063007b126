"""Search scaling: time per query, recall@1 against exact search, memory and load time per index type."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pokedge.bench.vectors import grow_gallery, make_queries
from pokedge.gallery.index import GalleryIndex
from pokedge.gallery.index_cache import cache_key
from pokedge.gallery.index_choice import IVFPQ_MIN_ROWS, IndexSpec, choose_index
from pokedge.gallery.store import Gallery

_log = logging.getLogger(__name__)

SIZES = (601, 17_592, 100_000, 1_000_000)
KINDS = ("flat", "fp16", "sq8", "hnsw", "hnsw_sq8", "ivfpq")
# Queries searched together, as one frame's crops are (a card in both
# orientations for up to three candidate quads).
QUERY_BATCH = 6
# FAISS threads while measuring: one, as in the pipeline, where the other cores embed and detect.
SEARCH_THREADS = 1
# From this size on, two kinds are left out to keep a --full run within memory and time.
# The float32 HNSW graph keeps a second float32 copy (3.3 GB at 1,000,000 rows), and fp16
# is a brute-force scan like sq8 with twice its memory.
LARGE_ROWS = 500_000
SKIPPED_WHEN_LARGE = {
    "hnsw": "float32 HNSW is left out at 500,000 rows and more (a second float32 copy); see hnsw_sq8",
    "fp16": "fp16 is left out at 500,000 rows and more (a brute-force scan like sq8, twice its memory)",
}


# Seconds of searching after which an index's timing stops (at 100 queries or more), so
# brute-force kinds at 1,000,000 rows do not take minutes. Recall then covers the queries searched.
QUERY_TIME_BUDGET_S = 15.0
MIN_TIMED_QUERIES = 100


def queries_for(rows: int, quick: bool) -> int:
    """Return how many queries measure recall: 1,000 resolve 0.001, 200 in quick mode."""
    return 200 if quick else 1_000


def run_search_scaling(base: np.ndarray, sizes: tuple[int, ...], kinds: tuple[str, ...], quick: bool = False,
                       seed: int = 0, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every index kind at every gallery size; return one record per (size, kind)."""
    import faiss

    faiss.omp_set_num_threads(SEARCH_THREADS)
    records: list[dict] = []
    say = progress or (lambda message: None)
    for rows in sizes:
        vectors = grow_gallery(base, rows, seed=seed)
        queries, _ = make_queries(vectors, queries_for(rows, quick), seed=seed + 1)
        exact_scores, exact_rows = _exact_top1(vectors, queries)
        chosen = choose_index(rows, vectors.shape[1])
        for kind in kinds:
            spec = chosen if kind == chosen.kind else IndexSpec(kind)
            say(f"search: {spec.label()} at {rows:,} rows")
            record = measure_index(spec, vectors, queries, exact_scores, exact_rows)
            record["chosen"] = spec == chosen
            records.append(record)
        del vectors
    return records


def measure_index(spec: IndexSpec, vectors: np.ndarray, queries: np.ndarray, exact_scores: np.ndarray,
                  exact_rows: np.ndarray) -> dict:
    """Build `spec` over `vectors`, reload it from disk and time GalleryIndex.search on `queries`."""
    rows = len(vectors)
    record = {"index": spec.label(), "kind": spec.kind, "n": rows}
    if spec.kind == "ivfpq" and rows < IVFPQ_MIN_ROWS:
        return _skipped(record, f"ivfpq needs at least {IVFPQ_MIN_ROWS:,} rows to train")
    if rows >= LARGE_ROWS and spec.kind in SKIPPED_WHEN_LARGE:
        return _skipped(record, SKIPPED_WHEN_LARGE[spec.kind])

    # NOTE: this gallery keeps its rows in memory, so re-scoring gathers them from
    # the array and the time excludes what a scan adds. A scan maps embeddings.npy
    # and reads re-scored rows with pread. At 17,592 rows with hnsw_sq8 that added
    # about 0.23 ms a query (batches of 6, loaded 2-core benchmark machine).
    gallery = Gallery(vectors, [str(i) for i in range(rows)], {}, {"producer": "bench"})
    with tempfile.TemporaryDirectory(prefix="pokedge-bench-index-") as folder:
        build_s, index = _timed(lambda: GalleryIndex(gallery, spec=spec, cache_folder=Path(folder)))
        load_s, index = _reload(gallery, spec, vectors, Path(folder))
        memory = _memory_bytes(spec, vectors, Path(folder))

    ms_per_query, top_rows, top_scores = _time_queries(index, queries)
    searched = len(top_rows)
    correct = (top_rows == exact_rows[:searched]) | (np.abs(top_scores - exact_scores[:searched]) <= 1e-5)
    record.update({
        "ms_per_query": round(ms_per_query, 4),
        "recall_at_1": round(float(correct.mean()), 4),
        "memory_mb": round(memory / 1e6, 2),
        "load_s": round(load_s, 4),
        "build_s": round(build_s, 3),
        "queries": searched,
    })
    return record


def _skipped(record: dict, reason: str) -> dict:
    """Return a record with every figure None and the reason it was not measured."""
    figures = dict.fromkeys(("ms_per_query", "recall_at_1", "memory_mb", "load_s", "build_s", "queries"))
    return {**record, **figures, "skipped": reason}


def _reload(gallery: Gallery, spec: IndexSpec, vectors: np.ndarray, folder: Path) -> tuple[float, GalleryIndex]:
    """Open the index as a process start does; return the seconds taken and the index.

    Exact search loads the float32 rows from .npy; an approximate index is
    read from the cache (hashing the rows included).
    """
    if not spec.exact:
        return _timed(lambda: GalleryIndex(gallery, spec=spec, cache_folder=folder))

    path = folder / "embeddings.npy"
    np.save(path, vectors)
    return _timed(lambda: GalleryIndex(Gallery(np.load(path), gallery.card_ids, {}, gallery.manifest), spec=spec))


def _memory_bytes(spec: IndexSpec, vectors: np.ndarray, folder: Path) -> int:
    """Return the bytes the search structure holds: the float32 rows for exact search, else the index file size."""
    if spec.exact:
        return int(vectors.nbytes)
    path = folder / f"{cache_key(np.ascontiguousarray(vectors), spec)}.faiss"
    return path.stat().st_size if path.is_file() else 0


def _time_queries(index: GalleryIndex, queries: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Search in batches of QUERY_BATCH until done or out of time; return ms per query and the top-1 rows and scores.

    The returned arrays cover the queries searched, the first ones in order.
    """
    top_rows = np.full(len(queries), -1, dtype=np.int64)
    top_scores = np.full(len(queries), -math.inf, dtype=np.float32)
    index.search(queries[:QUERY_BATCH], k=5)  # warm caches and the thread pool

    elapsed = 0.0
    searched = 0
    for start in range(0, len(queries), QUERY_BATCH):
        if elapsed > QUERY_TIME_BUDGET_S and searched >= MIN_TIMED_QUERIES:
            break
        batch = queries[start : start + QUERY_BATCH]
        began = time.perf_counter()
        hits = index.search(batch, k=5)
        elapsed += time.perf_counter() - began
        for offset, row_hits in enumerate(hits):
            if row_hits:
                top_rows[start + offset] = row_hits[0].row
                top_scores[start + offset] = row_hits[0].score
        searched = start + len(batch)
    return elapsed * 1000.0 / searched, top_rows[:searched], top_scores[:searched]


def _exact_top1(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    scores, rows = faiss.knn(queries, vectors, 1, metric=faiss.METRIC_INNER_PRODUCT)
    return scores[:, 0], rows[:, 0]


def _timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result
