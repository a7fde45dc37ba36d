"""What each DAG task does, one function per task; DAG files only wire these together.

Each function reads the partition (logical date's data interval start) and run_id from the
Airflow context, so a task is idempotent per partition and safe to retry or rerun.
"""

from __future__ import annotations

import datetime as dt
import logging

log = logging.getLogger(__name__)


def _partition(context) -> tuple[dt.date, str]:
    return context["data_interval_start"].date(), context["run_id"]


def _env():
    from vecflow.config import settings
    from vecflow.warehouse import get_warehouse

    s = settings()
    return s, get_warehouse(s)


def _lineage(context, asset, run_date: dt.date, run_id: str, **produced) -> None:
    """Metadata on the task's asset event (when run by Airflow): partition, run and what was produced."""
    if "outlet_events" in context:
        context["outlet_events"][asset].extra = {"partition": run_date.isoformat(), "run_id": run_id, **produced}


def _shard_list(shards) -> list[dict]:
    """The planned shards as a list. Indexed, not iterated: iterating a mapped XCom sequence probes
    past its end and logs an error."""
    return [shards[i] for i in range(len(shards))]


def plan(context) -> list[dict]:
    from airflow.configuration import conf

    from vecflow.embed.plan import plan_shards
    from vecflow.warehouse import bootstrap

    s, warehouse = _env()
    bootstrap(warehouse)
    run_date, run_id = _partition(context)
    return plan_shards(s, warehouse, run_date, run_id, max_shards=conf.getint("core", "max_map_length"))


def embed(shard: dict, context) -> None:
    from vecflow.config import settings
    from vecflow.embed.runner import run_shard

    run_shard(shard, settings(), attempt=context["ti"].try_number)


def load(shards, context) -> dict:
    from vecflow.embed.load import load_shards

    _, warehouse = _env()
    run_date, run_id = _partition(context)
    from vecflow.assets import VECTOR_LOG

    stats = load_shards(warehouse, run_date, run_id, _shard_list(shards))
    _lineage(context, VECTOR_LOG, run_date, run_id, vectors=stats["vectors"], rejects=stats["rejects"])
    return stats


def clean(context) -> None:
    from vecflow.assets import VECTORS_CLEAN
    from vecflow.clean import clean_partition

    s, warehouse = _env()
    run_date, run_id = _partition(context)
    counts = clean_partition(s, warehouse, run_date, run_id)
    _lineage(context, VECTORS_CLEAN, run_date, run_id, **counts)


def tag(context) -> None:
    from vecflow.assets import IMAGE_TAGS
    from vecflow.tags import tag_partition

    s, warehouse = _env()
    run_date, run_id = _partition(context)
    tag_partition(warehouse, run_date, run_id, s.model_version)
    _lineage(context, IMAGE_TAGS, run_date, run_id)


def search_tags(context) -> dict:
    from vecflow.search.client import search_client
    from vecflow.search.sink import index_partition
    from vecflow.taxonomy import load_taxonomy

    s, warehouse = _env()
    return index_partition(
        search_client(s.search.conn_id), warehouse, s, load_taxonomy().dimensions, *_partition(context)
    )


def search_trends(context) -> dict:
    from vecflow.search.client import search_client
    from vecflow.search.sink import index_trends
    from vecflow.taxonomy import load_taxonomy

    s, warehouse = _env()
    return index_trends(search_client(s.search.conn_id), warehouse, s, load_taxonomy().dimensions, context["run_id"])


def index(context) -> dict:
    """Day indexes of the partition, then each category's window index, published if it passes its gate."""
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.index.build import build_day_indexes
    from vecflow.index.window import IndexGateError, build_and_publish, model_categories

    s, warehouse = _env()
    run_date, run_id = _partition(context)
    built = build_day_indexes(s, warehouse, run_date, run_id)
    try:
        windows = build_and_publish(
            s, warehouse, run_date, run_id, model_categories(s.paths.index_dir, s.model_version)
        )
    except IndexGateError as exc:
        raise AirflowFailException(str(exc)) from None  # a retry would build the same index
    from vecflow.assets import INDEXES

    produced = {
        "day": {b["category"]: b["vector_count"] for b in built},
        "window": {
            w["category"]: {k: w[k] for k in ("version", "status", "vector_count", "recall_at_10")} for w in windows
        },
    }
    _lineage(context, INDEXES, run_date, run_id, model_version=s.model_version, **produced)
    return produced


