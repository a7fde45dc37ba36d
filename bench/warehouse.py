"""Warehouse benchmark: validate + exact and near dedup + vectors_clean (the clean stage's SQL files
on DuckDB) over synthetic staged partitions of 100k, 300k and 1M rows with 256-d vectors; rows/s at
each size, the scaling ratio, and the same work done in pandas/numpy as a baseline.
Writes bench/results/warehouse.json.

Synthetic rows: unit vectors, 3% exact duplicates (same md5), 3% near duplicates (dHash with 1-3
bits flipped, edge signature with noise); dHashes are uniformly random, which gives the LSH join
its smallest buckets (real dHashes are more alike; see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_report import write_report  # noqa: E402  (bench/ is the script's directory)

DAY = dt.date(2026, 3, 2)
DUP_RATE = 0.03
MODEL = "bench-v1"  # the rows' model; the clean stage runs as that model (Settings.with_model)


class BenchmarkDidNothing(RuntimeError):
    """The timed stage did not do the work the benchmark planted (rows out, duplicates found)."""


def check_work(n: int, planted: dict, result: dict) -> None:
    """Fails loudly unless the clean stage kept the rows it should and found every planted duplicate."""
    found = result["duplicates_found"]
    problems = []
    if found.get("md5", 0) != planted["exact"]:
        problems.append(f"{found.get('md5', 0)} exact duplicates found, {planted['exact']} planted")
    if found.get("dhash", 0) < planted["near"]:
        problems.append(f"{found.get('dhash', 0)} near duplicates found, {planted['near']} planted")
    expected_clean = n - sum(found.values())
    if result["vectors_clean"] != expected_clean or result["vectors_clean"] == 0:
        problems.append(f"{result['vectors_clean']} rows in vectors_clean, {expected_clean} expected")
    if problems:
        raise BenchmarkDidNothing(f"{n} rows: " + "; ".join(problems))


def synthetic_rows(n: int, seed: int = 0):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 256), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    edges = rng.standard_normal((n, 128), dtype=np.float32)
    edges /= np.linalg.norm(edges, axis=1, keepdims=True)
    dhash = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    md5 = np.array([f"{i:032x}" for i in range(n)], dtype=object)
    n_dup = int(n * DUP_RATE)
    exact = rng.choice(n // 2, n_dup, replace=False) + n // 2  # later rows copy earlier ones
    md5[exact] = md5[exact - n // 2]
    near = np.setdiff1d(rng.choice(n // 2, 2 * n_dup, replace=False) + n // 2, exact)[:n_dup]
    flips = rng.integers(0, 64, size=(len(near), 3))
    for k, row in enumerate(near):
        value = int(dhash[row - n // 2]) & (2**64 - 1)
        for bit in flips[k, : rng.integers(1, 4)]:
            value ^= 1 << int(bit)
        dhash[row] = value - 2**64 if value >= 2**63 else value
        noisy = edges[row - n // 2] + rng.standard_normal(128).astype(np.float32) * 0.02
        edges[row] = noisy / np.linalg.norm(noisy)
    categories = np.array(["dress", "coat", "sneaker", "bag", "shirt"])[rng.integers(0, 5, n)]

    def lists(matrix):
        flat = pa.array(matrix.astype(np.float64).ravel())
        return pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)), flat)

    table = pa.table(
        {
            "image_id": [f"{DAY:%Y%m%d}-{i:08d}" for i in range(n)],
            "content_md5": md5.tolist(),
            "dhash": dhash,
            "edge_signature": lists(edges),
            "source": ["shop_a"] * n,
            "listed_date": [DAY] * n,
            "catalog_category": categories,
            "category": categories,
            "category_confidence": np.full(n, 0.9),
            "model_version": [MODEL] * n,
            "dim": np.full(n, 256, dtype=np.int64),
            "embedding": lists(vectors),
            "embedding_norm": np.linalg.norm(vectors.astype(np.float64), axis=1),
            "embedding_finite": np.isfinite(vectors).all(axis=1),
            "color": ["red"] * n,
            "color_confidence": np.full(n, 0.9),
            "pattern": ["solid"] * n,
            "pattern_confidence": np.full(n, 0.9),
            "run_id": ["bench"] * n,
            "shard_id": np.zeros(n, dtype=np.int64),
            "attempt": np.ones(n, dtype=np.int64),
            "embedded_at": pa.array([dt.datetime(2026, 3, 3, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
            "reused": np.zeros(n, dtype=bool),
        }
    )
    return table, {"exact": len(exact), "near": len(near)}


def warehouse_clean(table, settings) -> tuple[float, dict]:
    from vecflow.clean import clean_partition
    from vecflow.embed.load import append_vectors
    from vecflow.warehouse import bootstrap
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "bench.duckdb")
        bootstrap(warehouse)
        append_vectors(warehouse, table, DAY, "bench", shard_id=0, attempt=1)
        started = time.perf_counter()
        clean_partition(settings, warehouse, DAY, "bench")
        seconds = time.perf_counter() - started
        counts = warehouse.query("summary_breakdown")
        found = {r.name: int(r.value) for r in counts.itertuples() if r.kind == "duplicates"}
        clean = len(warehouse.table("vectors_clean"))
    return seconds, {"vectors_clean": clean, "duplicates_found": found}


def pandas_clean(table, settings) -> float:
    """The same steps, naively in pandas/numpy: norms and checks, md5 first-seen, banded dHash join
    with Hamming and edge-cosine checks, and the clean frame."""
    import numpy as np
    import pandas as pd

    started = time.perf_counter()
    frame = table.to_pandas()
    vectors = np.stack(frame["embedding"].to_numpy())
    norms = np.linalg.norm(vectors, axis=1)
    valid = frame[(vectors.shape[1] == 256) & np.isfinite(vectors).all(axis=1) & (norms > 0.5) & (norms < 1.5)]
    valid = valid.sort_values("image_id")
    exact = valid.duplicated("content_md5")
    rest = valid[~exact].reset_index(drop=True)
    h = settings.clean.near_dup_max_hamming
    width = 64 // (h + 1)  # exact bands: h + 1 of them
    unsigned = rest["dhash"].to_numpy().view(np.uint64)
    bands = []
    for band in range(h + 1):
        bits = 64 - band * width if band == h else width
        value = (unsigned >> np.uint64(band * width)) & np.uint64((1 << bits) - 1)
        bands.append(pd.DataFrame({"row": np.arange(len(rest)), "band": band, "value": value}))
    bands = pd.concat(bands)
    pairs = bands.merge(bands, on=["band", "value"])
    pairs = pairs[pairs["row_y"] < pairs["row_x"]].drop_duplicates(["row_x", "row_y"])
    x, y = pairs["row_x"].to_numpy(), pairs["row_y"].to_numpy()
    hamming = np.array([bin(int(a) ^ int(b)).count("1") for a, b in zip(unsigned[x], unsigned[y])], dtype=int)
    edges = np.stack(rest["edge_signature"].to_numpy())
    cosine = np.einsum("ij,ij->i", edges[x], edges[y])
    near = set(x[(hamming <= h) & (cosine >= settings.clean.near_dup_min_edge_similarity)])
    clean = rest[~rest.index.isin(near)]
    seconds = time.perf_counter() - started
    print(f"pandas: {len(clean)} clean rows", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--pandas-sizes", type=int, nargs="+", default=[100_000, 300_000])
    args = parser.parse_args()
    from vecflow.config import settings

    s = settings().with_model(MODEL)
    runs = []
    for n in args.sizes:
        table, planted = synthetic_rows(n)
        seconds, result = warehouse_clean(table, s)
        check_work(n, planted, result)
        run = {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "planted": planted, **result}
        if n in args.pandas_sizes:
            pandas_seconds = pandas_clean(table, s)
            run["pandas_seconds"] = round(pandas_seconds, 2)
            run["pandas_over_duckdb"] = round(pandas_seconds / seconds, 2)
        print(json.dumps(run), flush=True)
        runs.append(run)
        del table
    smallest, largest = runs[0], runs[-1]
    scaling = (largest["seconds"] / smallest["seconds"]) / (largest["rows"] / smallest["rows"])
    print(
        f"{largest['rows'] / smallest['rows']:.0f}x rows took {largest['seconds'] / smallest['seconds']:.1f}x time "
        f"(time ratio / rows ratio = {scaling:.2f})"
    )
    write_report(
        "warehouse",
        {
            "settings": {
                "near_dup_max_hamming": s.clean.near_dup_max_hamming,
                "near_dup_min_edge_similarity": s.clean.near_dup_min_edge_similarity,
            },
            "runs": runs,
            "time_ratio_over_rows_ratio": round(scaling, 2),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
