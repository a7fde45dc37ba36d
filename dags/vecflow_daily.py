"""Daily partition: catalog -> shards -> embeddings -> vector_log -> clean -> tags (+ Elasticsearch)
-> faiss -> funnel and quality suites -> run report.

Each run processes the catalog partition of its data interval (one listed_date) and replaces
that partition's outputs, so reruns and backfills are safe. Emits the image_tags asset, which
schedules `vecflow_trends`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task, task_group

from vecflow.alerts import deadline_alert
from vecflow.assets import IMAGE_TAGS, INDEXES, VECTOR_LOG, VECTORS_CLEAN
from vecflow.config import settings
from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test, embed_shards, index_stage


@dag(
    dag_id="vecflow_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    **DAG_KWARGS,
    tags=["vecflow", "daily"],
    deadline=deadline_alert(),
    doc_md=__doc__,
)
def vecflow_daily():
    from vecflow import tasks
    from vecflow.tasks import current_run

    @task_group(group_id="embed")
    def embed_stage():
        @task
        def plan_shards() -> list[dict]:
            run = current_run()
            return tasks.plan_shards(run.settings, run.warehouse(), run.run_date, run.run_id, tasks.max_shards())

        @task(outlets=[VECTOR_LOG])
        def load_vector_log(shards: list[dict]) -> dict:
            run = current_run()
            return run.emit(
                VECTOR_LOG, tasks.load_vector_log(run.settings, run.warehouse(), run.run_date, run.run_id, shards)
            )

        shards = plan_shards()
        embedded = embed_shards(shards)
        loaded = load_vector_log(shards)
        embedded >> loaded
        return loaded

    @task(outlets=[VECTORS_CLEAN])
    def clean() -> dict:
        run = current_run()
        return run.emit(VECTORS_CLEAN, tasks.clean(run.settings, run.warehouse(), run.run_date, run.run_id))

    @task(outlets=[IMAGE_TAGS])
    def tag_images() -> None:
        run = current_run()
        tasks.tag_images(run.settings, run.warehouse(), run.run_date, run.run_id)
        run.emit(IMAGE_TAGS)

    @task(outlets=[INDEXES], retry_delay=dt.timedelta(minutes=1))
    def build_indexes(group: int = 0) -> dict:
        """Day indexes, then the window index per category (of one build group), published when it
        passes its gate."""
        run = current_run()
        built = tasks.build_indexes(run.settings, run.warehouse(), run.run_date, run.run_id, group)
        return run.emit(INDEXES, built)

    @task
    def check_quality() -> dict:
        """Funnel, Great Expectations suites and Data Docs, run report (reports/<date>/index.html)."""
        run = current_run()
        return tasks.check_quality(run.settings, run.warehouse(), run.run_date, run.run_id)

    @task
    def search_index_tags() -> dict:
        run = current_run()
        return tasks.search_index_tags(run.settings, run.warehouse(), run.run_date, run.run_id)

    cleaned = clean()
    tagged = tag_images()
    indexed = index_stage(build_indexes, after=tagged)  # an index's metadata carries the image's tags
    embed_stage() >> cleaned >> tagged
    if settings().search.sink == "elasticsearch":
        tagged = tagged >> search_index_tags()
    [tagged, indexed] >> check_quality()


adapt_dag_test(vecflow_daily())
