"""Embedding stage benchmark: images/s of the entrypoint by batch size, and what running it as a
child process costs against running it in the task's process. Prints ratios and writes
bench/results/embed_throughput.json. Run with `make bench`."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from vecflow.config import DEFAULT_TREND_SPEC  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vecflow-bench-"))
    os.environ["VECFLOW_HOME"] = str(home)
    from vecflow.catalog.generate import CatalogParams, generate
    from vecflow.catalog.spec import load_trend_spec
    from vecflow.config import settings
    from vecflow.embed.plan import plan_shards
    from vecflow.embed.runner import run_shard
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap, get_warehouse

    taxonomy = load_taxonomy()
    day = dt.date(2026, 1, 1)
    generate(home / "catalog", CatalogParams(1, day, 1, args.images), load_trend_spec(DEFAULT_TREND_SPEC, taxonomy),
             taxonomy)
    os.environ["VECFLOW_SHARD_SIZE"] = str(args.images)
    warehouse = get_warehouse()
    bootstrap(warehouse)
    shard = plan_shards(settings(), warehouse, day, "bench")[0]

    def timed(runner: str, batch: int) -> float:
        os.environ["VECFLOW_EMBED_RUNNER"] = runner
        os.environ["VECFLOW_EMBED_BATCH_SIZE"] = str(batch)
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            run_shard(shard, settings(), attempt=1)
            best = min(best, time.perf_counter() - started)
        return best

    timed("inprocess", 64)  # warm-up: imports and first-call costs are not the steady state
    results = {f"inprocess_batch{b}_s": timed("inprocess", b) for b in (1, 16, 64)}
    results["subprocess_batch64_s"] = timed("subprocess", 64)
    report = {
        "benchmark": "embed_throughput", "images": args.images, "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": {k: round(v, 3) for k, v in results.items()},
        "images_per_s": {k.replace("_s", ""): round(args.images / v, 1) for k, v in results.items()},
        "ratios": {
            "batch64_vs_batch1_speedup": round(results["inprocess_batch1_s"] / results["inprocess_batch64_s"], 2),
            "subprocess_vs_inprocess_cost": round(results["subprocess_batch64_s"] / results["inprocess_batch64_s"], 2),
        },
    }
    out = REPO / "bench" / "results" / "embed_throughput.json"
    out.write_text(json.dumps(report, indent=2))
    for name, value in report["images_per_s"].items():
        print(f"{name:28s} {value:8.1f} images/s")
    for name, value in report["ratios"].items():
        print(f"{name:28s} {value:8.2f}x")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
