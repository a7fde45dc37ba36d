"""Near-duplicate candidates in time linear in the rows, whatever the hashes look like.

Product photos on plain backgrounds share dHashes by the hundred (a day of 20,000 generated catalog
images has 16,000 distinct ones; the trousers 817 among 1,990), so a join on hash bands makes pairs
with the square of the rows. Edge signatures tell those garments apart (a near duplicate's cosine is
0.96-1.0, a different garment's nearest neighbour ~0.77), so candidates come from them: the pool is
cut by spherical k-means (in the signatures' COARSE_DIM principal directions), one or two levels,
into leaves of about LEAF_SIZE rows, each row in its nearest cell; each of today's rows looks in its nearest cell and in up to PROBES - 1 more whose
centroid is within MARGIN of that one (a cut between two rows ~0.04 apart in cosine rarely leaves
them in cells that far apart). In each leaf one matrix product compares today's rows with every
row, and a pair counts when the cosine reaches the threshold and the dHashes are within max_hamming
bits: the confirmation is exact, the cells can only miss a pair (0.35% of those an exhaustive
comparison finds on a generated day). Work is rows x ~3 LEAF_SIZE dot products (BLAS), not the
pairs of a hash bucket.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

LEAF_SIZE = 256  # rows a leaf compares today's rows with (each of today's rows: ~800 dot products with probes)
# a today row also looks in the cells whose centroid is within this cosine of its nearest one's (near
# duplicates of the generated catalog cut apart needed at most 0.036)
MARGIN = 0.04
PROBES = 3  # cells a today row looks in at most (its nearest and those within MARGIN of it)
MAX_CELLS = 256  # cells of one k-means cut
SAMPLE_PER_CELL = 40  # k-means trains on this many rows a centroid
# a cell with at most this many (today's row, row) pairs is compared whole: a day of 100 images
# against a 90-day lookback takes milliseconds, exactly, without k-means
EXHAUSTIVE_PAIRS = 1 << 24
COARSE_DIM = 32  # dimensions the cells are cut in
PCA_SAMPLE = 50_000
ASSIGN_BLOCK = 65536  # rows assigned to centroids at once
QUERY_BLOCK = 2048  # today's rows compared at once in a leaf (bounds the similarity block's memory)


@dataclass(frozen=True)
class Pool:
    """Rows in (listed_date, image_id) order: the earlier partitions' first, today's last (`first_today`
    on). A row can only match one before it, so the first match of a row is its lowest match."""

    edges: np.ndarray  # (n, d): float32 unit rows, or their int8 codes (quantize) with `scales`
    dhashes: np.ndarray  # (n,) uint64
    first_today: int
    # a code per row, one per image_id: an image listed again is not its own duplicate (as in
    # dedup_exact); None when every row is a different image
    images: np.ndarray | None = None
    scales: np.ndarray | None = None  # (n,) float32: a row is its int8 codes times its scale

    def unit(self, rows) -> np.ndarray:
        """The signatures at `rows` (indices or a slice) as float32 unit rows."""
        values = self.edges[rows].astype(np.float32, copy=False)
        return values if self.scales is None else values * self.scales[rows][:, None]


def quantize(unit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows as int8 codes and a scale a row (its largest component over 127): a quarter of the
    float32 pool, gathered and widened as fast as float32 (numpy's float16 is 6x slower), cosines
    within ~3e-3 (measured pair cosines sit at 0.96-1.0 for a 0.96 threshold; recall unchanged)."""
    scales = np.abs(unit_rows).max(axis=1) / 127
    codes = np.round(unit_rows / np.maximum(scales, 1e-12)[:, None]).astype(np.int8)
    return codes, scales.astype(np.float32)


