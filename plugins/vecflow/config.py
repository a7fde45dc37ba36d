"""The one settings object: every `VECFLOW_*` variable vecflow reads, grouped by concern, parsed once.

Each setting is declared once below (variable, default, meaning); `settings()` parses the
environment into a frozen `Settings`, and a malformed value is a `ConfigError` that names the
variable. README.md's settings table is `python -m vecflow.config` (a test keeps the two equal).
Parsing reads nothing but the environment, so it is safe at DAG parse time; the serving model
(index/SERVING, switched by a reindex run) is read only when a task asks `Settings.model_version`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from vecflow.resources import MODEL_REGISTRY_DIR, PROJECT_DIR, TAXONOMY_PATH

DEFAULT_MODEL_VERSION = "garment-arcface-v1"
PREFIX = "VECFLOW_"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


# --- parsers: raw string -> value, or ValueError with what is wrong ---------------------------------


def _int(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError("must be " + (f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"))
        return value

    return parse


def _float(minimum: float = float("-inf"), maximum: float = float("inf")) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("is not a number") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError("must be " + " or ".join(repr(a) for a in allowed))
        return raw

    return parse


def _memory_size(raw: str) -> str:
    """A size DuckDB reads, e.g. 2GB or 512MiB."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", raw.strip(), re.IGNORECASE):
        raise ValueError("must be a size such as 2GB or 512MiB")
    return raw.strip()


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("must be true or false")
    return value in ("1", "true", "yes", "on")


