"""DAG integrity: every DAG imports, has an owner, tags and retries, and parses without heavy imports."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY_MODULES = [
    "torch",
    "faiss",
    "great_expectations",
    "google.cloud.bigquery",
    "duckdb",
    "pandas",
    "sqlglot",
    "elasticsearch",
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"vecflow_daily", "vecflow_trends", "vecflow_catalog_health", "vecflow_retag"} <= set(dagbag.dag_ids)


def test_every_dag_has_owner_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            # checks that give a verdict (funnel, model switch) do not retry: a retry would give the same one
            assert task.retries >= 2 or task.task_id in ("check_quality", "switch_model"), (
                f"{dag_id}.{task.task_id} retries"
            )


def test_daily_dag_uses_a_data_interval_timetable(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["vecflow_daily"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.max_active_runs == 1 and dag.catchup is False


PROBE = """
import json, sys, time
# the framework itself is not the DAG file's cost
from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task, task_group
started = time.perf_counter()
import runpy; runpy.run_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - started,
                  "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_without_heavy_imports(dag_file):
    """A fresh interpreter parses the file; torch, faiss, GX, the Google client, DuckDB and pandas
    must not be imported by it (they belong inside tasks)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file), json.dumps(HEAVY_MODULES)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{dag_file.name}: parsed in {result['seconds']:.3f} s")
    assert result["heavy"] == [], f"{dag_file.name} imports {result['heavy']} at parse time"


def test_probe_catches_a_heavy_top_level_import(tmp_path):
    bad = tmp_path / "bad_dag.py"
    bad.write_text("import pandas\n")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(bad), json.dumps(HEAVY_MODULES)], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["heavy"] == ["pandas"]


@pytest.mark.parametrize("sink, expected", [("elasticsearch", True), ("none", False)])
def test_search_tasks_follow_the_search_sink_setting(sink, expected):
    probe = (
        "from airflow.dag_processing.dagbag import DagBag; import sys; "
        "bag = DagBag(dag_folder=sys.argv[1]); assert not bag.import_errors, bag.import_errors; "
        "print(sorted(t for d in bag.dags.values() for t in d.task_ids if t.startswith('search_')))"
    )
    env = {**__import__("os").environ, "VECFLOW_SEARCH_SINK": sink}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags")], env=env, capture_output=True, text=True, check=True
    )
    found = done.stdout.strip().splitlines()[-1]
    assert found == ("['search_index_retagged', 'search_index_tags', 'search_index_trends']" if expected else "[]")


def test_the_daily_dag_has_a_deadline_alert_unless_turned_off(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VECFLOW_DAILY_DEADLINE_MINUTES", "90")
    daily = DagBag(dag_folder=str(REPO / "dags" / "vecflow_daily.py")).dags["vecflow_daily"]
    (deadline,) = daily.deadline
    assert deadline.interval.total_seconds() == 90 * 60
    assert all(task.on_failure_callback for task in daily.tasks)


def test_the_daily_dag_maps_build_indexes_over_the_groups(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VECFLOW_INDEX_BUILD_GROUPS", "4")
    dag = DagBag(dag_folder=str(REPO / "dags" / "vecflow_daily.py")).dags["vecflow_daily"]
    task = dag.get_task("build_indexes")
    assert task.is_mapped and task.op_kwargs_expand_input.value == {"group": [0, 1, 2, 3]}


def test_the_catalog_health_dag_sweeps_once_a_day(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["vecflow_catalog_health"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable) and [t.task_id for t in dag.tasks] == ["sweep_links"]


def test_every_dag_is_adapted_to_dag_test(dagbag):
    from vecflow.dag_defaults import _test_run

    for dag_id, dag in dagbag.dags.items():
        assert dag.test.__func__ is _test_run, f"{dag_id}: its file does not call adapt_dag_test"


FLAKY_DAG = """
import datetime as dt

from airflow.sdk import dag, get_current_context, task

from vecflow.alerts import deadline_alert
from vecflow.dag_defaults import DAG_KWARGS, adapt_dag_test


@dag(dag_id="flaky", schedule=None, deadline=deadline_alert(), **DAG_KWARGS, tags=["test"])
def flaky():
    @task(retry_delay=dt.timedelta(minutes=5))
    def first_try_fails(shard: int):
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("the first try fails")

    first_try_fails.expand(shard=[0, 1])


adapt_dag_test(flaky())
"""


def test_dag_test_finishes_a_dag_with_a_deadline_and_retries_at_once(airflow_db, tmp_path, monkeypatch):
    """Airflow 3.3.2's dag.test() fails a successful run of a DAG with a DeadlineAlert
    (apache/airflow#73428) and waits out each retry delay: adapt_dag_test runs it without either."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VECFLOW_DAILY_DEADLINE_MINUTES", "45")
    monkeypatch.setattr("airflow.settings.DAGS_FOLDER", str(tmp_path))  # dag.test() syncs the DAG from its bundle
    (tmp_path / "flaky.py").write_text(FLAKY_DAG)
    dag = DagBag(dag_folder=str(tmp_path / "flaky.py")).get_dag("flaky")
    started = time.monotonic()
    run = dag.test()
    took = time.monotonic() - started
    assert run.state == "success"
    assert {(ti.map_index, ti.try_number) for ti in run.get_task_instances()} == {(0, 2), (1, 2)}
    assert took < 120, f"{took:.0f} s: a retry waited its delay (300 s)"
    # the DAG a scheduler runs keeps its deadline and delays
    assert len(dag.deadline) == 1 and dag.get_task("first_try_fails").retry_delay == dt.timedelta(minutes=5)


def test_airflow_dags_test_runs_a_partition(airflow_db, tmp_path, monkeypatch):
    """README "Run one partition with airflow dags test": the CLI on a tiny generated catalog, with the
    settings' defaults (a deadline alert, 300 s retry delays) and no plugins folder, exits 0 and fills
    the partition."""
    from vecflow.warehouse import get_warehouse

    env = {
        k: v for k, v in os.environ.items() if k not in ("VECFLOW_RETRY_DELAY_SECONDS", "AIRFLOW__CORE__PLUGINS_FOLDER")
    }
    env |= {"VECFLOW_HOME": str(tmp_path), "VECFLOW_SEARCH_SINK": "none"}
    generate = ["generate-catalog", "--start-date", "2026-03-30", "--days", "1", "--images-per-day", "6"]
    subprocess.run([sys.executable, "-m", "vecflow.demo", *generate], env=env, check=True, capture_output=True)
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [airflow, "dags", "test", "vecflow_daily", "2026-03-31"], env=env, capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    monkeypatch.setenv("VECFLOW_HOME", str(tmp_path))
    clean = get_warehouse().table("vectors_clean")
    assert len(clean) > 0 and set(clean["listed_date"].astype(str)) == {"2026-03-30"}
