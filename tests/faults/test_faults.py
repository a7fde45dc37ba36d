"""Faults the pipeline must survive without losing or doubling data. Each test plants the fault,
lets the step fail the way it fails in production, recovers the way a retry or a rerun does, and
ends with the partition's funnel balanced. docs/RELIABILITY.md lists these and the faults proven
elsewhere (retried shards, redelivered partitions, corrupt files, bad vectors, bad config, an
interrupted index publish)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from warehouse_rows import D1, catalog, load, row, snapshot, tag_partition

from vecflow.clean import clean_partition
from vecflow.config import settings
from vecflow.funnel import record_sql_funnel
from vecflow.index.build import build_day_indexes
from vecflow.taxonomy import load_taxonomy

pytestmark = pytest.mark.usefixtures("model_m1")
IDS = [f"img-{i:02d}" for i in range(12)]


def processed_partition(warehouse, run_id="run-1"):
    """D1 through embed, clean, tags and its day index (what the funnel's stages count)."""
    catalog(warehouse, D1, IDS)
    load(warehouse, [row(i, D1) for i in IDS], D1, run_id=run_id)
    rerun_steps(warehouse, run_id)


def rerun_steps(warehouse, run_id):
    clean_partition(settings(), warehouse, D1, run_id)
    tag_partition(warehouse, D1, run_id, "m1")
    build_day_indexes(settings(), warehouse, D1, run_id)


def search_documents(es, index) -> pd.DataFrame:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=1000)["hits"]["hits"]
    return pd.DataFrame([{"image_id": h["_id"], "run_id": h["_source"]["run_id"]} for h in hits])


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_elasticsearch_down_mid_partition_then_back(warehouse, tmp_path, monkeypatch):
    """The server stops after a bulk wrote part of a partition: the task fails with a connection
    error; when the server is back, the retry writes every document under its run and deletes what
    the broken attempt left, and the search stage of the funnel balances."""
    from elasticsearch import ApiError, Elasticsearch, TransportError

    from vecflow.demo.search_server import LocalSearchServer
    from vecflow.search.sink import SearchIndexes, index_partition

    monkeypatch.setenv("VECFLOW_ES_INDEX_PREFIX", "faults")
    s, dimensions = settings(), load_taxonomy().dimensions
    processed_partition(warehouse)
    server = LocalSearchServer(tmp_path / "es").start()
    try:
        es = Elasticsearch(server.url, request_timeout=5, max_retries=1)
        index_partition(es, warehouse, s, dimensions, D1, "run-1")
        index = SearchIndexes(s.search.index_prefix).image_tags_of(D1)
        # the broken attempt: half its documents written, then the server goes away
        for image_id in IDS[:6]:
            es.index(
                index=index, id=image_id, document={"image_id": image_id, "listed_date": str(D1), "run_id": "run-2"}
            )
        server.stop()
        with pytest.raises((TransportError, ApiError, ConnectionError)):
            index_partition(es, warehouse, s, dimensions, D1, "run-2")
        server.start()
        es = Elasticsearch(server.url, request_timeout=5, max_retries=1)
        stats = index_partition(es, warehouse, s, dimensions, D1, "run-3")
        docs = search_documents(es, index)
        assert stats["written"] == len(IDS) and sorted(docs["image_id"]) == IDS
        assert set(docs["run_id"]) == {"run-3"}  # nothing of the broken attempt is left
    finally:
        server.stop()
    record_sql_funnel(warehouse, D1, "run-3", "m1")
    assert warehouse.query("funnel_violations", run_date=D1).empty


def test_a_step_that_fails_halfway_leaves_its_partition_as_it_was(warehouse):
    """A SQL file runs as one transaction (DuckDB's, or a BigQuery script job between BEGIN and COMMIT
    TRANSACTION): when a statement after the DELETE fails (here the INSERT of rows the table cannot
    take: a reject without its reason, which the column requires), the partition keeps its old rows;
    the retried step replaces them."""
    processed_partition(warehouse)
    before = snapshot(warehouse)
    bad_rows = pd.DataFrame(
        {
            "image_id": ["x"],
            "listed_date": [D1],
            "stage": ["embed"],
            "reason": pd.Series([None], dtype=object),
            "detail": [""],
            "category": ["dress"],
            "run_id": ["run-2"],
        }
    )
    with pytest.raises(Exception, match="(?i)null"):
        warehouse.run(
            "replace_partition",
            rows=bad_rows,
            names={
                "table": "rejects",
                "partition_column": "listed_date",
                "stage_column": "stage",
                "columns": list(bad_rows.columns),
            },
            partition_value=D1,
            stage="validate",
        )
    assert snapshot(warehouse) == before


def test_the_warehouse_held_by_another_process_fails_the_step_cleanly_and_the_retry_succeeds(warehouse_file):
    """DuckDB allows one writing process: a step that meets another writer waits for it up to
    VECFLOW_DUCKDB_LOCK_TIMEOUT_SECONDS, then fails with the lock error (Airflow retries it) having
    written nothing; once the other process is gone the retry completes."""
    warehouse, path = warehouse_file
    processed_partition(warehouse)
    before = snapshot(warehouse)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="(?i)lock"):
            clean_partition(settings(), warehouse, D1, "run-2")
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(warehouse) == before
    rerun_steps(warehouse, "run-2")
    assert snapshot(warehouse) == before  # the same data; only run ids and times differ
    record_sql_funnel(warehouse, D1, "run-2", "m1")
    assert warehouse.query("funnel_violations", run_date=D1).empty


@pytest.fixture
def warehouse_file(vecflow_home, monkeypatch):
    from vecflow.tagging import publish_taxonomy
    from vecflow.warehouse import bootstrap, get_warehouse

    monkeypatch.setenv("VECFLOW_DUCKDB_LOCK_TIMEOUT_SECONDS", "1")

    warehouse = get_warehouse()
    bootstrap(warehouse)
    publish_taxonomy(warehouse, load_taxonomy())  # what loading a shard does first
    return warehouse, warehouse.path
