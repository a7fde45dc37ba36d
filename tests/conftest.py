"""Test setup: Airflow's environment is fixed before anything imports airflow."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="vecflow-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "VECFLOW_RETRY_DELAY_SECONDS": "1",
    "VECFLOW_HOME": str(Path(tempfile.mkdtemp(prefix="vecflow-home-"))),
})
sys.path.insert(0, str(REPO / "plugins"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database for dag.test() runs."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=os.environ,
                   stdout=subprocess.DEVNULL)
    return _AIRFLOW_HOME / "airflow.db"


@pytest.fixture
def vecflow_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "vecflow"
    monkeypatch.setenv("VECFLOW_HOME", str(home))
    return home


@pytest.fixture
def warehouse(vecflow_home):
    from vecflow.warehouse import bootstrap, get_warehouse

    wh = get_warehouse()
    bootstrap(wh)
    return wh
