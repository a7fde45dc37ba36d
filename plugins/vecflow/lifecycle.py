"""An item's life after listing: removals from the catalog (the delist feed) and the tombstone set.

- The delist feed (VECFLOW_CATALOG_DELIST_TEMPLATE under the catalog root: image_id, optional
  delisted_at and reason) is read by the daily run of its day and recorded in `delistings` (this
  module is its one writer); a row for an image the catalog never listed, or with a delisted_at that
  is not a time, is a reject (stage `delisted`), and the funnel's `delisted` stage counts them.
- An image is delisted while its latest removal is not older than its latest listing (v_delisted):
  listed again on a later day, it is back. vectors_clean keeps its rows (past trends do not change).
- The tombstone set, `TOMBSTONES.parquet` at the index store's root, lists every delisted image:
  search (the CLI and a search service) excludes them from the published versions at once, and the
  next window merge drops them physically (vecflow.index.window).
"""

from __future__ import annotations

import datetime as dt
import io
import logging

import pandas as pd

from vecflow.config import Settings
from vecflow.funnel import replace_rejects, replace_stage_funnel, stage_counts

log = logging.getLogger(__name__)
DELISTING_COLUMNS = ["image_id", "delisted_at", "reason", "partition_date", "origin", "run_id", "recorded_at"]
STAGE = "delisted"


def apply_delist_feed(settings: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """Records the feed's removals of run_date (replacing a rerun's), its rejects and funnel, and
    rewrites the tombstone set; returns the counts."""
    from vecflow.catalog import read_delist_feed

    feed = read_delist_feed(settings, run_date)
    if feed is None:
        feed = pd.DataFrame({"image_id": pd.Series(dtype=object)})
    feed = feed.assign(image_id=feed["image_id"].astype(str))
    default_at = pd.Timestamp(run_date, tz="UTC")
    given = feed["delisted_at"] if "delisted_at" in feed.columns else pd.Series(None, index=feed.index, dtype=object)
    at = pd.to_datetime(given, utc=True, errors="coerce")
    feed["delisted_at"] = at.where(given.notna(), default_at)
    feed["reason"] = feed["reason"].fillna("delisted") if "reason" in feed.columns else "delisted"
    known = warehouse.query("select_delist_images", image_ids=feed["image_id"].tolist(), run_date=run_date)
    feed = feed.merge(known, on="image_id", how="left", indicator=True)
    problems = []
    unknown = feed["_merge"] == "left_only"
    problems.append(feed[unknown].assign(reason="unknown_image", detail="the catalog never listed it"))
    bad_time = ~unknown & feed["delisted_at"].isna()
    problems.append(
        feed[bad_time].assign(reason="bad_timestamp", detail=lambda f: "delisted_at " + given[f.index].astype(str))
    )
    good = feed[~unknown & ~bad_time].sort_values("delisted_at")
    repeated = good.duplicated("image_id", keep="last")  # the same image twice: its latest row counts
    problems.append(good[repeated].assign(reason="duplicate_row", detail="a later row of the feed removes it"))
    good = good[~repeated]
    rejects = pd.concat(problems, ignore_index=True)[["image_id", "reason", "detail", "category"]]
    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame(
        {
            "image_id": good["image_id"].to_numpy(),
            "delisted_at": good["delisted_at"].to_numpy(),
            "reason": good["reason"].astype(str).to_numpy(),
            "partition_date": run_date,
            "origin": "feed",
            "run_id": run_id,
            "recorded_at": now,
        },
        columns=DELISTING_COLUMNS,
    )
    record_delistings(warehouse, run_date, "feed", rows)
    replace_rejects(warehouse, STAGE, run_date, run_id, rejects)
    replace_stage_funnel(warehouse, STAGE, run_date, run_id, stage_counts(feed, good, rejects))
    tombstones = write_tombstones(settings, warehouse)
    counts = {"feed_rows": len(feed), "delisted": len(good), "rejected": len(rejects), "tombstones": tombstones}
    log.info("partition %s: delist feed %s", run_date, counts)
    return counts


def record_delistings(warehouse, day: dt.date, origin: str, rows: pd.DataFrame) -> None:
    """Replaces the day's delistings of one origin (feed or sweep)."""
    names = {
        "table": "delistings",
        "partition_column": "partition_date",
        "stage_column": "origin",
        "columns": DELISTING_COLUMNS,
    }
    warehouse.run("replace_partition", rows=rows, names=names, partition_value=day, stage=origin)


def write_tombstones(settings: Settings, warehouse) -> int:
    """Rewrites the index store's tombstone set from v_delisted; returns how many images it holds."""
    from vecflow.index.build import stable_id
    from vecflow.index.search import TOMBSTONES
    from vecflow.index.store import index_store

    delisted = warehouse.query("select_delisted")
    frame = pd.DataFrame(
        {
            "image_id": delisted["image_id"].astype(str),
            "id": [stable_id(i) for i in delisted["image_id"]],
            "delisted_at": pd.to_datetime(delisted["delisted_at"], utc=True),
            "reason": delisted["reason"].astype(str),
        }
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    index_store(settings).write_file(TOMBSTONES, buffer.getvalue())
    return len(frame)
