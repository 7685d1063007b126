"""The FAISS index type for each gallery size, and how each type is built.

The rule, from the search-scaling figures of `pokedge bench` (recorded in
docs/benchmarks.md):

- Up to EXACT_MAX_ROWS rows, search is exact: inner product over the
  gallery's own float32 array, with no second copy held by FAISS.
- Up to GRAPH_MAX_ROWS rows, an HNSW graph over 8-bit scalar-quantized
  vectors proposes candidates: at the 17,592-card catalog it was the fastest
  kind measured and builds in seconds.
- Above that, IVF-PQ proposes them: at 100,000 and 1,000,000 rows it was
  faster than the graph, a ninth of its memory, and the graph's recall@1 fell
  below 0.999 at 1,000,000 rows.

Approximate candidates are re-scored exactly against the float32 gallery
rows (see GalleryIndex), so every score equals the exact cosine similarity
and the calibrated thresholds stay valid. The other kinds (fp16, sq8, hnsw)
can be chosen explicitly; the benchmark measures all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

KINDS = ("flat", "fp16", "sq8", "hnsw", "hnsw_sq8", "ivfpq")
EXACT_KINDS = ("flat",)

# Largest gallery searched exactly. Exact search costs about 0.09 us per row
# and query on the 2-core benchmark machine (1.5 ms at 17,592 rows), so up to
# 8,000 rows it stays under about a tenth of one card's embedding time.
EXACT_MAX_ROWS = 8_000

# Largest gallery searched with hnsw_sq8; IVF-PQ above.
# NOTE: the crossover lies between the measured 17,592 rows (graph faster)
# and 100,000 rows (IVF-PQ faster); 50,000 is not measured.
GRAPH_MAX_ROWS = 50_000

# IVF-PQ needs enough rows to train its coarse quantizer and codebooks.
IVFPQ_MIN_ROWS = 10_000


@dataclass(frozen=True)
class IndexSpec:
    """A FAISS index type and its parameters."""

    kind: str = "flat"
    hnsw_m: int = 32  # graph links per node
    ef_construction: int = 80
    ef_search: int = 96
    rerank: int = 64  # candidates per query re-scored exactly (approximate kinds only)
    nlist: int = 0  # IVF lists; 0 picks 4 * sqrt(rows)
    pq_m: int = 96  # PQ sub-quantizers; must divide the dimension
    nprobe: int = 0  # IVF lists probed per query; 0 probes about 5 % of them, at least 64

    @property
    def exact(self) -> bool:
        return self.kind in EXACT_KINDS

    def label(self) -> str:
        """Return a short name with the parameters that change speed or recall."""
        if self.kind in ("hnsw", "hnsw_sq8"):
            return f"{self.kind}(M={self.hnsw_m},ef={self.ef_search})"
        if self.kind == "ivfpq":
            return f"ivfpq(m={self.pq_m},nprobe={self.nprobe or '5%'})"
        return self.kind


def choose_index(rows: int, dim: int = 768) -> IndexSpec:
    """Return the index pokedge uses for a gallery of `rows` rows of `dim` values (see the module docstring)."""
    if rows <= EXACT_MAX_ROWS:
        return IndexSpec("flat")
    if rows <= GRAPH_MAX_ROWS or rows < IVFPQ_MIN_ROWS or dim % 8:
        return IndexSpec("hnsw_sq8")
    # 8 dimensions per sub-quantizer: 96 one-byte codes a row at dim 768.
    return IndexSpec("ivfpq", pq_m=dim // 8)


def parse_spec(text: str) -> IndexSpec:
    """Parse "kind" or "kind:key=value,..." (for example "hnsw:ef_search=128") into an IndexSpec."""
    kind, _, params = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    spec = IndexSpec(kind)
    for item in filter(None, params.split(",")):
        key, _, value = item.partition("=")
        if key not in IndexSpec.__dataclass_fields__ or key == "kind":
            raise ValueError(f"unknown index parameter {key!r} in {text!r}")
        try:
            spec = replace(spec, **{key: int(value)})
        except ValueError:
            raise ValueError(f"index parameter {key} must be an integer, got {value!r}") from None
    return spec


def build_index(spec: IndexSpec, vectors: np.ndarray, seed: int = 0):
    """Build and fill the FAISS index for an approximate `spec` over unit-norm float32 `vectors`.

    Exact search needs no index object (see GalleryIndex), so "flat" builds an
    IndexFlatIP only for callers that want one, such as the benchmark.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows, dim = vectors.shape
    index = _new_index(faiss, spec, rows, dim)

    if not index.is_trained:
        index.train(_training_sample(vectors, spec, rows, seed))
    index.add(vectors)
    configure_search(index, spec)
    return index


def configure_search(index, spec: IndexSpec) -> None:
    """Set the search-time parameters (efSearch, nprobe) from `spec`, also on an index read from the cache."""
    import faiss

    if spec.kind in ("hnsw", "hnsw_sq8"):
        faiss.downcast_index(index).hnsw.efSearch = max(spec.ef_search, spec.rerank)
    elif spec.kind == "ivfpq":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(ivf.nlist, spec.nprobe or ivf_probes(ivf.nlist))


def _new_index(faiss, spec: IndexSpec, rows: int, dim: int):
    ip = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "fp16":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip)
    if spec.kind == "sq8":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, ip)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, ip)
        index.hnsw.efConstruction = spec.ef_construction
        return index
    if spec.kind == "hnsw_sq8":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, spec.hnsw_m, ip)
        index.hnsw.efConstruction = spec.ef_construction
        return index
    if spec.kind == "ivfpq":
        return _new_ivfpq(faiss, spec, rows, dim)
    raise ValueError(f"unknown index kind {spec.kind!r}; choose one of {', '.join(KINDS)}")


def _new_ivfpq(faiss, spec: IndexSpec, rows: int, dim: int):
    if rows < IVFPQ_MIN_ROWS:
        raise ValueError(f"ivfpq needs at least {IVFPQ_MIN_ROWS} rows to train, got {rows}; use flat or hnsw_sq8")
    if dim % spec.pq_m:
        raise ValueError(f"ivfpq pq_m={spec.pq_m} must divide the dimension {dim}")
    nlist = spec.nlist or ivf_lists(rows)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, spec.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    return index


def ivf_lists(rows: int) -> int:
    """Return the IVF list count: 4 * sqrt(rows), the usual FAISS starting point.

    It is capped so that every list gets the 39 training rows FAISS requires
    without a warning.
    """
    return max(16, min(int(4 * math.sqrt(rows)), rows // 39))


def ivf_probes(nlist: int) -> int:
    """Return the lists probed per query: about 5 % of them, at least 64.

    On 100,000 clustered rows grown from the shipped gallery, 32 of 1,264
    lists reached recall@1 0.998 and 64 reached 1.0, even with 256 re-scored
    candidates: the misses were true neighbours in lists not probed.
    """
    return max(64, nlist // 20)


def _training_sample(vectors: np.ndarray, spec: IndexSpec, rows: int, seed: int) -> np.ndarray:
    """Return 64 rows per IVF list (at least 20,000) for training, drawn without replacement, or all rows."""
    wanted = max(20_000, 64 * (spec.nlist or ivf_lists(rows)))
    if rows <= wanted:
        return vectors
    picked = np.random.default_rng(seed).choice(rows, size=wanted, replace=False)
    return vectors[np.sort(picked)]


def index_bytes(index) -> int:
    """Return the serialized size of a FAISS index, a close estimate of its memory."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)
