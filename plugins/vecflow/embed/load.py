"""Loads shard outputs: vectors appended to vector_log, unusable images into rejects."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vecflow.embed.prefetch import reused_url
from vecflow.embed.staging import Staging
from vecflow.funnel import replace_rejects
from vecflow_model.contract import VECTOR_COLUMNS

log = logging.getLogger(__name__)
# vector_log's columns: the job's, and the category tag resolved when loading (the index partition)
LOG_COLUMNS = [*VECTOR_COLUMNS, "category"]


class ShardOutputError(ValueError):
    """A shard output is missing or belongs to another partition or run."""


def append_vectors(warehouse, vectors, run_date: dt.date, run_id: str, shard_id: int, attempt: int) -> None:
    """The one writer of vector_log: appends one attempt of a shard's vectors (an Arrow table with at
    least LOG_COLUMNS)."""
    warehouse.run(
        "append_shard",
        rows=vectors.select(LOG_COLUMNS),
        names={"columns": LOG_COLUMNS},
        run_date=run_date,
        run_id=run_id,
        shard_id=shard_id,
        attempt=attempt,
    )


def load_shards(
    staging: Staging,
    warehouse,
    run_date: dt.date,
    run_id: str,
    shards: list[dict],
    categorise: Callable[[pa.Table], list],
    reject_stage: str = "embed",
) -> dict:
    """Appends the shards' vectors (their outputs in the staging area) to vector_log, each with its
    category tag (`categorise`: vecflow.tagging.category_resolver), and replaces the partition's
    `reject_stage` rejects (a reindex keeps its own, 'reindex_embed', beside the daily run's)."""
    vectors_loaded, rejects = 0, []
    for shard in shards:
        try:
            table = staging.read(shard["output"])
        except FileNotFoundError:
            raise ShardOutputError(f"shard {shard['shard_id']}: output {shard['output']} missing") from None
        if staging.exists(reused_url(shard)):  # vectors the fetch stage copied instead of embedding them again
            table = pa.concat_tables([table, staging.read(reused_url(shard)).cast(table.schema)])
        if table.num_rows and set(pc.unique(table["run_id"]).to_pylist()) != {run_id}:
            raise ShardOutputError(f"shard {shard['shard_id']}: output {shard['output']} is not from run {run_id}")
        # the attempt that wrote the file (retries overwrite it); local and pod runs alike
        attempts = set(pc.unique(table["attempt"]).to_pylist()) or {0}
        if len(attempts) != 1:
            raise ShardOutputError(f"shard {shard['shard_id']}: output mixes attempts {sorted(attempts)}")
        attempt = attempts.pop()
        rejected = pc.is_valid(table["reject_reason"])
        vectors = table.filter(pc.invert(rejected))
        vectors = vectors.append_column("category", pa.array(categorise(vectors), pa.string()))
        append_vectors(warehouse, vectors, run_date, run_id, shard["shard_id"], attempt)
        vectors_loaded += vectors.num_rows
        rejects.append(table.filter(rejected))
    rows = [r for t in rejects for r in t.to_pylist()]
    frame = pd.DataFrame(
        {
            "image_id": [r["image_id"] for r in rows],
            "reason": [r["reject_reason"] for r in rows],
            "detail": [r["reject_detail"] for r in rows],
            "category": [r["catalog_category"] for r in rows],
        }
    )
    replace_rejects(warehouse, reject_stage, run_date, run_id, frame)
    stats = {
        "vectors": vectors_loaded,
        "rejects": len(frame),
        "rejects_by_reason": frame["reason"].value_counts().to_dict(),
    }
    log.info("partition %s: loaded %s", run_date, stats)
    return stats
