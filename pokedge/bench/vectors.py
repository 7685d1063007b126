"""Synthetic gallery embeddings with realistic clustering, for search scaling.

Larger galleries grow from a base set: the real gallery's embeddings when one
is available, else a synthetic catalog of sets and cards. Cards of one set
share a direction, as scans of one set share their frame and print style.
Each new row is a base row moved along directions drawn from the base set
itself, so the new rows stay in the subspace real embeddings occupy. The
distance it moves is chosen so that a new row is as similar to its parent as
two neighbouring real cards are to each other.
"""

from __future__ import annotations

import numpy as np

SYNTHETIC_SETS = 21
SYNTHETIC_CARDS = 2_726
# Cosine similarity of a query (a camera view) to the gallery row of its card:
# about the top-1 score of a clean match in the pipeline.
QUERY_COSINE = 0.9
CHUNK_ROWS = 100_000


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def synthetic_catalog(dim: int, seed: int = 0, sets: int = SYNTHETIC_SETS, cards: int = SYNTHETIC_CARDS) -> np.ndarray:
    """Return `cards` unit rows in `sets` clusters; two cards of one set have cosine about 0.5."""
    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.standard_normal((sets, dim)))
    members = rng.integers(0, sets, size=cards)
    offsets = rng.standard_normal((cards, dim)) / np.sqrt(dim)
    return normalize_rows(centres[members] + offsets)


def neighbour_cosine(base: np.ndarray, sample: int = 2_000, seed: int = 0) -> float:
    """Return the median cosine between a base row and its nearest other row (on up to `sample` rows)."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(base), size=min(sample, len(base)), replace=False)
    similarity = base[picked] @ base.T
    similarity[np.arange(len(picked)), picked] = -np.inf
    return float(np.median(similarity.max(axis=1)))


def grow_gallery(base: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """Return `rows` unit rows: the base rows first (cut when `rows` is smaller), then new rows grown from them."""
    base = normalize_rows(base)
    if rows <= len(base):
        return np.ascontiguousarray(base[:rows])

    rng = np.random.default_rng(seed)
    distance = _distance_for_cosine(neighbour_cosine(base, seed=seed))
    centred = base - base.mean(axis=0)
    out = np.empty((rows, base.shape[1]), dtype=np.float32)
    out[: len(base)] = base

    for start in range(len(base), rows, CHUNK_ROWS):
        count = min(CHUNK_ROWS, rows - start)
        parents = base[rng.integers(0, len(base), size=count)]
        out[start : start + count] = move_rows(parents, centred, distance, rng)
    return out


def make_queries(gallery: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return `count` camera-like queries (cosine QUERY_COSINE to their source row) and the source rows."""
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, len(gallery), size=count)
    sample = gallery[rng.integers(0, len(gallery), size=min(len(gallery), 4_096))]
    centred = sample - sample.mean(axis=0)
    queries = move_rows(gallery[sources], centred, _distance_for_cosine(QUERY_COSINE), rng)
    return queries, sources


def move_rows(rows: np.ndarray, directions: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """Move each unit row by `distance` along a random mix of `directions` plus 20 % isotropic noise; renormalize."""
    mix = rng.standard_normal((len(rows), 8)).astype(np.float32)
    picks = rng.integers(0, len(directions), size=(len(rows), 8))
    step = np.einsum("nk,nkd->nd", mix, directions[picks])
    step = 0.8 * normalize_rows(step) + 0.2 * normalize_rows(rng.standard_normal(rows.shape).astype(np.float32))
    return normalize_rows(rows + distance * normalize_rows(step))


def _distance_for_cosine(cosine: float) -> float:
    """Return the length r of a step orthogonal to a unit row that leaves cosine 1 / sqrt(1 + r^2)."""
    cosine = min(max(cosine, 0.05), 0.999)
    return float(np.sqrt(1.0 / cosine**2 - 1.0))