def quality(context) -> dict:
    """Records the partition's funnel, runs the quality suites (vector_log, vectors_clean, funnel) with
    their Data Docs, writes the run report, then fails the task if a suite failed."""
    from vecflow.funnel import record_funnel
    from vecflow.quality import DataQualityError, check_partition
    from vecflow.run_report import write_run_report

    s, warehouse = _env()
    run_date, run_id = _partition(context)
    record_funnel(warehouse, run_date, run_id, s.model_version)
    try:
        summary = check_partition(s, warehouse, run_date)
    except DataQualityError as exc:
        write_run_report(s, warehouse, run_date, run_id, exc.summary)
        raise
    report = write_run_report(s, warehouse, run_date, run_id, summary)
    log.info("run report: %s", report)
    return {name: result["success"] for name, result in summary.items()}


def trends(context) -> list[dict]:
    from vecflow.tags import compute_trends

    s, warehouse = _env()
    movers = compute_trends(warehouse, s.trends.flat_threshold)
    log.info("trend movers in the latest quarter:\n%s", movers.to_string(index=False))
    return movers.astype({"previous_share": float, "share": float, "share_change": float}).to_dict("records")


def summary(context) -> dict:
    from vecflow.report import write_summary

    s, warehouse = _env()
    if s.search.sink != "elasticsearch":
        return write_summary(s, warehouse)
    from vecflow.search.client import search_client
    from vecflow.taxonomy import load_taxonomy

    return write_summary(s, warehouse, search_client(s.search.conn_id), load_taxonomy().dimensions)


def _reindex_params(context) -> tuple[str, dt.date | None, dt.date | None]:
    params = context["params"]
    return (
        params["model_version"],
        *(dt.date.fromisoformat(params[k]) if params.get(k) else None for k in ("date_from", "date_to")),
    )


def reindex_plan(context) -> list[dict]:
    from airflow.configuration import conf

    from vecflow.index.reindex import plan_reindex

    s, warehouse = _env()
    model_version, date_from, date_to = _reindex_params(context)
    return plan_reindex(
        s,
        warehouse,
        model_version,
        context["run_id"],
        date_from,
        date_to,
        max_shards=conf.getint("core", "max_map_length"),
    )


def reindex_load(shards, context) -> dict:
    from vecflow.index.reindex import load_and_clean

    s, warehouse = _env()
    return load_and_clean(s, warehouse, _reindex_params(context)[0], context["run_id"], _shard_list(shards))


def reindex_indexes(shards, context) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.assets import INDEXES
    from vecflow.index.reindex import build_indexes
    from vecflow.index.window import IndexGateError

    s, warehouse = _env()
    model_version, run_id = _reindex_params(context)[0], context["run_id"]
    dates = sorted({dt.date.fromisoformat(shard["run_date"]) for shard in _shard_list(shards)})
    try:
        windows = build_indexes(s, warehouse, model_version, run_id, dates)
    except IndexGateError as exc:
        raise AirflowFailException(f"{model_version} not switched to: {exc}") from None
    produced = {
        w["category"]: {k: w[k] for k in ("version", "vector_count", "recall_at_10", "precision_at_10")}
        for w in windows
    }
    _lineage(
        context,
        INDEXES,
        dates[-1],
        run_id,
        model_version=model_version,
        window=produced,
        partitions=[d.isoformat() for d in dates],
    )
    return produced


def reindex_switch(context) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from vecflow.index.reindex import ModelSwitchError, switch_model

    s, warehouse = _env()
    try:
        return switch_model(s, warehouse, _reindex_params(context)[0], context["run_id"])
    except ModelSwitchError as exc:
        raise AirflowFailException(str(exc)) from None
