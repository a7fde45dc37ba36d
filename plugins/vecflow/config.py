"""Paths and settings, read from the environment (Airflow Variables can override in DAGs).

Everything a run writes lies under VECFLOW_HOME (default `.data/` in the repository).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INCLUDE_DIR = REPO_ROOT / "include"
SQL_DIR = INCLUDE_DIR / "sql"
MODELS_DIR = INCLUDE_DIR / "models"
TAXONOMY_PATH = INCLUDE_DIR / "taxonomy.json"
DEFAULT_TREND_SPEC = INCLUDE_DIR / "trends" / "default.json"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


DEFAULT_MODEL_VERSION = "garment-arcface-v1"


def import_models_package() -> None:
    """Makes include/models importable (vecflow_model: the embedding entrypoint and registry), as the
    container image's PYTHONPATH does for pods."""
    if str(MODELS_DIR) not in sys.path:
        sys.path.insert(0, str(MODELS_DIR))


def write_json_atomically(path: Path, payload: dict) -> None:
    """Writes a small JSON file through a temporary file, fsync and rename: a reader sees the old
    content or the new, never half of it (index pointers)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def serving_pointer(home: Path) -> Path:
    """index/SERVING names the model whose indexes are served and which the daily run embeds with;
    a reindex run writes it when it switches models."""
    return home / "index" / "SERVING"


def serving_model_version(home: Path) -> str:
    """The serving model: index/SERVING once a reindex switched models, else VECFLOW_MODEL_VERSION
    (the first model). Setting the variable to another model after a switch is a ConfigError, since
    the daily run would embed with a model other than the one served."""
    configured = os.environ.get("VECFLOW_MODEL_VERSION") or None
    pointer = serving_pointer(home)
    if not pointer.exists():
        return configured or DEFAULT_MODEL_VERSION
    serving = read_json(pointer, "serving model pointer")["model_version"]
    if configured and configured != serving:
        raise ConfigError(f"VECFLOW_MODEL_VERSION={configured!r} but {pointer} names {serving!r} (switched by a "
                          f"reindex run): unset the variable, or switch back with `python -m vecflow.cli "
                          f"switch-model --model-version {configured}`")
    return serving


def read_json(path: Path, what: str):
    """A JSON config file, or a ConfigError that names the file and what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from None


def env_int(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name}={value} must be {bounds}")
    return value


def env_float(name: str, default: float, minimum: float = float("-inf"), maximum: float = float("inf")) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


@dataclass(frozen=True)
class Settings:
    home: Path
    shard_size: int
    embed_batch_size: int
    embed_runner: str
    embed_workers: int
    model_version: str
    model_registry: Path
    trend_flat_threshold: float
    index_factory: str
    index_nlist: int
    index_train_sample: int
    index_window_days: int
    index_nprobe: int
    index_eval_queries: int
    index_min_recall: float
    index_max_recall_drop: float
    reindex_max_precision_drop: float
    quality_max_bad_vector_share: float
    index_keep_versions: int
    index_long_tail_days: int
    index_long_tail_similarity: float
    near_dup_lookback_days: int
    near_dup_max_hamming: int
    near_dup_min_edge_similarity: float
    es_conn_id: str
    es_index_prefix: str
    es_chunk_size: int
    es_max_error_rate: float
    es_index_vectors: bool

    @property
    def catalog_dir(self) -> Path:
        return self.home / "catalog"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def search_data_dir(self) -> Path:
        """Data of the loopback search server that the local run starts."""
        return self.home / "elasticsearch"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"


def embed_backend() -> str:
    """Where shards are embedded: 'local' (a process on this worker) or 'kubernetes' (GPU pods).
    Read at DAG parse time, since it decides the DAG's shape."""
    backend = os.environ.get("VECFLOW_EMBED_BACKEND", "local")
    if backend not in ("local", "kubernetes"):
        raise ConfigError(f"VECFLOW_EMBED_BACKEND={backend!r} must be 'local' or 'kubernetes'")
    return backend


