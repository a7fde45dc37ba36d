"""Model change: re-embed every partition with a new model_version, build its indexes side by side,
and switch the serving model only after they pass the gate (seed 001 2.2.2).

Trigger manually with the new model_version (it must be in the model registry). The old model keeps
serving searches and the daily run keeps embedding with it until `switch_model` succeeds; a failed
gate leaves everything as it was. Partitions the daily run adds while a reindex runs are reported by
the switch gate: rerun the reindex for them with date_from/date_to.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

from vecflow.assets import INDEXES, VECTORS_CLEAN
from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test, embed_shards

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
    from vecflow.tasks import current_run, reindex_params

    @task
    def plan_reindex() -> list[dict]:
        run = current_run()
        model_version, date_from, date_to = reindex_params(run.params)
        return tasks.plan_reindex(
            run.settings, run.warehouse(), model_version, run.run_id, date_from, date_to, tasks.max_shards()
        )

    @task(outlets=[VECTORS_CLEAN])
    def load_and_clean(shards: list[dict]) -> dict:
        run = current_run()
        model_version = reindex_params(run.params)[0]
        return tasks.load_and_clean(run.settings, run.warehouse(), model_version, run.run_id, shards)

    @task(outlets=[INDEXES])
    def build_indexes(shards: list[dict]) -> dict:
        run = current_run()
        model_version = reindex_params(run.params)[0]
        built = tasks.build_reindex_indexes(run.settings, run.warehouse(), model_version, run.run_id, shards)
        run.emit(INDEXES, built, partition=max(dt.date.fromisoformat(d) for d in built["partitions"]))
        return built["window"]

    @task(retries=0)  # a failed gate is a verdict, not a transient failure
    def switch_model() -> dict:
        run = current_run()
        return tasks.switch_model(run.settings, run.warehouse(), reindex_params(run.params)[0], run.run_id)

    shards = plan_reindex()
    embed_shards(shards) >> load_and_clean(shards) >> build_indexes(shards) >> switch_model()


adapt_dag_test(vecflow_reindex())
