"""The demo's runner: generates the catalog (unless the same one is already there), then drives the
date range through Airflow itself: one `vecflow_daily` DAG run per partition (dag.test, in this
process, on the SQLite metadata database under VECFLOW_HOME/airflow); then, as merchandisers would,
trains the head dimensions on the generator's labelled sample (`tags train`) and retags history with
them (`vecflow_retag`); then `vecflow_trends`, and prints the summary with the planted-truth checks
and every dimension's tags against the truth. With the Elasticsearch sink on and no connection
defined, it starts the loopback stand-in server for the run (data under VECFLOW_HOME/elasticsearch).
`python -m vecflow.demo run|generate-catalog|search-server` reach it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vecflow.cli import parse_date
from vecflow.config import settings
from vecflow.embed.staging import staging
from vecflow.index.store import index_store
from vecflow.resources import DAGS_DIR, DEFAULT_TREND_SPEC, PROJECT_DIR

log = logging.getLogger("vecflow.demo")


def add_catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-date", type=parse_date, default=dt.date(2026, 1, 1))
    p.add_argument("--days", type=int, default=181, help="partitions (days) to generate")
    p.add_argument("--images-per-day", type=int, default=40)
    p.add_argument("--trends", type=Path, default=DEFAULT_TREND_SPEC, help="trend spec JSON")


def generate_catalog(args: argparse.Namespace, force: bool = True) -> bool:
    """Generates the catalog; returns False when the same catalog already exists and force is off."""
    from vecflow.demo.catalog.generate import CatalogParams, catalog_identity, generate
    from vecflow.demo.catalog.spec import load_trend_spec
    from vecflow.taxonomy import load_taxonomy

    s = settings()
    taxonomy = load_taxonomy()
    spec = load_trend_spec(args.trends, taxonomy)
    params = CatalogParams(args.seed, args.start_date, args.days, args.images_per_day)
    existing = s.paths.catalog_dir / "truth" / "params.json"
    wanted = catalog_identity(params, spec, taxonomy)
    if not force and existing.exists():
        have = json.loads(existing.read_text())
        if {k: have.get(k) for k in wanted} == wanted:
            log.info("catalog with these parameters already in %s", s.paths.catalog_dir)
            return False
    generate(s.paths.catalog_dir, params, spec, taxonomy)
    return True


def airflow_env(home: Path) -> dict:
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
    }


def prepare_airflow(home: Path) -> None:
    """Sets the environment before airflow is imported and migrates the metadata database once."""
    os.environ.update(airflow_env(home))
    db = home / "airflow" / "airflow.db"
    if not db.exists():
        (home / "airflow").mkdir(parents=True, exist_ok=True)
        log.info("initialising the Airflow metadata database in %s", db)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=os.environ, stdout=subprocess.DEVNULL
        )


class RunError(RuntimeError):
    """A DAG run failed, or did not do what it was run for."""


def run_partitions(dates: list[dt.date], before_trends: Callable | None = None) -> None:
    """One vecflow_daily run per partition, then `before_trends(dagbag)` if given, then vecflow_trends;
    the data interval [D, D+1) is the run whose logical date is D + 1 day (interval timetables run at
    the end of their interval). A run that did not process its partition, or in which a task did not
    run, is an error, whatever state it ended in."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    if bag.import_errors:
        raise RunError(f"DAG import errors: {bag.import_errors}")
    daily, trends = bag.get_dag("vecflow_daily"), bag.get_dag("vecflow_trends")
    started = time.perf_counter()
    for i, day in enumerate(dates, 1):
        run_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        dag_run = daily.test(logical_date=run_end)
        check_run(daily, dag_run, f"vecflow_daily for partition {day}")
        if dag_run.data_interval_start.date() != day:
            raise RunError(f"vecflow_daily for partition {day} processed {dag_run.data_interval_start.date()}")
        elapsed = time.perf_counter() - started
        # print, not log: Airflow reconfigures logging once a DAG runs
        print(f"vecflow_daily {day}: success ({i}/{len(dates)}, {elapsed / i:.1f} s/run)", flush=True)
    if before_trends is not None:
        before_trends(bag)
    check_run(trends, trends.test(), "vecflow_trends")


