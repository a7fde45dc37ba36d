"""Retag history without re-embedding: after a new taxonomy (VECFLOW_TAXONOMY_URL) or head set
(`vecflow.cli tags train`), tag every stored clean image of the serving model from its stored vector,
analyses and catalog row, side by side with the serving image_tags, and switch image_tags in one
transaction once the gate holds (every dimension that had tags still has some). Then the partitions'
Elasticsearch image documents are rebuilt, and the image_tags asset makes `vecflow_trends` recompute
trends from the one tag version. A refused gate fails `retag_images` and leaves everything as it was.

Trigger manually (`airflow dags trigger vecflow_retag`); `python -m vecflow.cli tags retag` does the
warehouse part from a shell.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from vecflow.assets import IMAGE_TAGS
from vecflow.config import settings
from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test


@dag(
    dag_id="vecflow_retag",
    schedule=None,
    **DAG_KWARGS,
    tags=["vecflow", "tags"],
    doc_md=__doc__,
)
def vecflow_retag():
    from vecflow import tasks
    from vecflow.tasks import current_run

    @task
    def retag_images() -> dict:
        run = current_run()
        return tasks.retag_images(run.settings, run.warehouse(), run.run_id)

    @task
    def search_index_retagged() -> dict:
        run = current_run()
        return tasks.search_index_retagged(run.settings, run.warehouse(), run.run_id)

    @task(outlets=[IMAGE_TAGS])
    def publish_image_tags(retagged: dict) -> None:
        """Announces the switched image_tags only now, so trends never start before search is rebuilt."""
        current_run().emit(IMAGE_TAGS, retagged)

    retagged = retag_images()
    published = publish_image_tags(retagged)
    if settings().search.sink == "elasticsearch":
        retagged >> search_index_retagged() >> published


adapt_dag_test(vecflow_retag())
