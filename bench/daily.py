"""Daily partition benchmark: one vecflow_daily run through Airflow (dag.test, as `make run` runs each
day) over one generated partition of --images catalog images (the generator's real images: clustered
hashes, planted exact and near duplicates, corrupt files) under its own VECFLOW_HOME, with the loopback
search server. Prints seconds, ms per image and peak RSS per task; writes bench/results/daily.json.

Fails unless the run succeeded, the partition's funnel balances, and every planted duplicate is
accounted for: removed as a duplicate, kept as a vector of its own, or rejected with a reason (the
near-duplicate recall is reported beside it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bench_report import RESULTS, RssTimeline, write_report  # bench/ is the script's directory

DAY = dt.date(2026, 3, 2)


def unaccounted_duplicates(catalog_dir: Path, warehouse) -> list[str]:
    """Planted duplicates neither removed as duplicates, kept in vectors_clean nor rejected."""
    planted = pd.read_csv(catalog_dir / "truth" / "duplicates.csv")
    seen = (
        set(warehouse.table("dedup_map")["image_id"])
        | set(warehouse.table("vectors_clean")["image_id"])
        | set(warehouse.table("rejects")["image_id"])
    )
    return sorted(set(planted["image_id"]) - seen)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000, help="catalog images in the partition")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--output", type=Path, default=RESULTS / "daily.json")
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vecflow-bench-daily-"))
    os.environ.update({"VECFLOW_HOME": str(home), "VECFLOW_START_DATE": DAY.isoformat()})
    from vecflow.config import settings
    from vecflow.demo.runner import (
        check_run,
        demo_registry,
        generate_catalog,
        prepare_airflow,
        search_server_if_needed,
    )
    from vecflow.demo.truth import duplicate_check
    from vecflow.resources import DAGS_DIR, DEFAULT_TREND_SPEC
    from vecflow.warehouse import get_warehouse, migrate

    started = time.perf_counter()
    generate_catalog(
        argparse.Namespace(
            seed=args.seed, start_date=DAY, days=1, images_per_day=args.images, trends=DEFAULT_TREND_SPEC
        )
    )
    print(f"catalog: {args.images} images generated in {time.perf_counter() - started:.0f} s ({home})", flush=True)
    s = settings()
    os.environ["VECFLOW_MODEL_REGISTRY"] = str(demo_registry(home))
    prepare_airflow(home)
    from airflow.dag_processing.dagbag import DagBag

    daily = DagBag(dag_folder=str(DAGS_DIR)).get_dag("vecflow_daily")
    # the libraries the tasks import, loaded before the clock starts (Great Expectations alone takes
    # ~4 s): a task's seconds are its work on the partition, not the process's first imports
    import faiss  # noqa: F401
    import great_expectations  # noqa: F401
    import torch  # noqa: F401

    import vecflow.tasks  # noqa: F401

    # the warehouse's schema, made once as a deployment makes it (`vecflow.cli migrate`): a daily
    # run's plan_shards then finds it recorded, as every run after a deployment's first does
    migrate(get_warehouse(s))
    with search_server_if_needed(s), RssTimeline(clock=lambda: dt.datetime.now(dt.UTC)) as rss:
        started = time.perf_counter()
        dag_run = daily.test(logical_date=dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
        wall = time.perf_counter() - started
    check_run(daily, dag_run, f"vecflow_daily for {DAY}")

    tasks: dict[str, dict] = {}
    for ti in dag_run.get_task_instances():
        if ti.start_date is None or ti.end_date is None:
            continue
        task = tasks.setdefault(ti.task_id, {"seconds": 0.0, "runs": 0, "peak_rss_bytes": 0})
        task["seconds"] += (ti.end_date - ti.start_date).total_seconds()
        task["runs"] += 1
        task["peak_rss_bytes"] = max(task["peak_rss_bytes"], rss.peak(ti.start_date, ti.end_date))
    for task in tasks.values():
        task["seconds"] = round(task["seconds"], 2)
        task["ms_per_image"] = round(1000 * task["seconds"] / args.images, 3)

    warehouse = get_warehouse(s)
    balance = warehouse.query("funnel_balance", run_date=DAY)
    broken = balance[balance["balance"] != 0]
    lost = unaccounted_duplicates(s.paths.catalog_dir, warehouse)
    duplicates = duplicate_check(s.paths.catalog_dir / "truth", warehouse.table("dedup_map"))
    outside_embed = sum(t["seconds"] for name, t in tasks.items() if name != "embed.embed_shard")
    report = {
        "images": args.images,
        "wall_seconds": round(wall, 1),
        "tasks": tasks,
        "outside_embed_ms_per_image": round(1000 * outside_embed / args.images, 3),
        "peak_rss_bytes": max((rss for _, rss in rss.samples), default=0),
        "planted_duplicates": duplicates,
        "funnel_rules_broken": len(broken),
        "duplicates_unaccounted": len(lost),
    }
    print(f"{'task':<28}{'runs':>5}{'seconds':>10}{'ms/image':>10}{'peak RSS MiB':>14}")
    for name, task in sorted(tasks.items(), key=lambda kv: -kv[1]["seconds"]):
        print(
            f"{name:<28}{task['runs']:>5}{task['seconds']:>10.2f}{task['ms_per_image']:>10.3f}"
            f"{task['peak_rss_bytes'] / 2**20:>14.0f}"
        )
    print(
        f"wall {wall:.1f} s for {args.images} images; outside embed_shard {report['outside_embed_ms_per_image']} ms an "
        f"image; peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB; near duplicates {duplicates['near_by_dhash']}"
    )
    write_report("daily", report, path=args.output)
    if len(broken) or lost:
        print(
            f"FAILED: {len(broken)} funnel rules broken {broken.to_dict('records')[:5]}; "
            f"{len(lost)} planted duplicates unaccounted {lost[:10]}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