def train_heads_and_retag(bag) -> None:
    """The head dimensions' heads trained on the generator's labelled sample (truth/labels.csv, what
    `vecflow.cli tags train --labels` reads) over the stored vectors, then a vecflow_retag run: history
    tagged again with them, one tag version throughout."""
    from vecflow.heads import read_labels, tag_table, train_heads
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import get_warehouse

    s = settings()
    warehouse = get_warehouse(s)
    labels = read_labels(s, warehouse, str(s.paths.catalog_dir / "truth" / "labels.csv"))
    heads, report = train_heads(s, warehouse, labels, load_taxonomy())
    if heads is None:
        raise RunError(f"tags train trained no head: {report}")
    table = tag_table(report)
    print(
        f"tags train: head set {heads.version} on {len(labels)} labels, {int(table['published'].sum())} of "
        f"{len(table)} tags published (held-out F1 {table['f1'].min():.3f}..{table['f1'].max():.3f})",
        flush=True,
    )
    retag = bag.get_dag("vecflow_retag")
    check_run(retag, retag.test(), "vecflow_retag")
    print("vecflow_retag: success", flush=True)


def demo_registry(home: Path) -> Path:
    """A model registry under VECFLOW_HOME linking the shipped models, so the head sets the demo trains
    stay out of the project's include/models/registry."""
    from vecflow.resources import MODEL_REGISTRY_DIR
    from vecflow_model.registry import link_model

    registry = home / "registry"
    for model in MODEL_REGISTRY_DIR.iterdir():
        if (model / "card.json").exists():
            link_model(model, registry)
    return registry


def check_run(dag, dag_run, what: str) -> None:
    """Raises unless the run succeeded and every task of the DAG ran in it (a mapped task over no
    shards counts as run when it was skipped)."""
    if dag_run.state != "success":
        raise RunError(f"{what} ended {dag_run.state}")
    ran = {ti.task_id for ti in dag_run.get_task_instances() if ti.state in ("success", "skipped")}
    missing = sorted(set(dag.task_ids) - ran)
    if missing:
        raise RunError(f"{what} ended {dag_run.state} but these tasks did not run: {', '.join(missing)}")


@contextlib.contextmanager
def search_server_if_needed(s):
    """The loopback search server for this run, unless the sink is off or its connection is defined."""
    from vecflow.demo.search_server import LocalSearchServer

    variable = f"AIRFLOW_CONN_{s.search.conn_id.upper()}"
    if s.search.sink != "elasticsearch" or os.environ.get(variable):
        yield
        return
    with LocalSearchServer(s.paths.search_data_dir) as server:
        os.environ[variable] = server.connection_uri
        print(f"search sink: Elasticsearch-compatible server on {server.url} for this run", flush=True)
        try:
            yield
        finally:
            os.environ.pop(variable, None)


def cmd_run(args: argparse.Namespace) -> int:
    s = settings()
    if generate_catalog(args, force=False):
        # a new catalog invalidates everything derived from the old one
        index_store(s).remove("")
        staging(s).remove(s.paths.staging_url)
        for derived in (
            s.paths.warehouse_path,
            s.paths.reports_dir,
            s.paths.search_data_dir,
        ):
            if derived.is_dir():
                shutil.rmtree(derived)
            elif derived.exists():
                derived.unlink()
    # the DAGs start no later than the catalog (unless the caller set the start date: then a date before it fails)
    os.environ.setdefault("VECFLOW_START_DATE", min(args.start_date, s.dags.start_date).isoformat())
    from vecflow.resources import MODEL_REGISTRY_DIR

    if s.embed.model_registry == MODEL_REGISTRY_DIR:  # the shipped registry: head sets go under VECFLOW_HOME
        os.environ["VECFLOW_MODEL_REGISTRY"] = str(demo_registry(s.paths.home))
    prepare_airflow(s.paths.home)
    dates = [args.start_date + dt.timedelta(days=i) for i in range(args.days)]
    from vecflow.demo.tag_accuracy import format_tag_accuracy, write_tag_accuracy
    from vecflow.demo.truth import format_summary, planted_truth
    from vecflow.warehouse import get_warehouse

    with search_server_if_needed(s):
        run_partitions(dates, before_trends=train_heads_and_retag)
        search = None
        if s.search.sink == "elasticsearch":
            from vecflow.search.client import search_client

            search = search_client(s.search.conn_id)
        truth = planted_truth(s, get_warehouse(s), search)
    summary = json.loads((s.paths.reports_dir / "summary.json").read_text())
    print(format_summary({**summary, **truth}))
    print(format_tag_accuracy(write_tag_accuracy(s, get_warehouse(s))))
    trends = truth.get("trends", {})
    missed = [c for c in trends.get("planted", []) if c["ok"] is False]
    return 1 if missed or trends.get("false_movers") else 0


def cmd_search_server(args: argparse.Namespace) -> int:
    """The loopback search server in the foreground until SIGINT/SIGTERM (for `make airflow`)."""
    import signal

    from vecflow.demo.search_server import LocalSearchServer

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with LocalSearchServer(settings().paths.search_data_dir, port=args.port) as server:
        print(f"Elasticsearch-compatible server on {server.url}; connection {server.connection_uri}", flush=True)
        try:
            while not stop and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0
