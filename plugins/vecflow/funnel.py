"""Data funnel and rejects: per stage and category, what came in, went out and was dropped, and every
dropped row with its reason. The SQL stages count theirs in funnel.sql (and validate.sql writes its
rejects); a stage counted in Python (catalog, embed rejects, search) writes through the two
functions here, each the one writer of its rows. The balance rules are checked by the funnel quality
suite (vecflow.quality, include/sql/funnel_balance.sql); include/sql/funnel_violations.sql lists
the broken ones for a person looking at a partition."""

from __future__ import annotations

import datetime as dt

import pandas as pd

REJECT_COLUMNS = ["image_id", "listed_date", "stage", "reason", "detail", "category", "run_id"]
FUNNEL_COLUMNS = ["stage", "partition_date", "category", "metric", "value", "run_id", "recorded_at"]


def record_sql_funnel(warehouse, run_date: dt.date, run_id: str, model_version: str) -> None:
    """The funnel rows of the SQL stages (embed, validate, dedup, tags, index) of one partition."""
    warehouse.run("funnel", run_date=run_date, run_id=run_id, model_version=model_version, reject_stage="validate")


def replace_rejects(warehouse, stage: str, run_date: dt.date, run_id: str, rejects: pd.DataFrame) -> int:
    """Replaces the partition's rejects of `stage` with `rejects` (image_id, reason, detail, category);
    returns how many there are."""
    rows = pd.DataFrame(
        {
            "image_id": rejects["image_id"].to_numpy(),
            "listed_date": run_date,
            "stage": stage,
            "reason": rejects["reason"].to_numpy(),
            "detail": rejects["detail"].to_numpy(),
            "category": rejects["category"].to_numpy(),
            "run_id": run_id,
        },
        columns=REJECT_COLUMNS,
    )
    _replace_stage_rows(warehouse, "rejects", "listed_date", REJECT_COLUMNS, rows, run_date, stage)
    return len(rows)


def stage_counts(rows_in: pd.DataFrame, rows_out: pd.DataFrame, rejects: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(category, metric) -> count of a stage: `in`, `out` and `dropped.<reason>` by category."""

    def by_category(frame: pd.DataFrame) -> pd.Series:
        return frame["category"].fillna("unknown").value_counts()

    metrics = [("in", by_category(rows_in)), ("out", by_category(rows_out))]
    metrics += [(f"dropped.{reason}", by_category(group)) for reason, group in rejects.groupby("reason")]
    return {(category, metric): int(value) for metric, counts in metrics for category, value in counts.items()}


def replace_stage_funnel(
    warehouse, stage: str, run_date: dt.date, run_id: str, counts: dict[tuple[str, str], int]
) -> None:
    """Replaces the partition's funnel rows of a stage counted in Python; `counts`: (category, metric) -> value."""
    now = pd.Timestamp.now(tz="UTC")
    funnel = pd.DataFrame(
        [
            {
                "stage": stage,
                "partition_date": run_date,
                "category": category,
                "metric": metric,
                "value": int(value),
                "run_id": run_id,
                "recorded_at": now,
            }
            for (category, metric), value in sorted(counts.items())
        ],
        columns=FUNNEL_COLUMNS,
    )
    _replace_stage_rows(warehouse, "funnel_metrics", "partition_date", FUNNEL_COLUMNS, funnel, run_date, stage)


def _replace_stage_rows(warehouse, table, partition_column, columns, rows, run_date: dt.date, stage: str) -> None:
    names = {"table": table, "partition_column": partition_column, "stage_column": "stage", "columns": columns}
    warehouse.run("replace_partition", rows=rows, names=names, partition_value=run_date, stage=stage)