def search_sink() -> str:
    """Where tags and trends are also written: 'elasticsearch' (default) or 'none'. Read at DAG parse
    time, since it decides whether the DAGs have search tasks."""
    sink = os.environ.get("VECFLOW_SEARCH_SINK", "elasticsearch")
    if sink not in ("elasticsearch", "none"):
        raise ConfigError(f"VECFLOW_SEARCH_SINK={sink!r} must be 'elasticsearch' or 'none'")
    return sink


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ConfigError(f"{name}={raw!r} must be true or false")
    return raw in ("1", "true", "yes", "on")


def settings() -> Settings:
    home = Path(os.environ.get("VECFLOW_HOME") or REPO_ROOT / ".data").resolve()
    runner = os.environ.get("VECFLOW_EMBED_RUNNER", "inprocess")
    if runner not in ("inprocess", "subprocess"):
        raise ConfigError(f"VECFLOW_EMBED_RUNNER={runner!r} must be 'inprocess' or 'subprocess'")
    return Settings(
        home=home,
        shard_size=env_int("VECFLOW_SHARD_SIZE", 5000),
        embed_batch_size=env_int("VECFLOW_EMBED_BATCH_SIZE", 256),
        embed_runner=runner,
        embed_workers=env_int("VECFLOW_EMBED_WORKERS", 0, minimum=0),
        model_version=serving_model_version(home),
        model_registry=Path(os.environ.get("VECFLOW_MODEL_REGISTRY") or MODELS_DIR / "registry"),
        trend_flat_threshold=env_float("VECFLOW_TREND_FLAT_THRESHOLD", 0.03),
        index_factory=os.environ.get("VECFLOW_INDEX_FACTORY", "IVF{nlist},Flat"),
        index_nlist=env_int("VECFLOW_INDEX_NLIST", 8),
        index_train_sample=env_int("VECFLOW_INDEX_TRAIN_SAMPLE", 20_000),
        index_window_days=env_int("VECFLOW_INDEX_WINDOW_DAYS", 30),
        index_nprobe=env_int("VECFLOW_INDEX_NPROBE", 4),
        index_eval_queries=env_int("VECFLOW_INDEX_EVAL_QUERIES", 200),
        index_min_recall=env_float("VECFLOW_INDEX_MIN_RECALL", 0.98, 0.0, 1.0),
        index_max_recall_drop=env_float("VECFLOW_INDEX_MAX_RECALL_DROP", 0.02, 0.0, 1.0),
        reindex_max_precision_drop=env_float("VECFLOW_REINDEX_MAX_PRECISION_DROP", 0.02, 0.0, 1.0),
        quality_max_bad_vector_share=env_float("VECFLOW_QUALITY_MAX_BAD_VECTOR_SHARE", 0.01, 0.0, 1.0),
        index_keep_versions=env_int("VECFLOW_INDEX_KEEP_VERSIONS", 5),
        index_long_tail_days=env_int("VECFLOW_INDEX_LONG_TAIL_DAYS", 90),
        index_long_tail_similarity=env_float("VECFLOW_INDEX_LONG_TAIL_SIMILARITY", 0.9, -1.0, 1.0),
        near_dup_lookback_days=env_int("VECFLOW_NEAR_DUP_LOOKBACK_DAYS", 90, minimum=0),
        # the LSH join uses max_hamming + 1 bands of the 64-bit dHash; more than 15 makes bands too narrow
        near_dup_max_hamming=env_int("VECFLOW_NEAR_DUP_MAX_HAMMING", 3, minimum=1, maximum=15),
        near_dup_min_edge_similarity=env_float("VECFLOW_NEAR_DUP_MIN_EDGE_SIMILARITY", 0.96, 0.0, 1.0),
        es_conn_id=os.environ.get("VECFLOW_ES_CONN_ID", "elasticsearch_default"),
        es_index_prefix=os.environ.get("VECFLOW_ES_INDEX_PREFIX", "vecflow"),
        es_chunk_size=env_int("VECFLOW_ES_CHUNK_SIZE", 500),
        es_max_error_rate=env_float("VECFLOW_ES_MAX_ERROR_RATE", 0.01, 0.0, 1.0),
        es_index_vectors=_env_flag("VECFLOW_ES_INDEX_VECTORS", False),
    )
