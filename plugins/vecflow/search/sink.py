"""Writes image tags (one document per canonical image, an index per quarter behind one alias) and
tag trends (one document per tag_trends row: period, facet, dimension, tag) to Elasticsearch. Document ids are deterministic, so a rerun overwrites; documents of a
partition left from an earlier run are deleted; documents Elasticsearch refuses become rejects."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vecflow.funnel import replace_rejects, replace_stage_funnel
from vecflow.resources import SEARCH_TEMPLATES_DIR

log = logging.getLogger(__name__)

TEMPLATES_DIR = SEARCH_TEMPLATES_DIR
BULK_MAX_RETRIES = 4  # per document, on 429 (Elasticsearch's "too many requests"), with backoff
BULK_INITIAL_BACKOFF_S = 1.0
BULK_MAX_BACKOFF_S = 30.0
MAX_DETAIL = 500
TREND_ID_COLUMNS = ("period_kind", "period", "facet", "dimension", "tag")
TREND_INT_COLUMNS = ("tag_count", "dimension_total", "tests_in_period", "mover_rank")


class SearchSinkError(RuntimeError):
    """Elasticsearch refused more documents than the configured error rate allows."""


@dataclass(frozen=True)
class SearchIndexes:
    prefix: str

    @property
    def image_tags(self) -> str:
        """The alias analysts and dashboards query; it spans every quarter's index."""
        return f"{self.prefix}-image-tags"

    def image_tags_of(self, day: dt.date) -> str:
        return f"{self.image_tags}-{day.year}q{(day.month - 1) // 3 + 1}"

    @property
    def tag_trends(self) -> str:
        return f"{self.prefix}-tag-trends"


def period_label(day: dt.date, period_kind: str) -> str:
    """The period `day` falls in, as tag_trends.period names it: '2026-05' (month), '2026-Q2' (quarter)."""
    if period_kind == "month":
        return f"{day.year}-{day.month:02d}"
    if period_kind == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    raise ValueError(f"unknown period kind {period_kind!r}: month or quarter")


def _template(name: str) -> dict:
    body = json.loads((TEMPLATES_DIR / name).read_text())
    body.pop("_comment", None)
    return body


def image_tags_template(dimensions: list[str], vector_dim: int | None) -> dict:
    body = copy.deepcopy(_template("image_tags_template.json"))
    props = body["mappings"]["properties"]
    for dim in dimensions:
        props["tags"]["properties"][dim] = {"type": "keyword"}
        props["confidence"]["properties"][dim] = {"type": "float"}
        props["tag_source"]["properties"][dim] = {"type": "keyword"}
    if vector_dim:
        props["embedding"] = {"type": "dense_vector", "dims": vector_dim, "index": True, "similarity": "cosine"}
    return body


def ensure_templates(es, indexes: SearchIndexes, dimensions: list[str], vector_dim: int | None) -> None:
    """Index templates (idempotent): every quarter's image-tags index gets the mappings and the alias."""
    image_tags = image_tags_template(dimensions, vector_dim)
    es.indices.put_index_template(
        name=indexes.image_tags,
        index_patterns=[f"{indexes.image_tags}-*"],
        priority=100,
        template={**image_tags, "aliases": {indexes.image_tags: {}}},
    )
    es.indices.put_index_template(
        name=indexes.tag_trends,
        index_patterns=[indexes.tag_trends],
        priority=100,
        template=_template("tag_trends_template.json"),
    )


def image_documents(rows: pd.DataFrame, run_id: str) -> list[dict]:
    """One document per image from select_search_docs rows (image x dimension x tag), in one pass over
    the columns as Python lists: a pandas group per image cost ~1.3 ms an image."""
    rows = rows.sort_values("image_id", kind="stable")
    column = {name: rows[name].tolist() for name in rows.columns if name != "listed_date"}
    # dates as codes into their few distinct values: a Timestamp per row is slow to make
    date_codes, days = pd.factorize(rows["listed_date"])
    day_labels = [(day.isoformat(), period_label(day, "quarter")) for day in (pd.Timestamp(d).date() for d in days)]
    has_embedding = "embedding" in column
    docs: list[dict] = []
    doc: dict = {}
    for i, image_id in enumerate(column["image_id"]):
        if not docs or doc["image_id"] != image_id:
            listed, quarter = day_labels[date_codes[i]]
            doc = {
                "image_id": image_id,
                "listed_date": listed,
                "quarter": quarter,
                "source": column["source"][i],
                "model_version": column["model_version"][i],
                "run_id": run_id,
                "tags": {},
                "confidence": {},
                "tag_source": {},
                "_category": column["predicted_category"][i],
            }
            if isinstance(column["attributes"][i], str):
                doc["attributes"] = json.loads(column["attributes"][i])
            if has_embedding:
                doc["embedding"] = np.asarray(column["embedding"][i], dtype=np.float64).tolist()
            docs.append(doc)
        dimension = column["dimension"][i]
        if not isinstance(dimension, str):  # an image without tag rows (NULL dimension)
            continue
        doc["tags"].setdefault(dimension, []).append(column["tag"][i])
        confidence = column["confidence"][i]
        if confidence is not None and confidence == confidence:  # not NULL, not NaN
            doc["confidence"][dimension] = max(float(confidence), doc["confidence"].get(dimension, 0.0))
        doc["tag_source"][dimension] = column["tag_source"][i]
    return docs


