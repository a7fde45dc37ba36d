"""The package's structure holds: the pipeline runs without the demo, every setting is in the one
settings object and the README's table, and the embedding job's output schema is vector_log's."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from vecflow.config import settings, settings_table, variables
from vecflow.resources import DAGS_DIR, PROJECT_DIR

CODE = [
    *(PROJECT_DIR / "plugins").rglob("*.py"),
    *(PROJECT_DIR / "include").rglob("*.py"),
    *DAGS_DIR.glob("*.py"),
    *(PROJECT_DIR / "bench").glob("*.py"),
    PROJECT_DIR / "Makefile",
    PROJECT_DIR / "docker-compose.yaml",
    *(PROJECT_DIR / "docker").rglob("Dockerfile"),
    PROJECT_DIR / "include" / "models" / "Dockerfile",
]

# Imports every pipeline module and parses every DAG with vecflow.demo unimportable.
HIDE_DEMO = """
import importlib, pkgutil, sys
from importlib.abc import MetaPathFinder

class HideDemo(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vecflow.demo" or name.startswith("vecflow.demo."):
            raise ImportError(f"{name} is the demo: the pipeline must not import it")

sys.meta_path.insert(0, HideDemo())
import vecflow
names = [m.name for m in pkgutil.walk_packages(vecflow.__path__, "vecflow.") if not m.name.startswith("vecflow.demo")]
for name in names:
    importlib.import_module(name)
from vecflow.cli import main
try:  # the product command line builds every command without the demo
    main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(len(names), "modules,", len(bag.dags), "dags", file=sys.stderr)
"""


def test_the_pipeline_imports_without_the_demo():
    done = subprocess.run([sys.executable, "-c", HIDE_DEMO, str(DAGS_DIR)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    modules, dags = re.search(r"(\d+) modules, (\d+) dags", done.stderr).groups()
    assert int(modules) > 20 and int(dags) == 6


def test_every_variable_the_code_reads_is_a_setting_and_in_the_readme():
    declared = {v for v, *_ in variables()}
    used = set()
    for path in CODE:
        used |= set(re.findall(r"\bVECFLOW_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert used - declared == set(), "read by the code but not in vecflow.config"
    readme = (PROJECT_DIR / "README.md").read_text()
    assert settings_table() in readme, "README's settings table differs from `python -m vecflow.config`"


def test_only_the_settings_module_reads_vecflow_variables():
    # a read, not a write: environ.get("VECFLOW_..."), getenv(...), environ["VECFLOW_..."] not assigned to
    reads = re.compile(r"""(environ\.get\(|getenv\()\s*["']VECFLOW_|environ\[\s*["']VECFLOW_\w+["']\](?!\s*=[^=])""")
    readers = [p for p in CODE if p.suffix == ".py" and reads.search(p.read_text())]
    assert readers == [], "read a VECFLOW_* variable themselves instead of through vecflow.config.settings()"


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("VECFLOW_SHARD_SIZE", "lots", "VECFLOW_SHARD_SIZE='lots' is not an integer"),
        ("VECFLOW_INDEX_MIN_RECALL", "1.5", "VECFLOW_INDEX_MIN_RECALL='1.5' must be between 0.0 and 1.0"),
        ("VECFLOW_EMBED_BACKEND", "gpu", "VECFLOW_EMBED_BACKEND='gpu' must be 'local' or 'kubernetes'"),
        ("VECFLOW_ES_INDEX_VECTORS", "maybe", "VECFLOW_ES_INDEX_VECTORS='maybe' must be true or false"),
        ("VECFLOW_K8S_TOLERATIONS", "{}", "VECFLOW_K8S_TOLERATIONS='{}' must be a JSON list"),
        ("VECFLOW_BQ_ENDPOINT", "localhost:9050", "must be an http:// or https:// URL"),
        ("VECFLOW_TREND_PERIODS", "month,week", "VECFLOW_TREND_PERIODS='month,week' has unknown period(s) ['week']"),
        ("VECFLOW_TREND_FACETS", "category+category", "facet 'category+category' must be names joined by '+'"),
        ("VECFLOW_TREND_ALPHA", "0", "VECFLOW_TREND_ALPHA='0' must be between"),
    ],
)
def test_a_malformed_setting_names_its_variable(monkeypatch, variable, value, message):
    from vecflow.config import ConfigError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        settings().check()
    assert message in str(raised.value)


def test_a_trend_facet_on_an_unknown_key_is_named(monkeypatch):
    from vecflow.config import ConfigError
    from vecflow.tags import facet_kinds
    from vecflow.taxonomy import load_taxonomy

    monkeypatch.setenv("VECFLOW_TREND_FACETS", "category, fabric+source")
    with pytest.raises(ConfigError, match=r"VECFLOW_TREND_FACETS: facet 'fabric\+source' names \['fabric'\]"):
        facet_kinds(settings().trends, load_taxonomy())
    monkeypatch.setenv("VECFLOW_TREND_FACETS", "source+category,none_of_these")
    with pytest.raises(ConfigError, match="none_of_these"):
        facet_kinds(settings().trends, load_taxonomy())
    monkeypatch.setenv("VECFLOW_TREND_FACETS", "none")
    assert facet_kinds(settings().trends, load_taxonomy()) == [()]  # the whole catalog only


def test_a_malformed_setting_fails_only_its_group(monkeypatch):
    monkeypatch.setenv("VECFLOW_WATCHDOG_MIN_RATIO", "half")
    s = settings()
    assert s.dags.retry_delay_seconds >= 0 and s.search.sink == "elasticsearch"


def test_settings_are_parsed_from_the_environment_only(monkeypatch, tmp_path):
    """The serving model is read when asked for, not when the settings are parsed (DAG parse time)."""
    monkeypatch.setenv("VECFLOW_HOME", str(tmp_path))
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "SERVING").write_text("not json")
    s = settings().check()
    from vecflow.index.store import IndexIntegrityError

    with pytest.raises(IndexIntegrityError, match="index/SERVING: not valid JSON"):
        _ = s.model_version


def test_the_output_schema_is_the_vector_logs(warehouse):
    from vecflow.embed.load import LOG_COLUMNS
    from vecflow_model.contract import VECTOR_COLUMNS

    # the loader selects by name: the same names, in any order (and the category it resolves)
    assert sorted(warehouse.table("vector_log").columns) == sorted(LOG_COLUMNS)
    assert set(LOG_COLUMNS) - set(VECTOR_COLUMNS) == {"category"}


def test_a_shard_job_round_trips_through_the_entrypoint(tmp_path):
    from vecflow_model.contract import ShardJob
    from vecflow_model.embed import parse_args

    job = ShardJob(
        manifest=str(tmp_path / "m.parquet"),
        output=str(tmp_path / "o.parquet"),
        catalog_root=tmp_path,
        model_version="m1",
        registry=tmp_path / "registry",
        run_id="manual__2026-01-01",
        shard_id=7,
        attempt=3,
        device="cuda:1",
        batch_size=64,
        workers=2,
        amp="fp16",
        compile=True,
    )
    assert parse_args(job.to_args()) == job


def test_images_install_what_the_tests_ran():
    """The model image takes torch and the entrypoint's libraries at requirements.txt's pins; the
    Airflow image installs requirements.txt, without the test and demo tools."""
    model_image = (PROJECT_DIR / "include" / "models" / "Dockerfile").read_text()
    assert "grep -E '^(torch|numpy|pillow|simplejpeg|pyarrow)==' /tmp/requirements.txt" in model_image
    runtime = (PROJECT_DIR / "requirements.txt").read_text()
    assert {"torch", "numpy", "pillow", "simplejpeg", "pyarrow"} <= set(re.findall(r"^([\w-]+)==", runtime, re.M))
    assert not {"pytest", "noida-db", "ruff"} & set(re.findall(r"^([\w-]+)==", runtime, re.M))
    airflow_image = (PROJECT_DIR / "docker" / "airflow" / "Dockerfile").read_text()
    assert (
        "requirements-dev" not in airflow_image
        and "pip install --no-cache-dir --no-deps -e /opt/airflow" in airflow_image
    )


def test_the_cli_imports_airflow_only_when_a_command_needs_it():
    """`run` sets AIRFLOW_HOME and friends before Airflow is imported; importing it earlier (from a
    module the CLI loads to parse its arguments) would put the metadata database elsewhere."""
    probe = (
        "import sys; import vecflow.cli, vecflow.demo.runner, vecflow.catalog, vecflow.index.reindex, vecflow.config; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))[:3])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
