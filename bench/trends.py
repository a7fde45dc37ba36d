"""Trends benchmark: the tag_trends SQL over 1M image_tags rows on DuckDB, bulk indexing docs/s into
the loopback Elasticsearch-compatible server (noida-db, a stand-in: not a real cluster) at two
chunk sizes, and the ES trend query (terms in a quarterly date_histogram) p50/p99 over 1M
documents (300k by default: see --es-docs). Writes bench/results/trends.json.
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

START = dt.date(2026, 1, 1)
DIMENSIONS = {"category": 10, "color": 8, "pattern": 4, "style": 5}


def synthetic_tags(images: int, seed: int = 0):
    """images x 4 dimensions of image_tags rows over 181 days (two quarters)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    days = rng.integers(0, 181, images)
    dates = pd.to_datetime(START) + pd.to_timedelta(days, unit="D")
    frames = []
    for dim, n_tags in DIMENSIONS.items():
        frames.append(
            pd.DataFrame(
                {
                    "image_id": [f"img{i:09d}" for i in range(images)],
                    "listed_date": dates.date,
                    "dimension": dim,
                    "tag": np.char.add(f"{dim}_", rng.integers(0, n_tags, images).astype(str)),
                    "confidence": rng.uniform(0.5, 1.0, images),
                    "tag_source": "pixels",
                    "run_id": "bench",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def bench_sql(tags) -> dict:
    from vecflow.tags import compute_trends
    from vecflow.warehouse import bootstrap
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "bench.duckdb")
        bootstrap(warehouse)
        warehouse.run("replace_table", rows=tags, names={"table": "image_tags", "columns": list(tags.columns)})
        times = []
        for _ in range(3):
            started = time.perf_counter()
            compute_trends(warehouse, flat_threshold=0.03)
            times.append(time.perf_counter() - started)
        rows = len(warehouse.table("tag_trends"))
    return {
        "image_tags_rows": len(tags),
        "tag_trends_rows": rows,
        "best_s": round(min(times), 3),
        "all_s": [round(t, 3) for t in times],
    }


def docs_from_arrays(tags):
    """Documents built column-wise (groupby per image is too slow at 1M)."""
    wide = tags.pivot(index="image_id", columns="dimension", values="tag")
    dates = tags.drop_duplicates("image_id").set_index("image_id")["listed_date"].reindex(wide.index)
    for image_id, day, row in zip(wide.index, dates, wide.itertuples(index=False)):
        values = dict(zip(wide.columns, row))
        yield {
            "image_id": image_id,
            "listed_date": day.isoformat(),
            "quarter": f"{day.year}-Q{(day.month - 1) // 3 + 1}",
            "source": "shop_a",
            "model_version": "bench-v1",
            "run_id": "bench",
            "tags": {d: [t] for d, t in values.items()},
            "confidence": {d: 0.9 for d in values},
            "tag_source": {d: "pixels" for d in values},
        }


def bench_search(tags, sample: int, query_runs: int) -> dict:
    from elasticsearch import Elasticsearch

    from vecflow.demo.search_server import LocalSearchServer
    from vecflow.search.queries import quarterly_tag_shares
    from vecflow.search.sink import SearchIndexes, bulk_write, ensure_templates

    out = {}
    with tempfile.TemporaryDirectory() as tmp, LocalSearchServer(Path(tmp) / "es") as server:
        es = Elasticsearch(server.url, request_timeout=120)
        docs = list(docs_from_arrays(tags))
        for chunk in (500, 2000):
            indexes = SearchIndexes(f"bench{chunk}")
            ensure_templates(es, indexes, list(DIMENSIONS), None)
            started = time.perf_counter()
            failed = bulk_write(
                es,
                lambda d, ix=indexes: ix.image_tags_of(dt.date.fromisoformat(d["listed_date"])),
                docs[:sample],
                lambda d: d["image_id"],
                chunk,
            )
            seconds = time.perf_counter() - started
            out[f"bulk_chunk_{chunk}"] = {
                "docs": sample,
                "seconds": round(seconds, 2),
                "docs_per_s": round(sample / seconds),
                "refused": len(failed),
            }
            print(json.dumps(out[f"bulk_chunk_{chunk}"]), flush=True)
        best = max((500, 2000), key=lambda c: out[f"bulk_chunk_{c}"]["docs_per_s"])
        indexes = SearchIndexes(f"bench{best}")
        started = time.perf_counter()
        bulk_write(
            es,
            lambda d: indexes.image_tags_of(dt.date.fromisoformat(d["listed_date"])),
            docs[sample:],
            lambda d: d["image_id"],
            best,
        )
        es.indices.refresh(index=indexes.image_tags)
        total = es.count(index=indexes.image_tags)["count"]
        out["bulk_all"] = {"docs": total, "chunk_size": best, "seconds_rest": round(time.perf_counter() - started, 2)}
        latencies = []
        for i in range(query_runs):
            started = time.perf_counter()
            shares = quarterly_tag_shares(es, indexes.prefix, list(DIMENSIONS)[i % len(DIMENSIONS)])
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        out["trend_query"] = {
            "docs": total,
            "runs": query_runs,
            "rows_last": len(shares),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=250_000, help="images x 4 dimensions = image_tags rows")
    # 1M is the goal; the loopback stand-in slows as its index grows (see docs/PERFORMANCE.md)
    parser.add_argument("--es-docs", type=int, default=300_000)
    parser.add_argument("--bulk-sample", type=int, default=50_000)
    parser.add_argument("--query-runs", type=int, default=40)
    args = parser.parse_args()
    sql = bench_sql(synthetic_tags(args.images))
    print(json.dumps({"tag_trends_sql": sql}), flush=True)
    search = bench_search(synthetic_tags(args.es_docs, seed=1), args.bulk_sample, args.query_runs)
    write_report(
        "trends",
        {"search_server": "noida-db (loopback stand-in for Elasticsearch 8)", "tag_trends_sql": sql, "search": search},
    )
    print(json.dumps(search["trend_query"]))
    print(f"tag_trends over {sql['image_tags_rows']:,} image_tags rows: {sql['best_s']} s (goal 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