def bulk_write(es, index_of, docs: list[dict], id_of, chunk_size: int, threads: int = 1) -> list[dict]:
    """streaming_bulk with per-document retries on 429, `threads` streams over interleaved slices of
    the documents at once (the client is thread-safe; parallel_bulk has no retries); returns the
    documents refused, with why."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, min(threads, -(-len(docs) // chunk_size)))
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda k: _stream(es, index_of, docs[k::threads], id_of, chunk_size), range(threads)))
    written = sum(count for count, _ in results)
    failed = [refusal for _, refused in results for refusal in refused]
    log.info("bulk: %d written, %d refused (%d streams)", written, len(failed), threads)
    return failed


def _stream(es, index_of, docs: list[dict], id_of, chunk_size: int) -> tuple[int, list[dict]]:
    from elasticsearch import helpers

    actions = (
        {
            "_op_type": "index",
            "_index": index_of(d),
            "_id": id_of(d),
            "_source": {k: v for k, v in d.items() if not k.startswith("_")},
        }
        for d in docs
    )
    failed = []
    written = 0
    for ok, item in helpers.streaming_bulk(
        es,
        actions,
        chunk_size=chunk_size,
        max_retries=BULK_MAX_RETRIES,
        initial_backoff=BULK_INITIAL_BACKOFF_S,
        max_backoff=BULK_MAX_BACKOFF_S,
        raise_on_error=False,
    ):
        if ok:
            written += 1
            continue
        result = next(iter(item.values()))
        error = result.get("error") or {}
        if not isinstance(error, dict):
            error = {"type": "error", "reason": str(error)}
        failed.append(
            {
                "_id": result.get("_id"),
                "status": result.get("status"),
                "type": error.get("type", "error"),
                "reason": str(error.get("reason", error))[:MAX_DETAIL],
            }
        )
    return written, failed


def index_partition(es, warehouse, settings, dimensions: list[str], run_date: dt.date, run_id: str) -> dict:
    indexes = SearchIndexes(settings.search.index_prefix)
    rows = warehouse.query(
        "select_search_docs",
        names={"extra_columns": ["embedding"] if settings.search.index_vectors else []},
        run_date=run_date,
        model_version=settings.model_version,
    )
    delisted = rows[rows["delisted"].fillna(False).astype(bool)]
    docs = image_documents(rows[~rows["image_id"].isin(delisted["image_id"])].drop(columns="delisted"), run_id)
    vector_dim = len(docs[0]["embedding"]) if docs and settings.search.index_vectors else None
    ensure_templates(es, indexes, dimensions, vector_dim)
    index = indexes.image_tags_of(run_date)  # a partition's documents live only in its quarter's index
    failed = bulk_write(
        es, lambda d: index, docs, lambda d: d["image_id"], settings.search.chunk_size, settings.search.bulk_threads
    )
    # documents of this partition from an earlier run (dropped since, or refused now) go away
    es.indices.refresh(index=index)
    stale = es.delete_by_query(
        index=index,
        refresh=True,
        conflicts="proceed",
        query={
            "bool": {
                "filter": [{"term": {"listed_date": run_date.isoformat()}}],
                "must_not": [{"term": {"run_id": run_id}}],
            }
        },
    )
    category = {d["image_id"]: d["_category"] for d in docs}
    _record(warehouse, run_date, run_id, docs, failed, category, delisted.drop_duplicates("image_id"))
    # the images delisted by this partition's feed (any quarter) and this partition's delisted ones
    removed = warehouse.query("select_delisted")
    removed = set(removed.loc[pd.to_datetime(removed["partition_date"]).dt.date == run_date, "image_id"])
    stats = {
        "delisted_deleted": delete_images(es, indexes, sorted(removed | set(delisted["image_id"]))),
        "documents": len(docs),
        "written": len(docs) - len(failed),
        "refused": len(failed),
        "stale_deleted": int(stale.get("deleted", 0)),
        "index": index,
    }
    log.info("search sink %s: %s", run_date, stats)
    if docs and len(failed) > settings.search.max_error_rate * len(docs):
        reasons = Counter(f["type"] for f in failed)
        raise SearchSinkError(
            f"Elasticsearch refused {len(failed)} of {len(docs)} documents of {run_date} (allowed: "
            f"{settings.search.max_error_rate:.1%}); by reason {dict(reasons)}; first: {failed[0]['_id']}: "
            f"{failed[0]['reason']} (all in rejects, stage 'search')"
        )
    return stats


def delete_images(es, indexes: SearchIndexes, image_ids: list[str]) -> int:
    """Deletes the image documents of `image_ids` from every quarter's index; returns how many went."""
    deleted = 0
    if not image_ids or not es.indices.exists(index=indexes.image_tags):
        return 0
    # each quarter's index by name: on the loopback server (noida-db) a delete_by_query on an alias over
    # several indexes deletes in one of them only
    for index in sorted(es.indices.get_alias(name=indexes.image_tags)):
        for start in range(0, len(image_ids), 1000):
            answer = es.delete_by_query(
                index=index,
                refresh=True,
                conflicts="proceed",
                query={"terms": {"image_id": image_ids[start : start + 1000]}},
            )
            deleted += int(answer.get("deleted", 0))
    return deleted