def _json(kind: type) -> Callable[[str], object]:
    def parse(raw: str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None
        if not isinstance(value, kind):
            raise ValueError(f"must be a JSON {'object' if kind is dict else 'list'}")
        return value

    return parse


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return raw


def _path(raw: str) -> Path:
    return Path(raw).resolve()


def _storage_url(raw: str) -> str:
    """A local path (made absolute) or a gs:// URL: the schemes whose pointers vecflow can swap with
    a precondition (index/store.py)."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return str(Path(raw).resolve())
    if scheme == "file":
        return str(Path(rest).resolve())
    if scheme != "gs" or not rest.strip("/"):
        raise ValueError("must be a local path or gs://bucket[/prefix]")
    return raw.rstrip("/")


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ValueError("is not a date (YYYY-MM-DD)") from None


def _names(raw: str) -> tuple[str, ...]:
    """A comma-separated list of names."""
    names = tuple(name.strip() for name in raw.split(","))
    if not all(names):
        raise ValueError("must be names separated by commas, none empty")
    return names


def _period_kinds(raw: str) -> tuple[str, ...]:
    kinds = _names(raw)
    unknown = sorted(set(kinds) - {"month", "quarter"})
    if unknown:
        raise ValueError(f"has unknown period(s) {unknown}: use month, quarter")
    return tuple(k for k in ("month", "quarter") if k in kinds)


def _facet_kinds(raw: str) -> tuple[tuple[str, ...], ...]:
    """Facets as key tuples: `category,source,category+source` -> (category,), (source,), (category, source).
    Keys are checked against the taxonomy where trends are computed (vecflow.tags.facet_kinds)."""
    if raw.strip().lower() == "none":
        return ()
    facets = []
    for name in _names(raw):
        keys = tuple(sorted(k.strip() for k in name.split("+")))
        if not all(k.replace("_", "").isalnum() for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(f"facet {name!r} must be names joined by '+', each once")
        if keys not in facets:
            facets.append(keys)
    return tuple(facets)


def _text(raw: str) -> str:
    return raw


def setting(
    variable: str, default, meaning: str, parse: Callable[[str], object] = _text, shown_default: str | None = None
):
    """A settings field read from `variable`; an unset or empty variable takes `default`."""
    metadata = {"variable": variable, "parse": parse, "meaning": meaning, "shown_default": shown_default}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=metadata)
    return field(default=default, metadata=metadata)


# --- the groups -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathSettings:
    home: Path = setting(
        "VECFLOW_HOME",
        PROJECT_DIR / ".data",
        "everything a run writes: catalog, warehouse file, staging, indexes, reports",
        _path,
        shown_default="`.data/` in the project",
    )

    @property
    def catalog_dir(self) -> Path:
        return self.home / "catalog"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    storage_url: str | None = setting(
        "VECFLOW_STORAGE_URL",
        None,
        "where the files that workers, pods and search services share live: each run's staging (shard "
        "manifests, fetched images, shard outputs) and the index artifacts (trained quantizers, day and window "
        "indexes, CURRENT and SERVING); a local directory (a shared disk) or `gs://bucket/prefix` (no PVC)",
        _storage_url,
        shown_default="`$VECFLOW_HOME`",
    )
    storage_options: dict = setting(
        "VECFLOW_STORAGE_OPTIONS",
        {},
        'fsspec options of the storage URL\'s filesystem (JSON, e.g. `{"endpoint_url": "http://127.0.0.1:4443", '
        '"token": "anon"}`); credentials otherwise come from the environment',
        _json(dict),
        shown_default="`{}`",
    )

    @property
    def index_url(self) -> str:
        """The index store's root: `<storage URL>/index`."""
        return f"{self.storage_root}/index"

    @property
    def staging_url(self) -> str:
        """Each run's shard manifests, fetched images and shard outputs: `<storage URL>/staging`."""
        return f"{self.storage_root}/staging"

    @property
    def storage_root(self) -> str:
        return (self.storage_url or str(self.home)).rstrip("/")

    @property
    def storage_is_local(self) -> bool:
        """Whether the storage URL is a directory on this machine (pods then share it as a volume)."""
        return self.storage_url is None or "://" not in self.storage_url

    @property
    def search_data_dir(self) -> Path:
        """Data of the loopback search server that the local run starts."""
        return self.home / "elasticsearch"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"


@dataclass(frozen=True)
class CatalogSettings:
    """Where each day's catalog partition comes from (vecflow.catalog)."""

    source: str = setting(
        "VECFLOW_CATALOG_SOURCE",
        "files",
        "`files` (partitioned parquet, CSV or JSON-lines files under VECFLOW_CATALOG_URL; the demo's "
        "generator writes these) or `warehouse` (VECFLOW_CATALOG_TABLE, read by partition)",
        _choice("files", "warehouse"),
    )
    url: str | None = setting(
        "VECFLOW_CATALOG_URL",
        None,
        "the catalog's root: a local path or an fsspec URL (`gs://bucket/catalog`, `s3://...`, `file://...`). "
        "Relative image URIs are local files under it; http(s)://, gs:// and s3:// images are fetched by the "
        "fetch stage from VECFLOW_FETCH_ALLOWED_HOSTS",
        shown_default="`VECFLOW_HOME/catalog`",
    )
    path_template: str = setting(
        "VECFLOW_CATALOG_PATH_TEMPLATE",
        "listed_date={date}/",
        "a partition under the root: a file, or a folder (ending in `/`) whose data files are read; `{date}` "
        "is the partition date (YYYY-MM-DD)",
    )
    table: str | None = setting(
        "VECFLOW_CATALOG_TABLE",
        None,
        "the catalog table or view for the `warehouse` source (`dataset.table`), read `WHERE listed_date = "
        "@partition` (the column the mapping names listed_date)",
    )
    columns: dict = setting(
        "VECFLOW_CATALOG_COLUMNS",
        {},
        'renames of the catalog\'s columns to vecflow\'s (JSON, e.g. `{"url": "uri", "item_id": "image_id"}`)',
        _json(dict),
        shown_default="`{}`",
    )
    delist_template: str = setting(
        "VECFLOW_CATALOG_DELIST_TEMPLATE",
        "delisted/date={date}/",
        "the delist feed's partition under the catalog root (files of image_id, optional delisted_at and "
        "reason): the images removed that day; a day without one removes nothing",
    )
    delist_table: str | None = setting(
        "VECFLOW_CATALOG_DELIST_TABLE",
        None,
        "the delist feed for the `warehouse` source (`dataset.table` of image_id, delisted_at TIMESTAMP, reason), "
        "read by day of delisted_at (UTC); unset: the catalog table's removals are not read",
    )
    sweep_per_category: int = setting(
        "VECFLOW_CATALOG_SWEEP_PER_CATEGORY",
        0,
        "the dead-link sweep (vecflow_catalog_health) checks this many served images per category a day, "
        "a different sample each day, plus every image whose last check found a dead link; 0: all of them",
        _int(0),
    )
    storage_options: dict = setting(
        "VECFLOW_CATALOG_STORAGE_OPTIONS",
        {},
        'fsspec options of the catalog\'s filesystem (JSON, e.g. `{"token": "anon"}`); credentials '
        "otherwise come from the environment",
        _json(dict),
        shown_default="`{}`",
    )


@dataclass(frozen=True)
class FetchSettings:
    """Downloading remote images (gs://, s3://, http(s)://) before the embedding job (vecflow.fetch)."""

    allowed_hosts: tuple[str, ...] = setting(
        "VECFLOW_FETCH_ALLOWED_HOSTS",
        (),
        "the only hosts and buckets images are fetched from (comma-separated: `cdn.shop.example`, "
        "`*.shop.example`, `gs://bucket`, `s3://bucket`); any other URI, redirects included, is a reject "
        "`host_not_allowed` decided before a connection is opened",
        _names,
        shown_default="(none: nothing remote)",
    )
    connect_timeout_s: float = setting(
        "VECFLOW_FETCH_CONNECT_TIMEOUT_SECONDS", 5.0, "connect timeout of one image request", _float(0.1)
    )
    read_timeout_s: float = setting(
        "VECFLOW_FETCH_READ_TIMEOUT_SECONDS", 30.0, "read timeout of one image request", _float(0.1)
    )
    attempts: int = setting(
        "VECFLOW_FETCH_ATTEMPTS", 4, "tries of an image on 429, 5xx and timeouts (exponential backoff, jitter)", _int()
    )
    max_bytes: int = setting(
        "VECFLOW_FETCH_MAX_BYTES", 20_000_000, "larger images are rejects `too_large` (not read past the limit)", _int()
    )
    concurrency: int = setting("VECFLOW_FETCH_CONCURRENCY", 32, "images fetched at once by one shard", _int())
    per_host: int = setting("VECFLOW_FETCH_PER_HOST", 8, "of those, at most this many from one host", _int())


@dataclass(frozen=True)
class EmbedSettings:
    backend: str = setting(
        "VECFLOW_EMBED_BACKEND",
        "local",
        "where shards are embedded: `local` (a process on the "
        "worker) or `kubernetes` (a GPU pod per shard); decides the DAG's shape",
        _choice("local", "kubernetes"),
    )
    runner: str = setting(
        "VECFLOW_EMBED_RUNNER",
        "inprocess",
        "local backend: `inprocess` (the entrypoint called in "
        "the task) or `subprocess` (the container command as a child process)",
        _choice("inprocess", "subprocess"),
    )
    shard_size: int = setting(
        "VECFLOW_SHARD_SIZE",
        5000,
        "images per shard (grown when a partition would map more shards than core.max_map_length)",
        _int(),
    )
    batch_size: int = setting("VECFLOW_EMBED_BATCH_SIZE", 256, "images per model batch", _int())
    workers: int = setting(
        "VECFLOW_EMBED_WORKERS",
        0,
        "DataLoader decode workers of a local shard (0: in the shard's process)",
        _int(minimum=0),
    )
    model_version: str | None = setting(
        "VECFLOW_MODEL_VERSION",
        None,
        "the first model to embed with; "
        "after a reindex switch index/SERVING names the serving model, and another value "
        "here is an error",
        shown_default=f"`{DEFAULT_MODEL_VERSION}`",
    )
    model_registry: Path = setting(
        "VECFLOW_MODEL_REGISTRY",
        MODEL_REGISTRY_DIR,
        "the model registry folder (model cards and weights)",
        _path,
        shown_default="`include/models/registry`",
    )


@dataclass(frozen=True)
class KubernetesSettings:
    image: str = setting(
        "VECFLOW_EMBED_IMAGE", "vecflow-embed:latest", "the embedding image, built from include/models/Dockerfile"
    )
    conn_id: str = setting("VECFLOW_K8S_CONN_ID", "kubernetes_default", "Airflow Connection to the cluster")
    namespace: str = setting("VECFLOW_K8S_NAMESPACE", "vecflow", "namespace of the pods")
    gpus: str = setting("VECFLOW_K8S_GPUS", "1", "`nvidia.com/gpu` request and limit per pod")
    cpu: str = setting("VECFLOW_K8S_CPU", "8", "CPU request per pod (decode workers need CPU)")
    memory: str = setting("VECFLOW_K8S_MEMORY", "32Gi", "memory request and limit per pod")
    node_selector: dict = setting(
        "VECFLOW_K8S_NODE_SELECTOR", {"nvidia.com/gpu.present": "true"}, "node selector (JSON object)", _json(dict)
    )
    tolerations: list = setting(
        "VECFLOW_K8S_TOLERATIONS",
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "tolerations (JSON list)",
        _json(list),
    )
    model_pvc: str = setting(
        "VECFLOW_K8S_MODEL_PVC", "vecflow-models", "claim of the model registry volume, mounted read-only at /models"
    )
    data_pvc: str = setting(
        "VECFLOW_K8S_DATA_PVC",
        "vecflow-data",
        "claim of the local storage URL's volume (VECFLOW_STORAGE_URL, default VECFLOW_HOME), mounted at the same "
        "path for shard manifests and outputs; not used when the storage URL is a bucket",
    )
    shm: str = setting("VECFLOW_K8S_SHM", "16Gi", "/dev/shm size (DataLoader workers pass batches through it)")
    workers: int = setting("VECFLOW_K8S_WORKERS", 8, "DataLoader workers in a pod", _int(minimum=0))
    max_pods: int = setting("VECFLOW_K8S_MAX_PODS", 16, "embedding pods of one run at a time", _int())
    pool: str = setting("VECFLOW_K8S_POOL", "default_pool", "Airflow pool the pods count against")
    index_image: str = setting(
        "VECFLOW_K8S_INDEX_IMAGE",
        "vecflow-airflow:3.3.2",
        "image of the index-build pods: the Airflow image with vecflow (docker/airflow)",
    )
    index_cpu: str = setting("VECFLOW_K8S_INDEX_CPU", "2", "CPU request of an index-build pod")
    index_node_selector: dict = setting(
        "VECFLOW_K8S_INDEX_NODE_SELECTOR", {}, "node selector of the index-build pods (JSON object)", _json(dict)
    )


@dataclass(frozen=True)
class WarehouseSettings:
    kind: str = setting(
        "VECFLOW_WAREHOUSE",
        "duckdb",
        "`duckdb` (a file under VECFLOW_HOME) or `bigquery`",
        _choice("duckdb", "bigquery"),
    )
    duckdb_lock_timeout_s: int = setting(
        "VECFLOW_DUCKDB_LOCK_TIMEOUT_SECONDS",
        120,
        "how long a task waits for another process's lock on the DuckDB file",
        _int(minimum=0),
    )
    duckdb_memory_limit: str = setting(
        "VECFLOW_DUCKDB_MEMORY_LIMIT",
        "2GB",
        "DuckDB's memory in a worker process: past it, it spills to the temporary folder (its own default, "
        "80% of RAM, it fills with cached blocks: 6 GB of a million-row clean step)",
        _memory_size,
    )
    pool: str = setting(
        "VECFLOW_WAREHOUSE_POOL",
        "default_pool",
        "Airflow pool of the warehouse tasks (bounds warehouse load, e.g. BigQuery slots)",
    )


@dataclass(frozen=True)
class BigQuerySettings:
    project: str | None = setting(
        "VECFLOW_BQ_PROJECT",
        None,
        "project (default: the connection's; `vecflow-local` with an endpoint)",
        shown_default="the connection's",
    )
    dataset: str = setting("VECFLOW_BQ_DATASET", "vecflow", "dataset of vecflow's tables")
    location: str | None = setting("VECFLOW_BQ_LOCATION", None, "location of jobs and the dataset")
    endpoint: str | None = setting(
        "VECFLOW_BQ_ENDPOINT", None, "an emulator's URL (anonymous credentials) instead of the connection", _http_url
    )
    conn_id: str = setting("VECFLOW_BQ_CONN_ID", "google_cloud_default", "Airflow Connection with the credentials")


@dataclass(frozen=True)
class CleanSettings:
    near_dup_lookback_days: int = setting(
        "VECFLOW_NEAR_DUP_LOOKBACK_DAYS", 90, "earlier partitions a near duplicate is looked for in", _int(minimum=0)
    )
    # candidates come from the edge signatures (vecflow.near_duplicates), so the dHash bound costs
    # nothing: 5 finds the re-encoded copies whose flat background flipped a few more bits
    near_dup_max_hamming: int = setting(
        "VECFLOW_NEAR_DUP_MAX_HAMMING", 5, "dHash bits two near duplicates may differ in", _int(0, 64)
    )
    near_dup_min_edge_similarity: float = setting(
        "VECFLOW_NEAR_DUP_MIN_EDGE_SIMILARITY",
        0.96,
        "edge-signature cosine a dHash match must also reach",
        _float(0.0, 1.0),
    )


@dataclass(frozen=True)
class TrendSettings:
    min_effect: float = setting(
        "VECFLOW_TREND_MIN_EFFECT",
        0.03,
        "smallest change in share (within the dimension and facet) that can make a tag `rising` or `falling`",
        _float(0.0, 1.0),
    )
    alpha: float = setting(
        "VECFLOW_TREND_ALPHA",
        0.05,
        "significance level of a change: the false discovery rate among every tag and facet tested in the period "
        "(`bh`), or the family-wise error rate (`bonferroni`)",
        _float(1e-12, 0.5),
    )
    correction: str = setting(
        "VECFLOW_TREND_CORRECTION",
        "bh",
        "multiple-testing correction over a period's tests: `bh` (Benjamini-Hochberg false discovery rate, keeps "
        "power with hundreds of tags) or `bonferroni`",
        _choice("bh", "bonferroni"),
    )
    min_coverage: float = setting(
        "VECFLOW_TREND_MIN_COVERAGE",
        0.3,
        "share of a period's days the catalog must cover, in the period and in the one it is compared with, "
        "before its tags can move (a period barely begun is `insufficient`)",
        _float(0.0, 1.0),
    )
    periods: tuple[str, ...] = setting(
        "VECFLOW_TREND_PERIODS",
        ("month", "quarter"),
        "trend periods (comma-separated): `month`, `quarter`",
        _period_kinds,
        shown_default="month,quarter",
    )
    facets: tuple[tuple[str, ...], ...] = setting(
        "VECFLOW_TREND_FACETS",
        (("category",), ("source",), ("category", "source")),
        "facets precomputed besides the whole catalog (comma-separated; `+` joins keys into a pair): each a "
        "condition on `source` or a tag dimension, within which the other dimensions' trends are computed",
        _facet_kinds,
        shown_default="category,source,category+source",
    )

    @property
    def z_interval(self) -> float:
        """z of the (1 - alpha) interval stored around each change."""
        from statistics import NormalDist

        return NormalDist().inv_cdf(1 - self.alpha / 2)


@dataclass(frozen=True)
class TagSettings:
    taxonomy_url: str = setting(
        "VECFLOW_TAXONOMY_URL",
        str(TAXONOMY_PATH),
        "the taxonomy file (JSON): dimensions, their tags, synonyms and where each dimension's tags come from; "
        "a local path or an fsspec URL (gs://, s3://), validated when read, versioned by its content",
        shown_default="`include/taxonomy.json`",
    )
    heads: str | None = setting(
        "VECFLOW_TAG_HEADS",
        None,
        "head set (`tags train`) that tags the `head` dimensions; unset: the newest head set of the serving model",
    )
    min_head_precision: float = setting(
        "VECFLOW_TAG_MIN_HEAD_PRECISION",
        0.5,
        "a head tag whose held-out precision is below this is not published (reported by `tags train`)",
        _float(0.0, 1.0),
    )


@dataclass(frozen=True)
class SearchSettings:
    sink: str = setting(
        "VECFLOW_SEARCH_SINK",
        "elasticsearch",
        "`elasticsearch` or `none` (no search tasks)",
        _choice("elasticsearch", "none"),
    )
    conn_id: str = setting("VECFLOW_ES_CONN_ID", "elasticsearch_default", "Airflow Connection to Elasticsearch")
    index_prefix: str = setting("VECFLOW_ES_INDEX_PREFIX", "vecflow", "prefix of the index names")
    chunk_size: int = setting("VECFLOW_ES_CHUNK_SIZE", 500, "documents per bulk request", _int())
    bulk_threads: int = setting(
        "VECFLOW_ES_BULK_THREADS", 2, "bulk requests in flight at once (each retries its own 429s)", _int()
    )
    max_error_rate: float = setting(
        "VECFLOW_ES_MAX_ERROR_RATE",
        0.01,
        "share of refused documents that fails the task (the rest are rejects)",
        _float(0.0, 1.0),
    )
    index_vectors: bool = setting(
        "VECFLOW_ES_INDEX_VECTORS", False, "also index the embedding (dense_vector, kNN)", _flag
    )


@dataclass(frozen=True)
class IndexSettings:
    factory: str = setting("VECFLOW_INDEX_FACTORY", "IVF{nlist},Flat", "faiss index factory string")
    nlist: int = setting("VECFLOW_INDEX_NLIST", 8, "IVF lists (fewer when a category has few vectors)", _int())
    nprobe: int = setting(
        "VECFLOW_INDEX_NPROBE", 4, "IVF lists probed first; doubled per version until the recall target is met", _int()
    )
    train_sample: int = setting("VECFLOW_INDEX_TRAIN_SAMPLE", 20_000, "vectors the quantizer is trained on", _int())
    window_days: int = setting("VECFLOW_INDEX_WINDOW_DAYS", 30, "days merged into a window index", _int())
    eval_queries: int = setting("VECFLOW_INDEX_EVAL_QUERIES", 200, "held-out queries of the evaluation gate", _int())
    min_recall: float = setting(
        "VECFLOW_INDEX_MIN_RECALL", 0.98, "recall@10 vs exact search a window needs to publish", _float(0.0, 1.0)
    )
    max_recall_drop: float = setting(
        "VECFLOW_INDEX_MAX_RECALL_DROP", 0.02, "largest recall drop vs the published version", _float(0.0, 1.0)
    )
    min_precision: float = setting(
        "VECFLOW_INDEX_MIN_PRECISION",
        0.0,
        "same-category precision@10 a window needs to publish (0: no floor; later versions are also held to "
        "VECFLOW_INDEX_MAX_PRECISION_DROP)",
        _float(0.0, 1.0),
    )
    max_precision_drop: float = setting(
        "VECFLOW_INDEX_MAX_PRECISION_DROP",
        0.05,
        "largest same-category precision@10 drop vs the published version",
        _float(0.0, 1.0),
    )
    keep_versions: int = setting("VECFLOW_INDEX_KEEP_VERSIONS", 5, "published versions kept per category", _int())
    long_tail_days: int = setting(
        "VECFLOW_INDEX_LONG_TAIL_DAYS", 90, "days past the window that long-tail vectors stay", _int()
    )
    long_tail_similarity: float = setting(
        "VECFLOW_INDEX_LONG_TAIL_SIMILARITY",
        0.9,
        "an expired vector stays when no window vector is this similar",
        _float(-1.0, 1.0),
    )
    build_groups: int = setting(
        "VECFLOW_INDEX_BUILD_GROUPS",
        1,
        "mapped build_indexes tasks per daily run, each building its share of the categories (up to one per "
        "category, so workers build them in parallel and a failed group is retried alone)",
        _int(minimum=1),
    )
    build_backend: str = setting(
        "VECFLOW_INDEX_BUILD_BACKEND",
        "local",
        "`local` (build_indexes on the worker) or `kubernetes` (a pod per build group from the pod factory, "
        "its memory sized from the group's window vectors)",
        _choice("local", "kubernetes"),
    )
    reindex_max_precision_drop: float = setting(
        "VECFLOW_REINDEX_MAX_PRECISION_DROP",
        0.02,
        "largest same-category precision@10 drop a model switch may cause",
        _float(0.0, 1.0),
    )


@dataclass(frozen=True)
class QualitySettings:
    max_bad_vector_share: float = setting(
        "VECFLOW_QUALITY_MAX_BAD_VECTOR_SHARE",
        0.01,
        "share of bad vectors the vector_log suite tolerates",
        _float(0.0, 1.0),
    )


@dataclass(frozen=True)
class AlertSettings:
    webhook_url: str | None = setting("VECFLOW_ALERT_WEBHOOK_URL", None, "a JSON webhook URL", _http_url)
    webhook_conn_id: str | None = setting(
        "VECFLOW_ALERT_WEBHOOK_CONN_ID", None, "or an HTTP Connection whose host is the full webhook URL"
    )
    slack_conn_id: str | None = setting("VECFLOW_ALERT_SLACK_CONN_ID", None, "a Slack Incoming Webhook connection")

    def __post_init__(self) -> None:
        if self.webhook_url and self.webhook_conn_id:
            raise ConfigError("set VECFLOW_ALERT_WEBHOOK_URL or VECFLOW_ALERT_WEBHOOK_CONN_ID, not both")


@dataclass(frozen=True)
class WatchdogSettings:
    # the daily run of day D starts at D+1 00:00 UTC; 3 hours covers its embedding stage
    grace_hours: int = setting(
        "VECFLOW_WATCHDOG_GRACE_HOURS",
        3,
        "hours after a day ends by which its vectors must have arrived",
        _int(minimum=0),
    )
    baseline_days: int = setting(
        "VECFLOW_WATCHDOG_BASELINE_DAYS", 7, "partitions before the checked one that make its baseline", _int()
    )
    min_vectors: int = setting(
        "VECFLOW_WATCHDOG_MIN_VECTORS", 1, "fewer vectors per source and partition is `low`", _int()
    )
    min_ratio: float = setting(
        "VECFLOW_WATCHDOG_MIN_RATIO", 0.5, "below this share of the baseline is `low`", _float(0.0, 1.0)
    )
    expected_sources: tuple[str, ...] = setting(
        "VECFLOW_WATCHDOG_EXPECTED_SOURCES",
        (),
        "sources expected even before their first vector (comma-separated); every source seen in vector_log "
        "is expected from its first partition on anyway",
        _names,
        shown_default="(none)",
    )
    retired_sources: tuple[str, ...] = setting(
        "VECFLOW_WATCHDOG_RETIRED_SOURCES",
        (),
        "sources no longer expected (comma-separated): their absence is not an outage",
        _names,
        shown_default="(none)",
    )
    repeat_hours: float = setting(
        "VECFLOW_ALERT_REPEAT_HOURS",
        4.0,
        "an open, unacknowledged inflow incident is sent again this often, until it resolves",
        _float(0.1),
    )

    def due_partition(self, now: dt.datetime) -> dt.date:
        """The latest partition whose vectors should all be in by `now`: its day ended grace_hours ago or more."""
        return (now.astimezone(dt.UTC) - dt.timedelta(hours=self.grace_hours)).date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class DagSettings:
    """What shapes the DAGs; read at parse time, so it is a group of its own (a malformed setting of
    another group fails the task that uses it, which alerts, instead of the DAG's import)."""

    retry_delay_seconds: int = setting(
        "VECFLOW_RETRY_DELAY_SECONDS", 300, "first retry delay of a task (doubled each retry)", _int(minimum=0)
    )
    start_date: dt.date = setting(
        "VECFLOW_START_DATE",
        dt.date(2015, 1, 1),
        "the DAGs' start date: the first partition a run or backfill may process (no catchup: nothing "
        "runs by itself before the newest interval)",
        _date,
    )
    daily_deadline_minutes: int = setting(
        "VECFLOW_DAILY_DEADLINE_MINUTES",
        120,
        "alert when a daily run has not finished this long after it was queued (0: off)",
        _int(minimum=0),
    )


class _Group:
    """A group attribute of Settings, parsed from the settings' environment when first read."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, settings: Settings | None, owner=None):
        if settings is None:
            return self
        return _parse(self.name, settings.environ)


class Settings:
    """All settings, by group. A group is parsed when first read (and cached for that environment),
    so a malformed variable fails only the code that uses its group: a bad watchdog threshold fails
    the watchdog task, which alerts, not the import of every DAG."""

    paths: PathSettings = _Group()
    catalog: CatalogSettings = _Group()
    fetch: FetchSettings = _Group()
    embed: EmbedSettings = _Group()
    kubernetes: KubernetesSettings = _Group()
    warehouse: WarehouseSettings = _Group()
    bigquery: BigQuerySettings = _Group()
    clean: CleanSettings = _Group()
    trends: TrendSettings = _Group()
    tags: TagSettings = _Group()
    search: SearchSettings = _Group()
    index: IndexSettings = _Group()
    quality: QualitySettings = _Group()
    alerts: AlertSettings = _Group()
    watchdog: WatchdogSettings = _Group()
    dags: DagSettings = _Group()

    def __init__(self, environ: tuple[tuple[str, str], ...], model_override: str | None = None):
        self.environ = environ
        # a run that works with a model other than the serving one (a reindex building the new model's indexes)
        self.model_override = model_override

    def __repr__(self) -> str:
        return f"Settings({dict(self.environ)!r}, model_override={self.model_override!r})"

    @property
    def model_version(self) -> str:
        """The model this run embeds with and serves: index/SERVING once a reindex switched models, else
        VECFLOW_MODEL_VERSION. Read from the file at each call, so a task sees a switch made before it;
        never call this at DAG parse time."""
        if self.model_override:
            return self.model_override
        from vecflow.index.pointers import SERVING, switched_model_version
        from vecflow.index.store import index_store

        store, configured = index_store(self), self.embed.model_version
        serving = switched_model_version(store)
        if serving is None:
            return configured or DEFAULT_MODEL_VERSION
        if configured and configured != serving:  # the daily run would embed with a model other than the served
            raise ConfigError(
                f"VECFLOW_MODEL_VERSION={configured!r} but {store.uri(SERVING)} names {serving!r} (switched by a "
                f"reindex run): unset the variable, or switch back with `python -m vecflow.cli "
                f"switch-model --model-version {configured}`"
            )
        return serving

    def with_model(self, model_version: str) -> Settings:
        return Settings(self.environ, model_override=model_version)

    def check(self) -> Settings:
        """Parses every group now (a ConfigError names the first malformed variable)."""
        for name in _GROUP_TYPES:
            getattr(self, name)
        return self


def _parse_group(cls: type, environ: dict[str, str]):
    values = {}
    for f in dataclasses.fields(cls):
        raw = environ.get(f.metadata["variable"], "")
        if raw == "":
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{f.metadata['variable']}={raw!r} {exc}") from None
    return cls(**values)


@lru_cache(maxsize=64)
def _parse(name: str, environ: tuple[tuple[str, str], ...]):
    return _parse_group(_GROUP_TYPES[name], dict(environ))


def _environ() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX)))


_GROUP_TYPES = {
    "paths": PathSettings,
    "catalog": CatalogSettings,
    "fetch": FetchSettings,
    "embed": EmbedSettings,
    "kubernetes": KubernetesSettings,
    "warehouse": WarehouseSettings,
    "bigquery": BigQuerySettings,
    "clean": CleanSettings,
    "trends": TrendSettings,
    "tags": TagSettings,
    "search": SearchSettings,
    "index": IndexSettings,
    "quality": QualitySettings,
    "alerts": AlertSettings,
    "watchdog": WatchdogSettings,
    "dags": DagSettings,
}


def settings() -> Settings:
    """The settings of the current environment, parsed once per distinct set of VECFLOW_* values;
    a VECFLOW_* variable that is no setting is warned about by name (a typo is otherwise silent)."""
    environ = _environ()
    _warn_unknown(tuple(name for name, _ in environ))
    return Settings(environ)


@lru_cache(maxsize=16)
def _warn_unknown(names: tuple[str, ...]) -> None:
    import difflib
    import logging

    known = {variable for variable, *_ in variables()}
    # compared without the prefix every name shares, which alone would make any name look close
    suffixes = [variable.removeprefix(PREFIX) for variable in known]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1)
            logging.getLogger(__name__).warning(
                "%s is not a vecflow setting and is ignored%s",
                name,
                f" (did you mean {PREFIX}{close[0]}?)" if close else "",
            )


def variables() -> list[tuple[str, str, str, str]]:
    """(variable, group, default as shown, meaning) of every setting, in declaration order."""
    rows = []
    for group, cls in _GROUP_TYPES.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = f.metadata["shown_default"] or (
                "(unset)"
                if default is None
                else f"`{json.dumps(default) if isinstance(default, (dict, list)) else default}`"
            )
            rows.append((f.metadata["variable"], group, shown, f.metadata["meaning"]))
    return rows


def settings_table() -> str:
    """The README's settings table (Markdown)."""
    lines = ["| variable | group | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{v}` | {g} | {d} | {m} |" for v, g, d, m in variables()]
    return "\n".join(lines)


def read_json(path: Path, what: str):
    """A JSON config file, or a ConfigError that names the file and what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from None


if __name__ == "__main__":
    sys.stdout.write(settings_table() + "\n")
