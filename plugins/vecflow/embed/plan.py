"""Plans the shards of one catalog partition and records the partition in the warehouse."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import pyarrow as pa

from vecflow.catalog import CATALOG_COLUMNS, MANIFEST_COLUMNS, read_partition
from vecflow.config import Settings
from vecflow.embed.staging import Staging, staging
from vecflow.funnel import replace_rejects, replace_stage_funnel, stage_counts

log = logging.getLogger(__name__)


def shard_size(images: int, target: int, max_shards: int) -> int:
    """The target shard size, grown when the partition would need more than max_shards shards
    (Airflow refuses to map more task instances than core.max_map_length)."""
    return max(target, -(-images // max_shards)) if images else target


def plan_shards(settings: Settings, warehouse, run_date: dt.date, run_id: str, max_shards: int = 1024) -> list[dict]:
    """Writes the partition's catalog rows, rejects and catalog funnel; returns one spec per shard."""
    manifest = read_partition(settings, warehouse, run_date)
    bad = manifest["image_id"].isna() | manifest["uri"].isna()
    repeated = manifest["image_id"].duplicated(keep="first") & ~bad
    rejects = pd.concat(
        [
            manifest[bad].assign(reason="missing_field", detail="image_id or uri is empty"),
            manifest[repeated].assign(reason="repeated_image_id", detail="image_id listed more than once"),
        ]
    )
    catalog = manifest[~bad & ~repeated].sort_values("image_id").reset_index(drop=True)
    now = pd.Timestamp.now(tz="UTC")
    warehouse.run(
        "replace_partition",
        rows=catalog.assign(run_id=run_id, loaded_at=now),
        names={
            "table": "catalog",
            "partition_column": "listed_date",
            "columns": [*CATALOG_COLUMNS, "run_id", "loaded_at"],
        },
        partition_value=run_date,
    )
    replace_rejects(warehouse, "catalog", run_date, run_id, rejects)
    replace_stage_funnel(warehouse, "catalog", run_date, run_id, stage_counts(manifest, catalog, rejects))

    shards = write_shards(
        staging(settings),
        catalog,
        run_date,
        run_id,
        shard_size(len(catalog), settings.embed.shard_size, max_shards),
        settings.model_version,
    )
    log.info(
        "partition %s: %d manifest rows, %d unique, %d rejected, %d shard(s)",
        run_date,
        len(manifest),
        len(catalog),
        len(rejects),
        len(shards),
    )
    return shards


def write_shards(
    staging: Staging, images: pd.DataFrame, run_date: dt.date, run_id: str, size: int, model_version: str
) -> list[dict]:
    """Cuts a partition's images (MANIFEST_COLUMNS) into shard manifests in the run's staging area;
    returns one spec per shard, numbered from 0, naming the model to embed with and the files' URLs."""
    shard_dir = staging.shard_dir(run_date, run_id)
    shards = []
    for shard_id, start in enumerate(range(0, len(images), size)):
        name = f"{shard_dir}/shard-{shard_id:04d}"
        part = images[MANIFEST_COLUMNS].iloc[start : start + size]  # attributes stay in the warehouse
        staging.write(f"{name}.manifest.parquet", pa.Table.from_pandas(part, preserve_index=False))
        shards.append(
            {
                "run_date": run_date.isoformat(),
                "run_id": run_id,
                "shard_id": shard_id,
                "model_version": model_version,
                "manifest": f"{name}.manifest.parquet",
                "output": f"{name}.vectors.parquet",
                "images": len(part),
            }
        )
    return shards
