"""The DAGs' tasks as typed functions, one per task and named like it; DAG files only wire them.

A DAG task body takes what it needs from the Airflow context with `current_run()` (the partition,
i.e. the data interval's start, the run id, the try number) and calls the function with plain
arguments, so each task is idempotent per partition, and tests call the same functions without
Airflow. What a task produced goes on its asset event with `Run.emit`. A verdict that a retry would
not change (a failed index gate or quality suite) is an AirflowFailException, which skips retries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vecflow.config import Settings, settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """The part of a task's Airflow context that vecflow uses."""

    run_id: str
    run_date: dt.date | None  # the partition: the data interval's start (None for unscheduled DAGs)
    run_after: dt.datetime  # when the run was due (a scheduled run's check time)
    try_number: int
    params: Mapping
    context: Mapping

    @property
    def settings(self) -> Settings:
        return settings()

    def warehouse(self):
        """The configured warehouse; on BigQuery its jobs are labelled with this task and partition."""
        from vecflow.warehouse import get_warehouse

        ti = self.context.get("ti")
        labels = {
            "dag_id": getattr(ti, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": self.run_id,
            "partition": self.run_date.isoformat() if self.run_date else None,
        }
        return get_warehouse(self.settings, labels=labels)

    def emit(self, asset, produced: dict | None = None, **extra) -> dict | None:
        """Puts the partition, the run and what was produced on the task's asset event; returns `produced`."""
        if "outlet_events" in self.context:
            partition = extra.pop("partition", self.run_date)
            self.context["outlet_events"][asset].extra = {
                "partition": partition.isoformat() if partition else None,
                "run_id": self.run_id,
                **(produced or {}),
                **extra,
            }
        return produced


def current_run() -> Run:
    from airflow.sdk import get_current_context

    context = get_current_context()
    start = context.get("data_interval_start")
    return Run(
        run_id=context["run_id"],
        run_date=start.date() if start else None,
        run_after=context["dag_run"].run_after,
        try_number=context["ti"].try_number,
        params=context.get("params") or {},
        context=context,
    )


def shard_list(shards: Sequence) -> list[dict]:
    """The planned shards as a list. Indexed, not iterated: iterating a mapped XCom sequence probes
    past its end and logs an error."""
    return [shards[i] for i in range(len(shards))]


def max_shards() -> int:
    """Airflow refuses to map more task instances than core.max_map_length."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length")


# --- vecflow_daily --------------------------------------------------------------------------------


def plan_shards(s: Settings, warehouse, run_date: dt.date, run_id: str, limit: int = 1024) -> list[dict]:
    from vecflow.embed.plan import plan_shards as plan
    from vecflow.warehouse import migrate

    migrate(warehouse)  # DDL only when the schema version changed
    return plan(s, warehouse, run_date, run_id, max_shards=limit)


def fetch_shard(s: Settings, warehouse, shard: dict, attempt: int) -> dict:
    """The fetch stage: remote images downloaded, vectors of content embedded before reused; returns
    the shard for the embedding job (its manifest the fetched one)."""
    from vecflow.embed.prefetch import prefetch_shard

    return prefetch_shard(shard, s, warehouse, attempt)


def embed_shard(s: Settings, warehouse, shard: dict, attempt: int) -> None:
    """The fetch stage, then the embedding job on the rest (the local backend: one process)."""
    from vecflow.embed.runner import run_shard

    run_shard(fetch_shard(s, warehouse, shard, attempt), s, attempt=attempt)


def load_vector_log(s: Settings, warehouse, run_date: dt.date, run_id: str, shards: Sequence) -> dict:
    from vecflow.embed.load import load_shards
    from vecflow.embed.staging import staging
    from vecflow.tagging import category_resolver

    categorise = category_resolver(s, warehouse, s.model_version)
    return load_shards(staging(s), warehouse, run_date, run_id, shard_list(shards), categorise)


def clean(s: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """The partition's clean vectors, and the day's delist feed (removals and the tombstone set)."""
    from vecflow.clean import clean_partition
    from vecflow.lifecycle import apply_delist_feed

    return {
        **clean_partition(s, warehouse, run_date, run_id),
        "delist": apply_delist_feed(s, warehouse, run_date, run_id),
    }


def tag_images(s: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    from vecflow.tagging import tag_partition
    from vecflow.taxonomy import load_taxonomy

    return tag_partition(s, warehouse, load_taxonomy(), run_date, run_id, s.model_version)


def search_index_tags(s: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    from vecflow.search.client import search_client
    from vecflow.search.sink import index_partition
    from vecflow.taxonomy import load_taxonomy

    es = search_client(s.search.conn_id)
    return index_partition(es, warehouse, s, load_taxonomy().dimensions, run_date, run_id)


def build_indexes(s: Settings, warehouse, run_date: dt.date, run_id: str, group: int = 0) -> dict:
    """Day indexes of the partition, then each category's window index, published if it passes its
    gate: the categories of one build group (index.build_group) of VECFLOW_INDEX_BUILD_GROUPS."""
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.index.window import IndexGateError, build_group_indexes

    try:
        return build_group_indexes(s, warehouse, run_date, run_id, group)
    except IndexGateError as exc:
        raise AirflowFailException(str(exc)) from None  # a retry would build the same index


def plan_index_pods(s: Settings, warehouse, run_date: dt.date, run_id: str) -> list[dict]:
    """One index-build pod per build group, its memory sized from the group's window vectors and the
    serving model card's embedding_dim."""
    from vecflow.embed import card_embedding_dim
    from vecflow.embed.pods import index_pod_plan
    from vecflow.index.build import group_window_vectors

    dim = card_embedding_dim(s)
    return [
        index_pod_plan(run_date, run_id, group, vectors, dim)
        for group, vectors in group_window_vectors(s, warehouse, run_date).items()
    ]


def check_quality(s: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """Records the partition's funnel, runs the quality suites (vector_log, vectors_clean, funnel) with
    their Data Docs and writes the run report; a failed suite fails the task without retries (a data
    bug), while a warehouse error on the way is retried like any other."""
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.funnel import record_sql_funnel
    from vecflow.quality import DataQualityError, check_partition
    from vecflow.run_report import write_run_report

    record_sql_funnel(warehouse, run_date, run_id, s.model_version)
    try:
        summary = check_partition(s, warehouse, run_date)
    except DataQualityError as exc:
        write_run_report(s, warehouse, run_date, run_id, exc.summary)
        raise AirflowFailException(str(exc)) from exc
    log.info("run report: %s", write_run_report(s, warehouse, run_date, run_id, summary))
    return {name: result["success"] for name, result in summary.items()}


# --- vecflow_trends -------------------------------------------------------------------------------


def tag_trends(s: Settings, warehouse) -> list[dict]:
    """tag_trends from image_tags; refused (not retried) while image_tags mixes tag versions."""
    from vecflow.tagging import TaggingError, check_one_version
    from vecflow.tags import compute_trends
    from vecflow.taxonomy import load_taxonomy

    try:
        check_one_version(warehouse)
    except TaggingError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from None  # a retry reads the same mix
    movers = compute_trends(warehouse, s.trends, load_taxonomy())
    log.info("trend movers in the latest periods, by facet:\n%s", movers.to_string(index=False))
    return json.loads(movers.to_json(orient="records", date_format="iso"))


def search_index_trends(s: Settings, warehouse, run_id: str) -> dict:
    from vecflow.search.client import search_client
    from vecflow.search.sink import index_trends
    from vecflow.taxonomy import load_taxonomy

    return index_trends(search_client(s.search.conn_id), warehouse, s, load_taxonomy().dimensions, run_id)


def write_summary(s: Settings, warehouse) -> dict:
    from vecflow.summary import write_summary as write

    if s.search.sink != "elasticsearch":
        return write(s, warehouse)
    from vecflow.search.client import search_client
    from vecflow.taxonomy import load_taxonomy

    return write(s, warehouse, search_client(s.search.conn_id), load_taxonomy().dimensions)


# --- vecflow_catalog_health -----------------------------------------------------------------------


def sweep_links(s: Settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """The dead-link sweep of the served images; the delisted ones' Elasticsearch documents go too."""
    from vecflow.lifecycle import sweep_links as sweep
    from vecflow.warehouse import migrate

    migrate(warehouse)
    done = sweep(s, warehouse, run_date, run_id)
    if s.search.sink == "elasticsearch":
        from vecflow.search.client import search_client
        from vecflow.search.sink import SearchIndexes, delete_images

        es = search_client(s.search.conn_id)
        done["search_deleted"] = delete_images(es, SearchIndexes(s.search.index_prefix), done["delisted_ids"])
    return done


# --- vecflow_watchdog ------------------------------------------------------------------------------


def check_inflow(s: Settings, warehouse, now: dt.datetime, run_id: str) -> list[dict]:
    """Checks each source's inflow as of `now` (the run's scheduled time) and alerts; returns the alerts sent."""
    from vecflow.alerts import Notifier, run_watchdog
    from vecflow.warehouse import migrate

    migrate(warehouse)  # the watchdog may run before a daily run has set the warehouse up; no DDL after
    rows = run_watchdog(s.watchdog, warehouse, now, run_id, Notifier.from_environment())
    return [{"alert_key": r["alert_key"], "kind": r["kind"], "channels": r["channels"]} for r in rows]


# --- vecflow_reindex ------------------------------------------------------------------------------


def reindex_params(params: Mapping) -> tuple[str, dt.date | None, dt.date | None]:
    """(model_version, date_from, date_to) of a vecflow_reindex run's params."""
    dates = (dt.date.fromisoformat(params[k]) if params.get(k) else None for k in ("date_from", "date_to"))
    return (params["model_version"], *dates)


def plan_reindex(
    s: Settings,
    warehouse,
    model_version: str,
    run_id: str,
    date_from: dt.date | None,
    date_to: dt.date | None,
    limit: int = 1024,
) -> list[dict]:
    from vecflow.index.reindex import plan_reindex as plan

    return plan(s, warehouse, model_version, run_id, date_from, date_to, max_shards=limit)


def load_and_clean(s: Settings, warehouse, model_version: str, run_id: str, shards: Sequence) -> dict:
    from vecflow.index.reindex import load_and_clean as load

    return load(s, warehouse, model_version, run_id, shard_list(shards))


def build_reindex_indexes(s: Settings, warehouse, model_version: str, run_id: str, shards: Sequence) -> dict:
    """The new model's indexes over the reindexed partitions; returns what was built, by category,
    with the partitions (for the asset event)."""
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.index.reindex import build_indexes
    from vecflow.index.window import IndexGateError

    dates = sorted({dt.date.fromisoformat(shard["run_date"]) for shard in shard_list(shards)})
    try:
        windows = build_indexes(s, warehouse, model_version, run_id, dates)
    except IndexGateError as exc:
        raise AirflowFailException(f"{model_version} not switched to: {exc}") from None
    window = {
        w["category"]: {k: w[k] for k in ("version", "vector_count", "recall_at_10", "precision_at_10")}
        for w in windows
    }
    return {"model_version": model_version, "window": window, "partitions": [d.isoformat() for d in dates]}


def switch_model(s: Settings, warehouse, model_version: str, run_id: str) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.index.reindex import ModelSwitchError
    from vecflow.index.reindex import switch_model as switch

    try:
        return switch(s, warehouse, model_version, run_id)
    except ModelSwitchError as exc:
        raise AirflowFailException(str(exc)) from None


# --- vecflow_retag --------------------------------------------------------------------------------


def retag_images(s: Settings, warehouse, run_id: str) -> dict:
    """Retags every stored clean image of the serving model with the configured taxonomy and head
    set, side by side, and switches image_tags when the gate holds; a refused gate fails the task
    without retries (a retry would be refused the same), image_tags unchanged."""
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.tagging import retag
    from vecflow.warehouse import migrate

    migrate(warehouse)
    done = retag(s, warehouse, run_id, s.model_version)
    if not done["switched"]:
        raise AirflowFailException(
            f"retag not switched: dimensions {done['lost_dimensions']} would lose every tag; image_tags unchanged"
        )
    return done


def search_index_retagged(s: Settings, warehouse, run_id: str) -> dict:
    """Rebuilds the Elasticsearch image documents of every partition the retag tagged (the serving
    model's), so search filters read the one tag version image_tags holds."""
    import pandas as pd

    from vecflow.search.client import search_client
    from vecflow.search.sink import index_partition
    from vecflow.taxonomy import load_taxonomy

    es = search_client(s.search.conn_id)
    dimensions = load_taxonomy().dimensions
    partitions = warehouse.query("select_model_partitions", model_versions=[s.model_version])["listed_date"]
    totals = {"partitions": 0, "documents": 0, "written": 0, "refused": 0, "stale_deleted": 0}
    for day in sorted(set(pd.to_datetime(partitions).dt.date)):
        stats = index_partition(es, warehouse, s, dimensions, day, run_id)
        totals["partitions"] += 1
        for key in ("documents", "written", "refused", "stale_deleted"):
            totals[key] += stats[key]
    log.info("retag: Elasticsearch image documents rebuilt: %s", totals)
    return totals
