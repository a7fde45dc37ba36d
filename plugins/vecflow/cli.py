"""Command line: `python -m vecflow.cli generate-catalog ...` and `python -m vecflow.cli run ...`.

`run` generates the catalog (unless the same one is already there), then drives the date range
through Airflow itself: one `vecflow_daily` DAG run per partition (dag.test, in this process, on the
SQLite metadata database under VECFLOW_HOME/airflow), then `vecflow_trends`, and prints the summary.
With the Elasticsearch sink on and no connection defined, it starts the loopback stand-in server
for the run (data under VECFLOW_HOME/elasticsearch).
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
from pathlib import Path

from vecflow.config import settings
from vecflow.resources import DAGS_DIR, DEFAULT_TREND_SPEC, PROJECT_DIR

log = logging.getLogger("vecflow.cli")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def add_catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-date", type=_date, default=dt.date(2026, 1, 1))
    p.add_argument("--days", type=int, default=181, help="partitions (days) to generate")
    p.add_argument("--images-per-day", type=int, default=40)
    p.add_argument("--trends", type=Path, default=DEFAULT_TREND_SPEC, help="trend spec JSON")


def generate_catalog(args: argparse.Namespace, force: bool = True) -> bool:
    """Generates the catalog; returns False when the same catalog already exists and force is off."""
    from vecflow.catalog.generate import GENERATOR_VERSION, CatalogParams, generate
    from vecflow.catalog.spec import load_trend_spec
    from vecflow.taxonomy import load_taxonomy

    s = settings()
    taxonomy = load_taxonomy()
    spec = load_trend_spec(args.trends, taxonomy)
    params = CatalogParams(args.seed, args.start_date, args.days, args.images_per_day)
    existing = s.paths.catalog_dir / "truth" / "params.json"
    wanted = {
        "generator_version": GENERATOR_VERSION,
        "seed": params.seed,
        "start_date": params.start_date.isoformat(),
        "days": params.days,
        "images_per_day": params.images_per_day,
        "spec": spec.to_json(),
    }
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
        "VECFLOW_RETRY_DELAY_SECONDS": os.environ.get("VECFLOW_RETRY_DELAY_SECONDS", "2"),
        # dag.test() cannot finish a DAG with a DeadlineAlert in Airflow 3.3.2 (see alerts.deadline_alert)
        "VECFLOW_DAILY_DEADLINE_MINUTES": "0",
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


def run_partitions(dates: list[dt.date]) -> None:
    """One vecflow_daily run per partition; the data interval [D, D+1) is the run whose logical
    date is D + 1 day (interval timetables run at the end of their interval)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    daily, trends = bag.get_dag("vecflow_daily"), bag.get_dag("vecflow_trends")
    started = time.perf_counter()
    for i, day in enumerate(dates, 1):
        run_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        dag_run = daily.test(logical_date=run_end)
        if dag_run.state != "success":
            raise RuntimeError(f"vecflow_daily for partition {day} ended {dag_run.state}")
        elapsed = time.perf_counter() - started
        # print, not log: Airflow reconfigures logging once a DAG runs
        print(f"vecflow_daily {day}: success ({i}/{len(dates)}, {elapsed / i:.1f} s/run)", flush=True)
    dag_run = trends.test()
    if dag_run.state != "success":
        raise RuntimeError(f"vecflow_trends ended {dag_run.state}")


@contextlib.contextmanager
def search_server_if_needed(s):
    """The loopback search server for this run, unless the sink is off or its connection is defined."""
    from vecflow.search.local_server import LocalSearchServer

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
        for derived in (
            s.paths.warehouse_path,
            s.paths.index_dir,
            s.paths.staging_dir,
            s.paths.reports_dir,
            s.paths.search_data_dir,
        ):
            if derived.is_dir():
                shutil.rmtree(derived)
            elif derived.exists():
                derived.unlink()
    prepare_airflow(s.paths.home)
    dates = [args.start_date + dt.timedelta(days=i) for i in range(args.days)]
    with search_server_if_needed(s):
        run_partitions(dates)
    from vecflow.report import format_summary

    summary = json.loads((s.paths.reports_dir / "summary.json").read_text())
    print(format_summary(summary))
    failed = [c for c in summary.get("planted_trends", []) if not c["ok"]]
    return 1 if failed else 0


def cmd_search_server(args: argparse.Namespace) -> int:
    """The loopback search server in the foreground until SIGINT/SIGTERM (for `make airflow`)."""
    import signal

    from vecflow.search.local_server import LocalSearchServer

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


def cmd_search(args: argparse.Namespace) -> int:
    from vecflow.index.search import search
    from vecflow.warehouse import get_warehouse

    s = settings()
    results = search(s, get_warehouse(s), args.image, args.k, args.category)
    print(f"predicted category: {results.attrs.get('predicted_category')}; {len(results)} results")
    print(results.to_string(index=False) if len(results) else "(no published index)")
    return 0


def cmd_index_rollback(args: argparse.Namespace) -> int:
    from vecflow.index.window import rollback
    from vecflow.warehouse import get_warehouse

    s = settings()
    print(f"{s.model_version}/{args.category}: now serving {rollback(s, get_warehouse(s), args.category)}")
    return 0


def cmd_switch_model(args: argparse.Namespace) -> int:
    from vecflow.index.reindex import switch_model
    from vecflow.warehouse import get_warehouse

    s = settings()
    pointer = switch_model(s, get_warehouse(s), args.model_version, run_id="manual")
    print(f"serving model: {pointer['model_version']} (was {pointer['previous_model_version']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU build it tries
    parser = argparse.ArgumentParser(prog="python -m vecflow.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate-catalog", help="generate the catalog and its truth under VECFLOW_HOME")
    add_catalog_args(gen)
    run = sub.add_parser("run", help="generate the catalog if needed and run the pipeline through Airflow")
    add_catalog_args(run)
    server = sub.add_parser("search-server", help="run the loopback Elasticsearch-compatible server")
    server.add_argument("--port", type=int, default=9200)
    finder = sub.add_parser("search", help="nearest catalog images of a picture, from the published indexes")
    finder.add_argument("--image", type=Path, required=True)
    finder.add_argument("--k", type=int, default=10)
    finder.add_argument("--category", help="a category, or 'all' (default: the predicted one)")
    back = sub.add_parser("index-rollback", help="serve the window index published before the current one")
    back.add_argument("--category", required=True)
    switch = sub.add_parser("switch-model", help="serve another model's indexes (the reindex switch gate applies)")
    switch.add_argument("--model-version", required=True)
    args = parser.parse_args(argv)
    from vecflow.config import ConfigError
    from vecflow.index.reindex import ModelSwitchError

    try:
        settings().check()  # a malformed variable of any group stops the command before it starts
        if args.command == "generate-catalog":
            generate_catalog(args)
            return 0
        commands = {
            "search-server": cmd_search_server,
            "search": cmd_search,
            "index-rollback": cmd_index_rollback,
            "run": cmd_run,
            "switch-model": cmd_switch_model,
        }
        return commands[args.command](args)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except ModelSwitchError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
