"""Inflow watchdog: every hour, checks that each source's vectors arrived for the latest partition
that is due, against a floor and the source's rolling baseline (include/sql/inflow_watchdog.sql).
A missing or low source opens an incident and alerts once; its recovery alerts once more. Alerts
go to the configured webhook / Slack and the `alerts` table (see vecflow.alerts)."""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, task

from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test


@dag(
    dag_id="vecflow_watchdog",
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC"),
    **DAG_KWARGS,
    tags=["vecflow", "alerts"],
    doc_md=__doc__,
)
def vecflow_watchdog():
    @task
    def check_inflow() -> list[dict]:
        from vecflow import tasks

        run = tasks.current_run()
        return tasks.check_inflow(run.settings, run.warehouse(), run.run_after, run.run_id)

    check_inflow()


adapt_dag_test(vecflow_watchdog())
