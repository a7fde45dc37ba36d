"""Warehouse benchmark: validate + exact and near dedup + vectors_clean (the clean stage's SQL files
on DuckDB, 2 cores) over synthetic staged partitions of 100k, 1M and 3M rows with 256-d vectors;
seconds per SQL file, peak memory, rows/s at each size, the scaling ratios, and the same work done
in pandas/numpy as a baseline at 100k. Fails unless every planted duplicate is found and the clean
rows are what remains. Writes bench/results/warehouse.json.

Synthetic rows: unit vectors, 3% exact duplicates (same md5), 3% near duplicates (dHash with 1-3
bits flipped, edge signature with noise); dHashes are uniformly random, which gives the LSH join
its smallest buckets (real dHashes are more alike; see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_report import PeakMemory, write_report  # noqa: E402  (bench/ is the script's directory)

from vecflow_model.contract import vector_checks  # noqa: E402

DAY = dt.date(2026, 3, 2)
DUP_RATE = 0.03
CHUNK = 250_000  # rows generated and appended at a time (a shard each)
CORES = 2
# the rows' model: the shipped one, whose card's embedding_dim (256) the clean stage expects of them;
# the clean stage runs as that model (Settings.with_model)
MODEL = "garment-arcface-v1"
# what the job measures of a red, plain garment (the clean stage reads no analyses; the tagging step does)
ANALYSES = '{"colour":{"hue":0.0,"saturation":0.85,"value":0.78,"warmth":0.65}}'


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


def synthetic_plan(n: int, seed: int = 0) -> dict:
    """The partition's scalars and where its duplicates are: 3% exact (a later row copies an earlier
    row's md5) and 3% near (a later row's dHash 1-3 bits from an earlier row's, its edge signature a
    noisy copy of that row's)."""
    import numpy as np

    rng = np.random.default_rng(seed)
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
    categories = np.array(["dress", "coat", "sneaker", "bag", "shirt"])[rng.integers(0, 5, n)]
    return {"n": n, "seed": seed, "md5": md5, "dhash": dhash, "near": near, "exact": exact, "categories": categories}


