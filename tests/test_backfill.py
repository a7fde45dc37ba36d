"""Backfill and rerun through the scheduler, as a data engineer does them: `airflow standalone` on
127.0.0.1 (its own process group, stopped by group id), `airflow backfill create` over three past
dates, then the same command for one of them with --reprocess-behavior completed. The rerun leaves
the tables and index manifests identical to the backfill's."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from warehouse_rows import manifest_snapshot, snapshot

from vecflow.config import settings
from vecflow.demo.runner import generate_catalog
from vecflow.resources import DEFAULT_TREND_SPEC, PROJECT_DIR
from vecflow.warehouse import get_warehouse

PARTITIONS = [dt.date(2026, 3, 30) + dt.timedelta(days=i) for i in range(3)]
AIRFLOW = [sys.executable, "-m", "airflow"]
WAIT_SECONDS = 900
CLI_LOCKED_SECONDS = 240  # how long an `airflow` command is retried while refused as locked (or by an orphan)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logical_date(partition: dt.date) -> str:
    """A scheduled or backfilled run's logical date is the start of its data interval: the partition
    (it runs after the interval ends, the next day)."""
    return partition.isoformat()


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory, search_server):
    home = tmp_path_factory.mktemp("backfill")
    port = free_port()
    env = {
        **os.environ,
        "VECFLOW_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # only the backfills' runs: no scheduled run for today's partition, which this catalog lacks
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "VECFLOW_ES_INDEX_PREFIX": "backfill",
        "VECFLOW_DAILY_DEADLINE_MINUTES": "120",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "airflow_sqlite.CONNECT_ARGS",
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_DIR / "plugins"), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
        # standalone starts its components as `airflow ...` from PATH
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECFLOW_HOME", str(home))
        generate_catalog(
            argparse.Namespace(
                seed=3, start_date=PARTITIONS[0], days=len(PARTITIONS), images_per_day=20, trends=DEFAULT_TREND_SPEC
            )
        )
    subprocess.run([*AIRFLOW, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    log = open(home / "standalone.log", "w")
    # its own process group: standalone's children ignore SIGTERM sent to standalone alone
    server = subprocess.Popen(
        [*AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    db = home / "airflow" / "airflow.db"
    try:
        wait_for(
            lambda: query(db, "SELECT COUNT(*) FROM dag WHERE dag_id = 'vecflow_daily' AND NOT has_import_errors")[0][
                0
            ],
            "the dag processor to parse vecflow_daily",
            server,
            home,
        )
        # the runs of a paused DAG stay queued, backfill runs included
        airflow_cli(env, "dags", "unpause", "vecflow_daily")
        yield env, home, db, server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def airflow_cli(env: dict, *args: str, orphan_refusal: str | None = None) -> None:
    """An `airflow` command against the running server's metadata database. SQLite (this test's
    database) refuses a write that meets the scheduler's with "database is locked"; the command's
    transaction is rolled back, so it is run again until it is not refused that way.

    `backfill create` commits its backfill row before it creates the runs, and Airflow removes the
    row after a lock error only on Postgres and MySQL: a try refused as locked can leave an orphan
    that refuses the next try (`orphan_refusal`) until the scheduler marks it complete (two minutes
    after its creation). Such a refusal, after a locked try, is retried too."""
    from waiting import wait_until

    runs: list[subprocess.CompletedProcess] = []

    def refused_as(text: str) -> bool:
        return runs[-1].returncode != 0 and text in runs[-1].stderr

    def not_locked_out() -> bool:
        runs.append(subprocess.run([*AIRFLOW, *args], env=env, capture_output=True, text=True))
        if refused_as("database is locked"):
            return False
        locked_before = any("database is locked" in run.stderr for run in runs[:-1])
        return not (orphan_refusal and locked_before and refused_as(orphan_refusal))

    wait_until(
        not_locked_out,
        timeout=CLI_LOCKED_SECONDS,
        interval=3,
        what=f"`airflow {' '.join(args)}` to run without 'database is locked'",
        detail=lambda: f"{len(runs)} tries; the last one's stderr:\n{runs[-1].stderr[-3000:]}",
    )
    done = runs[-1]
    assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"


def query(db: Path, sql: str, *args) -> list[tuple]:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # a table not created yet
        return [(0,)]


def wait_for(done, what: str, server, home: Path):
    """Polls `done` (a query of the metadata database) until it is truthy; fails at once if the server exits."""
    from waiting import wait_until

    def log_tail() -> str:
        return f"log tail:\n{(home / 'standalone.log').read_text()[-3000:]}"

    def server_done():
        if server.poll() is not None:
            raise RuntimeError(f"airflow standalone exited {server.returncode}; {log_tail()}")
        return done()

    return wait_until(server_done, timeout=WAIT_SECONDS, interval=5, what=what, detail=log_tail)


def backfill(env, db, server, home, first: dt.date, last: dt.date, *extra) -> list[tuple]:
    """Creates a backfill and waits until it completes; returns its runs' (logical date, state)."""
    # one run at a time, oldest first: dedup and the index window compare a day with the days before it
    airflow_cli(
        env,
        "backfill",
        "create",
        "--dag-id",
        "vecflow_daily",
        "--from-date",
        logical_date(first),
        "--to-date",
        logical_date(last),
        "--max-active-runs",
        "1",
        *extra,
        orphan_refusal="AlreadyRunningBackfill",
    )
    # the newest backfill is this call's: an orphan of a locked try is older
    (backfill_id,) = query(db, "SELECT MAX(id) FROM backfill")[0]
    wait_for(
        lambda: query(db, "SELECT completed_at FROM backfill WHERE id = ?", backfill_id)[0][0],
        f"backfill {backfill_id}",
        server,
        home,
    )
    return query(
        db, "SELECT date(logical_date), state FROM dag_run WHERE backfill_id = ? ORDER BY logical_date", backfill_id
    )


def attempts_of(vectors, partition: dt.date) -> set[int]:
    return set(vectors.loc[vectors["listed_date"].astype(str) == str(partition), "attempt"])


def test_a_backfill_then_a_rerun_of_one_date_leave_the_same_tables(airflow_server):
    env, home, db, server = airflow_server
    runs = backfill(env, db, server, home, PARTITIONS[0], PARTITIONS[-1])
    assert runs == [(logical_date(p), "success") for p in PARTITIONS], runs

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECFLOW_HOME", str(home))
        warehouse = get_warehouse(settings())
        tables, manifests = snapshot(warehouse), manifest_snapshot(Path(settings().paths.index_url))
        assert set(warehouse.table("vectors_clean")["listed_date"].astype(str)) == {str(p) for p in PARTITIONS}

        rerun = backfill(env, db, server, home, PARTITIONS[1], PARTITIONS[1], "--reprocess-behavior", "completed")
        assert rerun == [(logical_date(PARTITIONS[1]), "success")], rerun
        assert snapshot(warehouse) == tables
        assert manifest_snapshot(Path(settings().paths.index_url)) == manifests
        # the rerun clears the date's run, so its vectors come as the next attempt of the same run:
        # vector_log keeps both (append-only), the view only the rerun's
        assert attempts_of(warehouse.table("vector_log"), PARTITIONS[1]) == {1, 2}
        assert attempts_of(warehouse.table("v_vector_log_latest"), PARTITIONS[1]) == {2}
