"""The per-size gallery index rule, approximate search with exact re-scoring, and the index cache."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from pokedge.bench.vectors import grow_gallery, make_queries, synthetic_catalog
from pokedge.gallery.index import GalleryIndex
from pokedge.gallery.index_cache import cache_key
from pokedge.gallery.index_choice import (EXACT_MAX_ROWS, GRAPH_MAX_ROWS, IndexSpec, build_index, choose_index,
                                          ivf_probes, parse_spec)
from pokedge.gallery.store import Gallery

DIM = 768


def _gallery(vectors: np.ndarray) -> Gallery:
    return Gallery(vectors, [f"card-{i}" for i in range(len(vectors))], {}, {"producer": "test"})


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Build with one OpenMP thread: on a busy shared machine FAISS's spinning threads make builds slower."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12,000 clustered unit rows, 1,000 camera-like queries and each query's exact top-1 row."""
    vectors = grow_gallery(synthetic_catalog(DIM, seed=3, cards=1_500), 12_000, seed=4)
    queries, _ = make_queries(vectors, 1_000, seed=5)
    _, rows = faiss.knn(queries, vectors, 1, metric=faiss.METRIC_INNER_PRODUCT)
    return vectors, queries, rows[:, 0]


def _top1(index: GalleryIndex, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hits = [row_hits[0] for start in range(0, len(queries), 6) for row_hits in index.search(queries[start:start + 6], 5)]
    return np.array([h.row for h in hits]), np.array([h.score for h in hits])


def test_small_gallery_is_exact():
    assert choose_index(601).kind == "flat"
    assert choose_index(EXACT_MAX_ROWS).exact


def test_catalog_size_uses_graph():
    assert choose_index(17_592).kind == "hnsw_sq8"
    assert choose_index(GRAPH_MAX_ROWS).kind == "hnsw_sq8"


def test_large_gallery_uses_ivfpq():
    for rows in (100_000, 1_000_000):
        spec = choose_index(rows)
        assert spec.kind == "ivfpq", rows
        assert spec.pq_m == DIM // 8, rows
        assert spec.rerank >= 20, rows


def test_ivf_probes_five_percent():
    assert ivf_probes(1_264) == 64
    assert ivf_probes(4_000) == 200


def test_ivfpq_needs_dim_divisible_by_8():
    assert choose_index(100_000, dim=770).kind == "hnsw_sq8"


@pytest.mark.parametrize("rows", [17_592, 1_000_000])
def test_chosen_index_recall_vs_exact(clustered, tmp_path, rows):
    vectors, queries, exact_rows = clustered
    spec = choose_index(rows)
    index = GalleryIndex(_gallery(vectors), spec=spec, cache_folder=tmp_path)

    found, _ = _top1(index, queries)
    recall = float((found == exact_rows).mean())
    assert recall >= 0.999, f"{spec.label()} (the choice at {rows:,} rows) recall@1 {recall} on 12,000 clustered rows"


def test_rescored_scores_are_exact(clustered, tmp_path):
    vectors, queries, _ = clustered
    index = GalleryIndex(_gallery(vectors), spec=IndexSpec("hnsw_sq8"), cache_folder=tmp_path)

    rows, scores = _top1(index, queries[:60])
    expected = np.einsum("nd,nd->n", vectors[rows], queries[:60])
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_exact_search_matches_flat_index(clustered):
    vectors, queries, _ = clustered
    index = GalleryIndex(_gallery(vectors[:3_000]))
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors[:3_000])

    hits = index.search(queries[:8], k=5)
    scores, rows = flat.search(queries[:8], 5)
    assert [[h.row for h in row_hits] for row_hits in hits] == rows.tolist()
    np.testing.assert_allclose([[h.score for h in row_hits] for row_hits in hits], scores, atol=1e-5)


def test_exact_index_keeps_no_copy(clustered):
    vectors = np.ascontiguousarray(clustered[0][:2_000])
    index = GalleryIndex(_gallery(vectors))
    assert index._vectors is vectors
    assert index._index is None


def test_cache_is_reused(clustered, tmp_path):
    vectors = clustered[0][:3_000]
    spec = IndexSpec("hnsw_sq8")
    first = GalleryIndex(_gallery(vectors), spec=spec, cache_folder=tmp_path)
    cached = tmp_path / f"{cache_key(np.ascontiguousarray(vectors), spec)}.faiss"
    assert cached.is_file()

    second = GalleryIndex(_gallery(vectors), spec=spec, cache_folder=tmp_path)
    queries = vectors[:6]
    assert [h.row for h in second.search(queries)[0]] == [h.row for h in first.search(queries)[0]]


def test_damaged_cache_is_rebuilt(clustered, tmp_path, caplog):
    vectors = clustered[0][:2_000]
    spec = IndexSpec("sq8")
    cached = tmp_path / f"{cache_key(np.ascontiguousarray(vectors), spec)}.faiss"
    cached.write_bytes(b"not a faiss index")

    with caplog.at_level(logging.WARNING):
        index = GalleryIndex(_gallery(vectors), spec=spec, cache_folder=tmp_path)
    assert "unreadable" in caplog.text
    assert index.search(vectors[:1])[0][0].row == 0


def test_changed_gallery_gets_new_cache_key(clustered):
    vectors = np.ascontiguousarray(clustered[0][:1_000])
    changed = vectors.copy()
    changed[0, 0] += 1e-3
    assert cache_key(vectors, IndexSpec("hnsw_sq8")) != cache_key(changed, IndexSpec("hnsw_sq8"))
    assert cache_key(vectors, IndexSpec("hnsw_sq8")) != cache_key(vectors, IndexSpec("sq8"))


@pytest.mark.parametrize("kind", ["fp16", "sq8", "hnsw"])
def test_other_kinds_find_the_exact_top1(clustered, tmp_path, kind):
    vectors, queries, exact_rows = clustered
    index = GalleryIndex(_gallery(vectors[:4_000]), spec=IndexSpec(kind), cache=False)
    _, exact = faiss.knn(queries[:200], vectors[:4_000], 1, metric=faiss.METRIC_INNER_PRODUCT)

    rows, _ = _top1(index, queries[:200])
    assert float((rows == exact[:, 0]).mean()) >= 0.99


def test_ivfpq_rejects_small_gallery(clustered):
    with pytest.raises(ValueError, match="at least 10000 rows"):
        build_index(IndexSpec("ivfpq"), clustered[0][:2_000])


def test_parse_spec():
    assert parse_spec("flat") == IndexSpec("flat")
    assert parse_spec("hnsw_sq8:ef_search=128,hnsw_m=16") == IndexSpec("hnsw_sq8", hnsw_m=16, ef_search=128)


@pytest.mark.parametrize("text, message", [
    ("annoy", "unknown index kind"),
    ("hnsw:ef=3", "unknown index parameter"),
    ("hnsw:ef_search=many", "must be an integer"),
])
def test_parse_spec_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(text)
