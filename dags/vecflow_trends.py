"""Quarterly tag trends over all partitions (also as Elasticsearch documents), and the run summary;
runs when image_tags change."""

from __future__ import annotations

from airflow.sdk import dag, task

from vecflow.assets import IMAGE_TAGS
from vecflow.config import settings
from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test


@dag(
    dag_id="vecflow_trends",
    schedule=[IMAGE_TAGS],
    **DAG_KWARGS,
    tags=["vecflow", "trends"],
    doc_md=__doc__,
)
def vecflow_trends():
    from vecflow import tasks
    from vecflow.tasks import current_run

    @task
    def tag_trends() -> list[dict]:
        run = current_run()
        return tasks.tag_trends(run.settings, run.warehouse())

    @task
    def write_summary() -> dict:
        run = current_run()
        return tasks.write_summary(run.settings, run.warehouse())

    @task
    def search_index_trends() -> dict:
        run = current_run()
        return tasks.search_index_trends(run.settings, run.warehouse(), run.run_id)

    trends = tag_trends()
    if settings().search.sink == "elasticsearch":
        trends = trends >> search_index_trends()
    trends >> write_summary()


adapt_dag_test(vecflow_trends())
