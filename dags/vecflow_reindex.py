"""Model change: re-embed every partition with a new model_version, build its indexes side by side,
and switch the serving model only after they pass the gate (seed 001 2.2.2).

Trigger manually with the new model_version (it must be in the model registry). The old model keeps
serving searches and the daily run keeps embedding with it until `switch_model` succeeds; a failed
gate leaves everything as it was. Partitions the daily run adds while a reindex runs are reported by
the switch gate: rerun the reindex for them with date_from/date_to.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from vecflow.assets import INDEXES, VECTORS_CLEAN
from vecflow.dag_defaults import DAG_KWARGS, embed_shards

DATE_PARAM = {"type": ["null", "string"], "format": "date"}


@dag(
    dag_id="vecflow_reindex",
    schedule=None,
    **DAG_KWARGS,
    tags=["vecflow", "reindex"],
    doc_md=__doc__,
    params={
        "model_version": Param(type="string", minLength=1, description="the new model, as named in the model registry"),
        "date_from": Param(None, **DATE_PARAM, description="first partition to reindex (default: the first)"),
        "date_to": Param(None, **DATE_PARAM, description="last partition to reindex (default: the last)"),
    },
)
def vecflow_reindex():
    from vecflow import tasks

    @task
    def plan_reindex() -> list[dict]:
        return tasks.reindex_plan(get_current_context())

    @task(outlets=[VECTORS_CLEAN])
    def load_and_clean(shards: list[dict]) -> dict:
        return tasks.reindex_load(shards, get_current_context())

    @task(outlets=[INDEXES])
    def build_indexes(shards: list[dict]) -> dict:
        return tasks.reindex_indexes(shards, get_current_context())

    @task(retries=0)  # a failed gate is a verdict, not a transient failure
    def switch_model() -> dict:
        return tasks.reindex_switch(get_current_context())

    shards = plan_reindex()
    embed_shards(shards) >> load_and_clean(shards) >> build_indexes(shards) >> switch_model()


vecflow_reindex()