def _record(warehouse, run_date, run_id, docs, failed, category, delisted: pd.DataFrame) -> None:
    """Refused documents into rejects, and the search stage of the funnel (in / out / dropped)."""
    rejects = pd.DataFrame(
        {
            "image_id": [f["_id"] for f in failed],
            "reason": [f"es_{f['type']}" for f in failed],
            "detail": [f"status {f['status']}: {f['reason']}" for f in failed],
            "category": [category.get(f["_id"]) for f in failed],
        }
    )
    replace_rejects(warehouse, "search", run_date, run_id, rejects)
    counts: Counter = Counter()
    refused = {f["_id"]: f"dropped.es_{f['type']}" for f in failed}
    for d in docs:
        counts[(d["_category"], "in")] += 1
        counts[(d["_category"], refused.get(d["image_id"], "out"))] += 1
    for image_category in delisted["predicted_category"].fillna("unknown"):  # not written: delisted
        counts[(image_category, "in")] += 1
        counts[(image_category, "dropped.delisted")] += 1
    replace_stage_funnel(warehouse, "search", run_date, run_id, counts)


def trend_rows_as_documents(trends: pd.DataFrame, run_id: str) -> list[dict]:
    """tag_trends rows as documents: every column (nulls as null), dates as ISO days, counts as ints,
    built column by column (a pandas record per row, with a null check per value, cost ~40 us a row)."""
    columns = {}
    for name in trends.columns:
        values = trends[name]
        if name == "period_start":
            values = pd.to_datetime(values).dt.strftime("%Y-%m-%d")
        elif name in TREND_INT_COLUMNS:
            values = values.astype("Int64")
        elif name == "partial":
            values = values.astype("boolean")
        columns[name] = values.astype(object).where(values.notna(), None).tolist()
    names = [*columns, "run_id"]
    return [dict(zip(names, (*row, run_id))) for row in zip(*columns.values())]


def trend_id(doc: dict) -> str:
    return "|".join(str(doc[column]) for column in TREND_ID_COLUMNS)


def _drop_if_outdated(es, index: str, template: dict) -> bool:
    """An index written under an earlier template (a field it lacks would be refused: the mapping is
    strict) is deleted, to be created anew; index_trends writes every document again anyway."""
    if not es.indices.exists(index=index):
        return False
    mapping = next(iter(es.indices.get_mapping(index=index).values()))["mappings"].get("properties", {})
    if set(template["mappings"]["properties"]) <= set(mapping):
        return False
    log.warning(
        "%s has an earlier mapping (no %s): deleted, written anew",
        index,
        sorted(set(template["mappings"]["properties"]) - set(mapping)),
    )
    es.indices.delete(index=index)
    return True


def index_trends(es, warehouse, settings, dimensions: list[str], run_id: str) -> dict:
    """The tag_trends table as documents (id period_kind|period|facet|dimension|tag), every facet and
    period kind; rows gone from it are deleted."""
    indexes = SearchIndexes(settings.search.index_prefix)
    ensure_templates(es, indexes, dimensions, None)
    _drop_if_outdated(es, indexes.tag_trends, _template("tag_trends_template.json"))
    docs = trend_rows_as_documents(warehouse.table("tag_trends"), run_id)
    failed = bulk_write(
        es, lambda d: indexes.tag_trends, docs, trend_id, settings.search.chunk_size, settings.search.bulk_threads
    )
    if failed:
        raise SearchSinkError(
            f"Elasticsearch refused {len(failed)} of {len(docs)} trend documents; first: "
            f"{failed[0]['_id']}: {failed[0]['reason']}"
        )
    if not es.indices.exists(index=indexes.tag_trends):  # no rows, and no index from an earlier run
        return {"documents": 0, "stale_deleted": 0, "index": indexes.tag_trends}
    es.indices.refresh(index=indexes.tag_trends)
    stale = es.delete_by_query(
        index=indexes.tag_trends,
        refresh=True,
        conflicts="proceed",
        query={"bool": {"must_not": [{"term": {"run_id": run_id}}]}},
    )
    return {"documents": len(docs), "stale_deleted": int(stale.get("deleted", 0)), "index": indexes.tag_trends}
