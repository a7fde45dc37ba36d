"""Quarterly tag trends over all partitions (also as Elasticsearch documents), and the run summary;
runs when image_tags change."""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from vecflow.assets import IMAGE_TAGS
from vecflow.config import settings
from vecflow.dag_defaults import DAG_KWARGS


@dag(
    dag_id="vecflow_trends",
    schedule=[IMAGE_TAGS],
    **DAG_KWARGS,
    tags=["vecflow", "trends"],
    doc_md=__doc__,
)
def vecflow_trends():
    from vecflow import tasks

    @task
    def tag_trends() -> list[dict]:
        return tasks.trends(get_current_context())

    @task
    def write_summary() -> dict:
        return tasks.summary(get_current_context())

    @task
    def search_index_trends() -> dict:
        return tasks.search_trends(get_current_context())

    trends = tag_trends()
    if settings().search.sink == "elasticsearch":
        trends = trends >> search_index_trends()
    trends >> write_summary()


vecflow_trends()
