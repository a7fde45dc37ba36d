"""An item's life after listing: removals from the catalog (the delist feed) and the tombstone set.

- The delist feed (image_id, optional delisted_at and reason) comes from the catalog's source
  (vecflow.catalog.read_delist_feed): files at VECFLOW_CATALOG_DELIST_TEMPLATE under the catalog
  root (a local path or a bucket), or the table VECFLOW_CATALOG_DELIST_TABLE. The daily run of its
  day records it in `delistings` (this module is its one writer); a row for an image the catalog
  never listed, with a delisted_at that is not a time, or repeated is a reject (stage `delisted`),
  and the funnel's `delisted` stage counts them.
- An image is delisted while its latest removal is not older than its latest listing (v_delisted):
  listed again on a later day, it is back. vectors_clean keeps its rows (past trends do not change).
- The tombstone set, `TOMBSTONES.parquet` at the index store's root, lists every delisted image:
  search (the CLI and a search service) excludes them from the published versions at once, and the
  next window merge drops them physically (vecflow.index.window).
- The dead-link sweep (DAG vecflow_catalog_health, `sweep_links`) fetches the URIs of served images
  (all, or VECFLOW_CATALOG_SWEEP_PER_CATEGORY a day per category plus those found dead last time)
  through vecflow.fetch and records each outcome in `link_checks`; an image dead on two sweeps in a
  row is delisted with reason `dead_link` (one that failed once stays).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from pathlib import Path

import pandas as pd

from vecflow.config import Settings
from vecflow.funnel import replace_rejects, replace_stage_funnel, stage_counts

log = logging.getLogger(__name__)
LINK_CHECK_COLUMNS = ["image_id", "uri", "category", "checked_date", "outcome", "detail", "run_id", "checked_at"]
DELISTING_COLUMNS = ["image_id", "delisted_at", "reason", "partition_date", "origin", "run_id", "recorded_at"]
STAGE = "delisted"


def apply_delist_feed(settings: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """Records the feed's removals of run_date (replacing a rerun's), its rejects and funnel, and
    rewrites the tombstone set; returns the counts."""
    from vecflow.catalog import read_delist_feed

    feed = read_delist_feed(settings, warehouse, run_date)
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


def sweep_sample(served: pd.DataFrame, per_category: int, run_date: dt.date) -> pd.DataFrame:
    """The images a sweep checks: every one whose last check found a dead link (to confirm it), and
    per category `per_category` others (0: all), a different sample each day."""
    served = served.drop_duplicates("image_id")
    if per_category <= 0:
        return served
    suspect = served["last_outcome"] == "dead_link"
    rank = served["image_id"].map(lambda i: hashlib.blake2b(f"{run_date}:{i}".encode(), digest_size=8).hexdigest())
    sample = served[~suspect].assign(_rank=rank).sort_values("_rank").groupby("category").head(per_category)
    return pd.concat([served[suspect], sample.drop(columns="_rank")]).sort_values(["category", "image_id"])


def sweep_links(settings: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """Checks the served images' links (replacing a rerun's checks of run_date), delists those dead on
    this sweep and the one before, and rewrites the tombstone set; returns the counts, with the
    image_ids delisted."""
    from vecflow.catalog import catalog_root
    from vecflow.fetch import fetch_images

    index = settings.index
    served = warehouse.query(
        "select_served_links",
        date_from=run_date - dt.timedelta(days=max(index.window_days, index.long_tail_days) - 1),
        run_date=run_date,
        model_version=settings.model_version,
    )
    checked = sweep_sample(served, settings.catalog.sweep_per_category, run_date)
    root = catalog_root(settings)
    fetched = fetch_images(
        checked["uri"].tolist(),
        settings.fetch,
        settings.catalog.storage_options,
        root=Path(root) if "://" not in root else None,
    )
    now = pd.Timestamp.now(tz="UTC")
    checks = pd.DataFrame(
        {
            "image_id": checked["image_id"].to_numpy(),
            "uri": checked["uri"].to_numpy(),
            "category": checked["category"].to_numpy(),
            "checked_date": run_date,
            "outcome": [f.reason or "ok" for f in fetched],
            "detail": [f.detail for f in fetched],
            "run_id": run_id,
            "checked_at": now,
        },
        columns=LINK_CHECK_COLUMNS,
    )
    names = {"table": "link_checks", "partition_column": "checked_date", "columns": LINK_CHECK_COLUMNS}
    warehouse.run("replace_partition", rows=checks, names=names, partition_value=run_date)
    dead_twice = checks[(checks["outcome"] == "dead_link") & (checked["last_outcome"].to_numpy() == "dead_link")]
    rows = pd.DataFrame(
        {
            "image_id": dead_twice["image_id"].to_numpy(),
            "delisted_at": now,
            "reason": "dead_link",
            "partition_date": run_date,
            "origin": "sweep",
            "run_id": run_id,
            "recorded_at": now,
        },
        columns=DELISTING_COLUMNS,
    )
    record_delistings(warehouse, run_date, "sweep", rows)
    counts = {
        "served": int(served["image_id"].nunique()),
        "checked": len(checks),
        **{f"outcome.{k}": int(v) for k, v in checks["outcome"].value_counts().sort_index().items()},
        "delisted": len(rows),
        "tombstones": write_tombstones(settings, warehouse),
    }
    log.info("link sweep %s: %s", run_date, counts)
    return {**counts, "delisted_ids": rows["image_id"].tolist()}
