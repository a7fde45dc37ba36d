"""vecflow_daily over two partitions and vecflow_trends on the BigQuery backend (the emulator on
127.0.0.1, through the real client), and the same runs on DuckDB: the tables hold the same content
(index_registry too, once its paths are taken relative to each run's own index store)."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

import pandas as pd
import pytest
from warehouse_rows import DERIVED_TABLES, VOLATILE, snapshot

from vecflow.config import settings
from vecflow.demo.runner import generate_catalog, run_partitions
from vecflow.resources import DEFAULT_TREND_SPEC
from vecflow.warehouse import get_warehouse

START = dt.date(2026, 3, 30)
DAYS = [START, START + dt.timedelta(days=1)]


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory, airflow_db, search_server, bigquery_endpoint):
    out = {}
    for backend in ("duckdb", "bigquery"):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VECFLOW_HOME", str(tmp_path_factory.mktemp(backend)))
            env.setenv("VECFLOW_ES_INDEX_PREFIX", f"e2e-{backend}")
            if backend == "bigquery":
                env.setenv("VECFLOW_WAREHOUSE", "bigquery")
                env.setenv("VECFLOW_BQ_ENDPOINT", bigquery_endpoint)
                env.setenv("VECFLOW_BQ_PROJECT", "vecflow-test")
                env.setenv("VECFLOW_BQ_DATASET", f"e2e_{uuid.uuid4().hex[:10]}")
            generate_catalog(
                argparse.Namespace(
                    seed=9, start_date=START, days=len(DAYS), images_per_day=20, trends=DEFAULT_TREND_SPEC
                )
            )
            run_partitions(DAYS)
            warehouse = get_warehouse(settings())
            registry = warehouse.table("index_registry")
            # index paths name each run's own store; what is below it must be the same
            registry["path"] = registry["path"].str.split("/index/", n=1).str[1]
            registry = registry[[c for c in registry.columns if c not in VOLATILE]].astype(str)
            out[backend] = (
                snapshot(warehouse),
                {t: len(warehouse.table(t)) for t in DERIVED_TABLES},
                registry.sort_values(list(registry.columns)).reset_index(drop=True),
            )
    return out


def test_the_daily_and_trends_runs_leave_the_same_tables_on_bigquery_and_duckdb(snapshots):
    (duckdb, duckdb_rows, duckdb_registry) = snapshots["duckdb"]
    (bigquery, bigquery_rows, bigquery_registry) = snapshots["bigquery"]
    assert duckdb_rows["vectors_clean"] > 0 and duckdb_rows["tag_trends"] > 0
    assert bigquery_rows == duckdb_rows
    assert {t for t in DERIVED_TABLES if bigquery[t] != duckdb[t]} == {"index_registry"}
    pd.testing.assert_frame_equal(bigquery_registry, duckdb_registry)
