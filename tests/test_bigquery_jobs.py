"""BigQuery jobs against the emulator on 127.0.0.1: every query and load job a step runs carries the
task's labels (dag_id, task_id, run_id, partition), so its cost can be attributed."""

from __future__ import annotations

import uuid

import pandas as pd

from vecflow.warehouse import migrate
from vecflow.warehouse.bigquery_backend import BigQueryWarehouse, job_labels

TASK = {
    "dag_id": "vecflow_daily",
    "task_id": "embed.plan_shards",
    "run_id": "scheduled__2026-03-31T00:00:00+00:00",
    "partition": "2026-03-30",
}


def test_labels_are_what_bigquery_accepts():
    assert job_labels({**TASK, "note": None, "Owner": "Data Eng"}) == {
        "dag_id": "vecflow_daily",
        "task_id": "embed_plan_shards",
        "run_id": "scheduled__2026-03-31t00_00_00_00_00",
        "partition": "2026-03-30",
        "owner": "data_eng",
    }
    assert len(job_labels({"run_id": "x" * 100})["run_id"]) == 63


def test_every_job_of_a_step_carries_the_task_labels(bigquery_client, monkeypatch):
    warehouse = BigQueryWarehouse(bigquery_client, dataset=f"t_{uuid.uuid4().hex[:10]}", labels=TASK)
    bigquery_client.create_dataset(warehouse.dataset)
    configs = []
    query, load = bigquery_client.query, bigquery_client.load_table_from_file

    def labelled_query(sql, job_config=None, **kwargs):
        configs.append(("query", job_config))
        return query(sql, job_config=job_config, **kwargs)

    def labelled_load(*args, job_config=None, **kwargs):
        configs.append(("load", job_config))
        return load(*args, job_config=job_config, **kwargs)

    monkeypatch.setattr(bigquery_client, "query", labelled_query)
    monkeypatch.setattr(bigquery_client, "load_table_from_file", labelled_load)
    migrate(warehouse)
    rows = pd.DataFrame({"image_id": ["a"], "uri": ["a.jpg"], "listed_date": [pd.Timestamp("2026-03-30").date()]})
    warehouse.run(
        "replace_partition",
        rows=rows,
        names={"table": "catalog", "partition_column": "listed_date", "columns": list(rows.columns)},
        partition_value=rows["listed_date"][0],
    )
    assert {kind for kind, _ in configs} == {"query", "load"}
    expected = {"app": "vecflow", **job_labels(TASK)}
    assert all(config.labels == expected for _, config in configs), [c.labels for _, c in configs]
    assert len(warehouse.table("catalog")) == 1
