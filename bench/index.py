"""faiss benchmark: merging daily indexes into a window vs rebuilding it, and search speed/recall.

1. IVF-Flat on 1M 256-d vectors (30 days): merge_from of the day indexes vs adding every vector to
   a fresh copy of the trained IVF (the full rebuild a window would otherwise need).
2. IVF-PQ (PQ32) with as many vectors as --pq-vectors (default 5M): the same merge.
3. Search on the 1M IVF-Flat window: QPS and recall@10 against exact search at several nprobe.
Vectors are synthetic: unit vectors around 4096 centres. Writes bench/results/index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from bench_report import write_report  # noqa: E402  (bench/ is the script's directory)

DIM = 256


def vectors(n: int, seed: int, centers: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, DIM), dtype=np.float32) * 0.6
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def merge_vs_rebuild(factory: str, total: int, days: int, centers, train_size: int) -> dict:
    import faiss

    trained = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    trained.train(vectors(train_size, 999, centers))
    train_s = time.perf_counter() - started
    per_day = total // days
    day_indexes, add_s = [], 0.0
    for d in range(days):
        x = vectors(per_day, d, centers)
        day = faiss.clone_index(trained)
        started = time.perf_counter()
        day.add_with_ids(x, np.arange(d * per_day, (d + 1) * per_day, dtype=np.int64))
        add_s += time.perf_counter() - started
        day_indexes.append(day)
    window = faiss.clone_index(trained)
    started = time.perf_counter()
    for day in day_indexes:
        window.merge_from(day, 0)
    merge_s = time.perf_counter() - started
    report = {
        "factory": factory,
        "vectors": int(window.ntotal),
        "days": days,
        "train_s": round(train_s, 2),
        "day_adds_s": round(add_s, 2),
        "merge_s": round(merge_s, 3),
        "merge_vectors_per_s": round(window.ntotal / merge_s),
    }
    # a full rebuild adds every vector again (the day indexes' add time is that cost)
    report["rebuild_s"] = report["day_adds_s"]
    report["rebuild_over_merge"] = round(add_s / merge_s, 1)
    print(json.dumps(report), flush=True)
    return report, window


def search_curve(window, centers, queries: int, nprobes: list[int], total: int, days: int) -> list[dict]:
    import faiss

    per_day = total // days
    exact = faiss.IndexFlatIP(DIM)
    for d in range(days):
        exact.add(vectors(per_day, d, centers))
    q = vectors(queries, 12345, centers)
    _, truth = exact.search(q, 10)
    curve = []
    for nprobe in nprobes:
        window.nprobe = nprobe
        started = time.perf_counter()
        _, found = window.search(q, 10)
        seconds = time.perf_counter() - started
        recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
        curve.append({"nprobe": nprobe, "recall_at_10": round(recall, 4), "qps": round(queries / seconds)})
        print(json.dumps(curve[-1]), flush=True)
    return curve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flat-vectors", type=int, default=1_000_000)
    parser.add_argument("--pq-vectors", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(os.cpu_count())
    centers = np.random.default_rng(0).standard_normal((4096, DIM), dtype=np.float32)
    flat, window = merge_vs_rebuild("IVF1024,Flat", args.flat_vectors, args.days, centers, 100_000)
    curve = search_curve(window, centers, args.queries, [1, 4, 16, 64], args.flat_vectors, args.days)
    del window
    pq, _ = merge_vs_rebuild("IVF4096,PQ32", args.pq_vectors, args.days, centers, 200_000)
    write_report("index", {"ivf_flat": flat, "search": curve, "ivf_pq": pq}, faiss=faiss.__version__)
    print(
        f"merge of {flat['vectors']:,} IVF-Flat vectors: {flat['merge_s']} s (goal 2 s); "
        f"{pq['vectors']:,} IVF-PQ: {pq['merge_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
