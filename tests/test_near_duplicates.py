"""Near-duplicate candidates from edge signatures: exact confirmation, few misses at cell borders,
and work that grows with the rows when every image shares one dHash."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from vecflow import near_duplicates
from vecflow.clean import _PoolBuilder, _unit_rows
from vecflow.near_duplicates import Pool, first_matches, popcount, quantize

MAX_HAMMING, MIN_SIMILARITY = 5, 0.96


def clustered_pool(n: int, first_today: int, seed: int = 0, shared_dhash: bool = False):
    """Garments around 30 prototypes (neighbours at cosine ~0.75, as generated catalog images are),
    dHashes a bit or two from their prototype's (or all one value), and 2% near duplicates: copies of
    an earlier row at cosine ~0.98 with up to 3 bits flipped. Returns the pool and the planted rows."""
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((30, 128)).astype(np.float32)
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    hashes = rng.integers(0, 2**63, 30, dtype=np.int64).view(np.uint64)
    of = rng.integers(0, 30, n)
    edges = prototypes[of] + rng.standard_normal((n, 128)).astype(np.float32) * np.float32(np.sqrt(0.33 / 128))
    dhashes = hashes[of] ^ (np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64))
    if shared_dhash:
        dhashes[:] = hashes[0]
    planted = rng.choice(np.arange(first_today, n), min(n - first_today, n // 50), replace=False)
    for row in planted:
        source = rng.integers(0, row)
        edges[row] = edges[source] + rng.standard_normal(128).astype(np.float32) * np.float32(np.sqrt(0.04 / 128))
        dhashes[row] = dhashes[source] ^ (np.uint64(1) << np.uint64(rng.integers(0, 64)))
    edges /= np.linalg.norm(edges, axis=1, keepdims=True)
    return Pool(edges, dhashes, first_today), planted


def exhaustive_first_matches(pool: Pool) -> np.ndarray:
    """Every pair compared: the reference the cells approximate."""
    similar = pool.edges[pool.first_today :] @ pool.edges.T >= MIN_SIMILARITY
    found = np.full(len(pool.dhashes) - pool.first_today, -1)
    for i, row in enumerate(range(pool.first_today, len(pool.dhashes))):
        earlier = np.flatnonzero(similar[i, :row])
        close = earlier[popcount(pool.dhashes[earlier] ^ pool.dhashes[row]) <= MAX_HAMMING]
        found[i] = close[0] if len(close) else -1
    return found


@pytest.fixture
def small_leaves(monkeypatch):
    monkeypatch.setattr(near_duplicates, "LEAF_SIZE", 24)  # two levels of k-means on a few thousand rows
    monkeypatch.setattr(near_duplicates, "EXHAUSTIVE_PAIRS", 0)  # and no cell compared whole for its size


def test_matches_are_exact_and_cell_borders_miss_few(small_leaves):
    pool, planted = clustered_pool(6000, first_today=2000)
    found = first_matches(pool, MAX_HAMMING, MIN_SIMILARITY)
    reference = exhaustive_first_matches(pool)
    rows = np.flatnonzero(found >= 0)
    # every match found is a near duplicate by the rule, and none is before the first one
    today = rows + pool.first_today
    assert (np.einsum("ij,ij->i", pool.edges[today], pool.edges[found[rows]]) >= MIN_SIMILARITY).all()
    assert (popcount(pool.dhashes[today] ^ pool.dhashes[found[rows]]) <= MAX_HAMMING).all()
    assert (found[rows] < today).all() and (found[rows] >= reference[rows]).all()
    expected = np.flatnonzero(reference >= 0)
    assert len(expected) >= len(planted)
    assert np.isin(expected, rows).mean() >= 0.97
    assert (found[expected] == reference[expected]).mean() >= 0.97


def test_work_grows_with_the_rows_when_every_image_shares_a_dhash(small_leaves, monkeypatch):
    compared = []
    match_leaf = near_duplicates._match_leaf

    def counting(pool, rows, queries, *args):
        compared.append(len(rows) * len(queries))
        return match_leaf(pool, rows, queries, *args)

    monkeypatch.setattr(near_duplicates, "_match_leaf", counting)
    per_row = []
    for n in (8000, 32000):
        compared.clear()
        pool, planted = clustered_pool(n, first_today=n // 2, shared_dhash=True)
        found = first_matches(pool, MAX_HAMMING, MIN_SIMILARITY)
        assert np.isin(planted - pool.first_today, np.flatnonzero(found >= 0)).mean() >= 0.97
        per_row.append(sum(compared) / (n - pool.first_today))
    # a hash-band join compares every pair of the one bucket: n / 2 a row, 4x more at 4x the rows
    assert per_row[1] < 1.5 * per_row[0] and per_row[1] < near_duplicates.PROBES * 3 * near_duplicates.LEAF_SIZE


def test_a_small_day_is_compared_exhaustively():
    pool, _ = clustered_pool(3000, first_today=2900)  # 100 images against a lookback of 2,900
    assert (first_matches(pool, MAX_HAMMING, MIN_SIMILARITY) == exhaustive_first_matches(pool)).all()


def test_a_quantized_pool_matches_as_the_full_one_but_at_the_threshold():
    """The clean stage keeps signatures as int8 codes and a scale a row: a match may change only
    where a pair's cosine is within the codes' rounding of the threshold."""
    pool, planted = clustered_pool(3000, first_today=2000)
    codes, scales = quantize(pool.edges)
    quantized = Pool(codes, pool.dhashes, pool.first_today, scales=scales)
    assert np.abs(quantized.unit(slice(None)) - pool.edges).max() < 0.01
    full = first_matches(pool, MAX_HAMMING, MIN_SIMILARITY)
    found = first_matches(quantized, MAX_HAMMING, MIN_SIMILARITY)
    assert (found >= 0).sum() >= 0.9 * len(planted)
    for row in np.flatnonzero(found != full) + pool.first_today:
        other = [m for m in (full[row - pool.first_today], found[row - pool.first_today]) if m >= 0]
        cosines = pool.edges[other] @ pool.edges[row]
        assert (np.abs(cosines - MIN_SIMILARITY) < 5e-3).any()


def test_an_image_listed_again_is_not_its_own_duplicate():
    pool, _ = clustered_pool(300, first_today=200)
    again = Pool(
        np.vstack([pool.edges, pool.edges[5]]),
        np.append(pool.dhashes, pool.dhashes[5]),
        200,
        np.append(np.arange(300), 5),
    )
    found = first_matches(again, MAX_HAMMING, MIN_SIMILARITY)
    assert found[-1] != 5
    assert first_matches(Pool(again.edges, again.dhashes, 200), MAX_HAMMING, MIN_SIMILARITY)[-1] == 5


def test_no_rows_of_today_match_nothing():
    pool, _ = clustered_pool(500, first_today=500)
    assert first_matches(pool, MAX_HAMMING, MIN_SIMILARITY).size == 0


def test_signatures_of_different_lengths_are_an_error_naming_them():
    signatures = pa.chunked_array([pa.array([[1.0, 0.0], [0.0, 1.0, 0.0]])])
    with pytest.raises(ValueError, match=r"lengths \[2, 3\]"):
        _unit_rows(signatures)
    unit = _unit_rows(pa.chunked_array([pa.array([[3.0, 4.0]]), pa.array([[0.0, 2.0]])]))
    assert unit.dtype == np.float32 and np.allclose(unit, [[0.6, 0.8], [0.0, 1.0]])


def test_pool_batches_go_to_their_positions_and_rows_without_a_signature_are_left_out():
    """Batches arrive in any order, each row written at the position the warehouse numbered it with;
    a numbered row that never arrives (no signature) is left out, and image_ids follow the rows."""
    day = dt.date(2026, 3, 2)

    def batch(positions, image_ids, dates, signatures):
        return pa.record_batch(
            {
                "position": pa.array(positions, pa.int64()),
                "image_code": pa.array(positions, pa.int64()),
                "image_id": pa.array(image_ids),
                "listed_date": pa.array(dates, pa.date32()),
                "dhash": pa.array(positions, pa.int64()),
                "edge_signature": pa.array(signatures),
            }
        )

    builder = _PoolBuilder(4)
    builder.add(batch([3, 0], ["d", "a"], [day, day - dt.timedelta(1)], [[0.0, 2.0], [3.0, 4.0]]), day)
    builder.add(batch([1], ["b"], [day - dt.timedelta(1)], [[1.0, 0.0]]), day)  # position 2 never comes
    pool, image_ids = builder.build()
    assert image_ids.to_pylist() == ["a", "b", "d"] and pool.first_today == 2
    assert pool.edges.dtype == np.int8 and pool.dhashes.tolist() == [0, 1, 3]
    assert np.allclose(pool.unit(slice(None)), [[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], atol=1e-2)
    with pytest.raises(ValueError, match=r"lengths \[2, 3\]"):
        builder.add(batch([2], ["c"], [day], [[1.0, 0.0, 0.0]]), day)
