"""Quality benchmark: the vector_log Great Expectations suite (vecflow.quality) on a synthetic 1M-row
partition, on 2 cores: a clean partition, and one with 0.1% bad md5s and 0.1% norms out of range.
Each run includes the Data Docs update. Also the time to read such a partition from DuckDB for the
suite (select_quality_vector_log.sql: the embedding job's dim and norm, not the vectors).
Writes bench/results/quality.json.

For the GX runs the embeddings (256 floats) are generated and reduced to their length and L2 norm in
numpy, as the SQL file does in the warehouse; GX never sees the vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_report import write_report  # noqa: E402  (bench/ is the script's directory)

CORES = 2
DIM = 256
CHUNK = 100_000
DEFECT_RATE = 0.001


def synthetic_vectors(n: int, seed: int = 0):
    """The vector_log suite's columns for n unit vectors, generated in chunks to bound memory."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    norms = []
    for start in range(0, n, CHUNK):
        vectors = rng.standard_normal((min(CHUNK, n - start), DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        norms.append(np.linalg.norm(vectors.astype(np.float64), axis=1))
    return pd.DataFrame(
        {
            "image_id": [f"img-{i:08d}" for i in range(n)],
            "content_md5": [f"{i:032x}" for i in range(n)],
            "dim": np.full(n, DIM, dtype=np.int64),
            "embedding_length": np.full(n, DIM, dtype=np.int64),
            "embedding_norm": np.concatenate(norms),
        }
    )


def with_defects(vectors, seed: int = 1):
    import numpy as np

    rng = np.random.default_rng(seed)
    bad = vectors.copy()
    count = int(len(bad) * DEFECT_RATE)
    bad.loc[rng.choice(len(bad), count, replace=False), "content_md5"] = "not-an-md5"
    bad.loc[rng.choice(len(bad), count, replace=False), "embedding_norm"] = 3.0
    return bad


def validate(vectors) -> tuple[float, dict]:
    from vecflow.quality import run_suites, vector_log_suite

    suite_input = vector_log_suite(vectors, catalog_rows=len(vectors), embed_rejects=0, expected_dim=DIM)
    with tempfile.TemporaryDirectory() as docs:
        started = time.perf_counter()
        summary = run_suites({"vector_log": suite_input}, Path(docs), "bench")["vector_log"]
        seconds = time.perf_counter() - started
    return seconds, {
        "success": summary["success"],
        "evaluated_expectations": summary["evaluated_expectations"],
        "failed_expectations": len(summary["failed_expectations"]),
    }


def duckdb_read(rows: int) -> float:
    """Seconds of read_vector_log on a DuckDB partition of bench/warehouse.py's synthetic rows."""
    from warehouse import DAY, MODEL, synthetic_rows

    from vecflow.embed.load import append_vectors
    from vecflow.quality import read_vector_log
    from vecflow.warehouse import bootstrap
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    table, _ = synthetic_rows(rows)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "bench.duckdb")
        bootstrap(warehouse)
        append_vectors(warehouse, table, DAY, "bench", shard_id=0, attempt=1)
        del table
        started = time.perf_counter()
        suite_input = read_vector_log(warehouse, DAY, MODEL, DIM)
        seconds = time.perf_counter() - started
    if len(suite_input.frame) != rows or suite_input.frame["embedding_norm"].isna().any():
        raise SystemExit(f"the quality read returned {len(suite_input.frame)} rows of {rows}, or rows without a norm")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    import great_expectations  # noqa: F401  (its import, ~4 s, is not part of a validation)

    started = time.perf_counter()
    vectors = synthetic_vectors(args.rows)
    print(f"{args.rows} synthetic vectors in {time.perf_counter() - started:.1f} s", flush=True)
    runs = []
    for case, frame in (("clean", vectors), ("with_defects", with_defects(vectors))):
        for attempt in range(args.repeats):
            seconds, result = validate(frame)
            run = {"case": case, "attempt": attempt + 1, "seconds": round(seconds, 2), **result}
            print(json.dumps(run), flush=True)
            runs.append(run)
    best = {case: min(r["seconds"] for r in runs if r["case"] == case) for case in ("clean", "with_defects")}
    print(f"GX validation, best of {args.repeats}: {best} s (goal <= 10 s)", flush=True)
    del vectors
    read_seconds = round(duckdb_read(args.rows), 2)
    print(f"DuckDB read of the partition for the suite: {read_seconds} s (goal <= 3 s)")
    write_report(
        "quality",
        {
            "suite": "vector_log",
            "rows": args.rows,
            "defect_rate": DEFECT_RATE,
            "goal_seconds": 10,
            "gx_validation_best_seconds": best,
            "duckdb_read_seconds": read_seconds,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
