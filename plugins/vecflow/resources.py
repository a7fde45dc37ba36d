"""Where vecflow's own files are: the project's `include/` (SQL, taxonomy, report and search
templates, trend specs, the model package and registry) and `dags/`, beside `plugins/` as in
Astronomer's project layout and the Airflow image (which mounts all three under /opt/airflow).

Every module finds these files through this one; nothing else computes a path from `__file__`.
"""

from __future__ import annotations

from pathlib import Path


def _project_dir() -> Path:
    """The project folder: the nearest parent of this package that holds include/sql."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "include" / "sql").is_dir():
            return parent
    raise FileNotFoundError(f"no include/sql folder above {here}: install vecflow editable from its project folder")


PROJECT_DIR = _project_dir()
DAGS_DIR = PROJECT_DIR / "dags"
INCLUDE_DIR = PROJECT_DIR / "include"
SQL_DIR = INCLUDE_DIR / "sql"
MODELS_DIR = INCLUDE_DIR / "models"
MODEL_REGISTRY_DIR = MODELS_DIR / "registry"
TAXONOMY_PATH = INCLUDE_DIR / "taxonomy.json"
DEFAULT_TREND_SPEC = INCLUDE_DIR / "trends" / "default.json"
REPORT_TEMPLATES_DIR = INCLUDE_DIR / "reports"
SEARCH_TEMPLATES_DIR = INCLUDE_DIR / "search"