def popcount(values: np.ndarray) -> np.ndarray:
    """Bits set in each uint64."""
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def first_matches(pool: Pool, max_hamming: int, min_similarity: float, seed: int = 0) -> np.ndarray:
    """For each of today's rows, the position of its first near duplicate in the pool (an earlier row
    within max_hamming dHash bits and at least min_similarity edge cosine), or -1."""
    n = len(pool.dhashes)
    best = np.full(n, n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    today = n - pool.first_today
    coarse = pool.unit(slice(None)) if n * today <= EXHAUSTIVE_PAIRS else _coarse(pool, rng)
    leaves = compared = 0
    # a cell: the rows placed in it (each row in its nearest cell) and today's rows that look in it
    stack = [(np.arange(n), np.arange(pool.first_today, n))]
    while stack:
        rows, queries = stack.pop()
        if not len(queries):
            continue
        small = len(rows) <= 3 * LEAF_SIZE or len(rows) * len(queries) <= EXHAUSTIVE_PAIRS
        cells = None if small else _split(coarse, rows, queries, rng)
        if cells is None:
            _match_leaf(pool, rows, queries, max_hamming, min_similarity, best)
            leaves += 1
            compared += len(rows) * len(queries)
        else:
            stack.extend(cells)
    log.info(
        "near duplicates: %d rows, %d of today's, %d leaves, %.0f comparisons a row of today's",
        n,
        today,
        leaves,
        compared / max(1, today),
    )
    found = best[pool.first_today :]
    return np.where(found < n, found, -1)


def _coarse(pool: Pool, rng: np.random.Generator) -> np.ndarray:
    """The rows in the COARSE_DIM principal directions of a sample, unit length, float32: where the
    cells are cut (4x cheaper to assign than the full signatures; near duplicates stay as close)."""
    import faiss

    n, dim = pool.edges.shape
    if dim <= COARSE_DIM or n <= 3 * LEAF_SIZE:
        return pool.unit(slice(None))
    pca = faiss.PCAMatrix(dim, COARSE_DIM)
    pca.train(pool.unit(np.sort(rng.choice(n, min(n, PCA_SAMPLE), replace=False))))
    coarse = np.empty((n, COARSE_DIM), dtype=np.float32)
    for start in range(0, n, ASSIGN_BLOCK):  # a block at a time: the pool's float32 copy is never whole
        coarse[start : start + ASSIGN_BLOCK] = pca.apply(pool.unit(slice(start, start + ASSIGN_BLOCK)))
    faiss.normalize_L2(coarse)
    return coarse


def _split(edges: np.ndarray, rows: np.ndarray, queries: np.ndarray, rng: np.random.Generator):
    """The cell cut by spherical k-means: each row into its nearest child, each query into its nearest
    and up to PROBES - 1 more within MARGIN of it. None when k-means cannot cut the rows (all but
    identical signatures), which makes them one leaf."""
    import faiss

    # straight into leaves when that is at most MAX_CELLS cells, else two levels of sqrt(leaves) each
    leaves = -(-len(rows) // LEAF_SIZE)
    cells = leaves if leaves <= MAX_CELLS else int(np.ceil(np.sqrt(leaves)))
    sample = edges[rng.choice(rows, min(len(rows), cells * SAMPLE_PER_CELL), replace=False)]
    kmeans = faiss.Kmeans(edges.shape[1], cells, niter=5, spherical=True, seed=int(rng.integers(2**31)))
    kmeans.train(sample)
    row_cell, _ = _nearest(edges, rows, kmeans.centroids, 1)
    rows_by_cell = _group(rows, row_cell[:, 0], cells)
    if max(len(part) for part in rows_by_cell) > 0.9 * len(rows):
        return None
    query_cells, similarity = _nearest(edges, queries, kmeans.centroids, PROBES)
    probe = similarity >= similarity[:, :1] - MARGIN
    queries_by_cell = _group(np.broadcast_to(queries[:, None], probe.shape)[probe], query_cells[probe], cells)
    return list(zip(rows_by_cell, queries_by_cell))


def _nearest(edges: np.ndarray, rows: np.ndarray, centroids: np.ndarray, count: int):
    """Each row's `count` nearest centroids, nearest first, and their cosines (one BLAS product a
    block of rows)."""
    count = min(count, len(centroids))
    cells = np.empty((len(rows), count), dtype=np.int64)
    similarity = np.empty((len(rows), count), dtype=np.float32)
    for start in range(0, len(rows), ASSIGN_BLOCK):
        block = edges[rows[start : start + ASSIGN_BLOCK]] @ centroids.T
        at = np.arange(len(block))
        for rank in range(count):  # argmax per rank: far cheaper than argpartition on narrow rows
            top = block.argmax(axis=1)
            cells[start : start + len(block), rank] = top
            similarity[start : start + len(block), rank] = block[at, top]
            block[at, top] = -np.inf
    return cells, similarity


def _group(values: np.ndarray, labels: np.ndarray, count: int) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    return [values[order[a:b]] for a, b in itertools.pairwise(bounds)]


def _match_leaf(pool: Pool, rows: np.ndarray, queries: np.ndarray, max_hamming: int, min_similarity: float, best):
    """The queries against every row of the leaf before them: the lowest match of each into `best`."""
    base = pool.unit(rows)
    for start in range(0, len(queries), QUERY_BLOCK):
        block = queries[start : start + QUERY_BLOCK]
        similar = pool.unit(block) @ base.T >= min_similarity
        # a today row is in its own leaf: its similarity with itself cleared, so `any` finds the few
        # rows with a match instead of every row (m < q below would drop the pair anyway)
        own = np.searchsorted(rows, block).clip(max=len(rows) - 1)
        itself = rows[own] == block
        similar[np.flatnonzero(itself), own[itself]] = False
        hits = np.flatnonzero(similar.any(axis=1))  # few rows have any: nonzero only on those
        q, m = np.nonzero(similar[hits])
        q, m = block[hits[q]], rows[m]
        keep = m < q
        if pool.images is not None:
            keep &= pool.images[m] != pool.images[q]
        q, m = q[keep], m[keep]
        close = popcount(pool.dhashes[q] ^ pool.dhashes[m]) <= max_hamming
        np.minimum.at(best, q[close], m[close])
