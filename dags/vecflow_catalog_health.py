"""Catalog health: every day, after the day's partition, checks the links of the served images
through the fetch layer (all of them, or VECFLOW_CATALOG_SWEEP_PER_CATEGORY per category plus those
found dead last time) and delists an image whose link was dead on two sweeps in a row (reason
`dead_link`): it leaves search at once (the tombstone set), the next window index and Elasticsearch.
Checks are in the `link_checks` table, removals in `delistings` (see vecflow.lifecycle)."""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task

from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test


@dag(
    dag_id="vecflow_catalog_health",
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    **DAG_KWARGS,
    tags=["vecflow", "lifecycle"],
    doc_md=__doc__,
)
def vecflow_catalog_health():
    @task
    def sweep_links() -> dict:
        from vecflow import tasks

        run = tasks.current_run()
        done = tasks.sweep_links(run.settings, run.warehouse(), run.run_date, run.run_id)
        return {k: v for k, v in done.items() if k != "delisted_ids"}

    sweep_links()


adapt_dag_test(vecflow_catalog_health())
