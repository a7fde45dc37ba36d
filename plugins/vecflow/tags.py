"""Tags stage: image_tags per partition, tag_trends per quarter over all partitions."""

from __future__ import annotations

import datetime as dt


def tag_partition(warehouse, run_date: dt.date, run_id: str, model_version: str) -> None:
    warehouse.run("image_tags", run_date=run_date, run_id=run_id, model_version=model_version)


def compute_trends(warehouse, flat_threshold: float):
    warehouse.run("tag_trends", flat_threshold=flat_threshold)
    return warehouse.query("trend_movers", flat_threshold=flat_threshold)