def synthetic_chunks(plan: dict):
    """The partition's rows as Arrow tables of up to CHUNK rows (one shard each), so 3M rows of 256-d
    vectors are never in memory at once. A near duplicate's edge signature is a noisy copy of its
    source row's, which is always in an earlier chunk (sources are in the first half)."""
    import numpy as np
    import pyarrow as pa

    n, rng = plan["n"], np.random.default_rng(plan["seed"] + 1)
    near_by_source = {int(row) - n // 2: int(row) for row in plan["near"]}
    source_edges: dict[int, np.ndarray] = {}

    def lists(matrix):
        flat = pa.array(matrix.astype(np.float64).ravel())
        return pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)), flat)

    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        size = len(rows)
        vectors = rng.standard_normal((size, 256), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        edges = rng.standard_normal((size, 128), dtype=np.float32)
        edges /= np.linalg.norm(edges, axis=1, keepdims=True)
        for i, row in enumerate(rows):
            if row in near_by_source:
                source_edges[near_by_source[row]] = edges[i]
            elif row in source_edges:
                noisy = source_edges.pop(row) + rng.standard_normal(128).astype(np.float32) * 0.02
                edges[i] = noisy / np.linalg.norm(noisy)
        norms, finite = vector_checks(vectors)
        yield pa.table(
            {
                "image_id": [f"{DAY:%Y%m%d}-{i:08d}" for i in rows],
                "content_md5": plan["md5"][rows].tolist(),
                "dhash": plan["dhash"][rows],
                "edge_signature": lists(edges),
                "source": ["shop_a"] * size,
                "listed_date": [DAY] * size,
                "catalog_category": plan["categories"][rows],
                "category": plan["categories"][rows],
                "model_version": [MODEL] * size,
                "dim": np.full(size, 256, dtype=np.int64),
                "embedding": lists(vectors),
                "embedding_norm": norms,
                "embedding_finite": finite,
                "analyses": [ANALYSES] * size,
                "run_id": ["bench"] * size,
                "shard_id": np.full(size, start // CHUNK, dtype=np.int64),
                "attempt": np.ones(size, dtype=np.int64),
                "embedded_at": pa.array([dt.datetime(2026, 3, 3, tzinfo=dt.UTC)] * size, pa.timestamp("us", tz="UTC")),
                "reused": np.zeros(size, dtype=bool),
            }
        )


def synthetic_rows(n: int, seed: int = 0):
    """The whole partition as one table (for the smaller runs and bench/quality.py), and what was planted."""
    import pyarrow as pa

    plan = synthetic_plan(n, seed)
    return pa.concat_tables(synthetic_chunks(plan)), {"exact": len(plan["exact"]), "near": len(plan["near"])}


class StepTimer:
    """Wraps a warehouse's run() to time each SQL file."""

    def __init__(self, warehouse):
        self.seconds: dict[str, float] = {}
        original = warehouse.run

        def timed(name, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original(name, *args, **kwargs)
            finally:
                self.seconds[name] = round(self.seconds.get(name, 0) + time.perf_counter() - started, 2)

        warehouse.run = timed


def warehouse_clean(plan: dict, settings) -> tuple[float, dict]:
    from vecflow.clean import clean_partition
    from vecflow.embed.load import append_vectors
    from vecflow.tagging import publish_taxonomy
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "bench.duckdb")
        bootstrap(warehouse)
        publish_taxonomy(warehouse, load_taxonomy())  # as loading a shard does: validation reads the categories
        for chunk in synthetic_chunks(plan):
            append_vectors(warehouse, chunk, DAY, "bench", shard_id=chunk["shard_id"][0].as_py(), attempt=1)
            del chunk
        steps = StepTimer(warehouse)
        with PeakMemory() as memory:
            started = time.perf_counter()
            clean_partition(settings, warehouse, DAY, "bench")
            seconds = time.perf_counter() - started
        counts = warehouse.query("summary_breakdown")
        found = {r.name: int(r.value) for r in counts.itertuples() if r.kind == "duplicates"}
        clean = int(warehouse.query("clean_counts", run_date=DAY, model_version=MODEL).iloc[0]["vectors_clean"])
    return seconds, {"vectors_clean": clean, "duplicates_found": found, "steps": steps.seconds, **memory.gib}


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--pandas-sizes", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    import pyarrow as pa

    from vecflow.config import settings

    s = settings().with_model(MODEL)
    runs = []
    for n in args.sizes:
        plan = synthetic_plan(n)
        planted = {"exact": len(plan["exact"]), "near": len(plan["near"])}
        seconds, result = warehouse_clean(plan, s)
        check_work(n, planted, result)
        run = {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "planted": planted, **result}
        if n in args.pandas_sizes:
            pandas_seconds = pandas_clean(pa.concat_tables(synthetic_chunks(plan)), s)
            run["pandas_seconds"] = round(pandas_seconds, 2)
            run["pandas_over_duckdb"] = round(pandas_seconds / seconds, 2)
        print(json.dumps(run), flush=True)
        runs.append(run)
    ratios = {}
    for small, large in itertools.pairwise(runs):
        ratio = large["seconds"] / small["seconds"]
        ratios[f"{large['rows']}/{small['rows']}"] = round(ratio, 2)
        print(f"{large['rows'] / small['rows']:.0f}x rows ({small['rows']} -> {large['rows']}) took {ratio:.2f}x time")
    by_rows = {r["rows"]: r["seconds"] for r in runs}
    if 1_000_000 in by_rows:
        print(f"1M rows: {by_rows[1_000_000]} s (goal <= 5 s on {CORES} cores)")
    if {1_000_000, 3_000_000} <= by_rows.keys():
        print(f"3M / 1M: {by_rows[3_000_000] / by_rows[1_000_000]:.2f}x (goal <= 3.6x)")
    write_report(
        "warehouse",
        {
            "settings": {
                "near_dup_max_hamming": s.clean.near_dup_max_hamming,
                "near_dup_min_edge_similarity": s.clean.near_dup_min_edge_similarity,
            },
            "cores": CORES,
            "runs": runs,
            "time_ratios": ratios,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
