"""Warehouse access: BigQuery standard SQL files from include/sql, run on DuckDB (default) or BigQuery."""

import logging

from vecflow.warehouse.sql import render_sql, to_duckdb  # noqa: F401


def get_warehouse(settings=None, labels: dict | None = None):
    """The configured warehouse: VECFLOW_WAREHOUSE=duckdb (default, a file under VECFLOW_HOME) or
    bigquery (see BigQueryWarehouse.from_settings; `labels` go on every job it runs)."""
    from vecflow.config import settings as load_settings

    s = settings or load_settings()
    if s.warehouse.kind == "bigquery":
        from vecflow.warehouse.bigquery_backend import BigQueryWarehouse

        return BigQueryWarehouse.from_settings(s.bigquery, labels)
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    return DuckDBWarehouse(
        s.paths.warehouse_path,
        lock_timeout_s=s.warehouse.duckdb_lock_timeout_s,
        memory_limit=s.warehouse.duckdb_memory_limit,
    )


# run in this order: tables, columns added or dropped since, views, then what old rows lack
SCHEMA_FILES = (
    "create_tables",
    "create_alert_tables",
    "upgrade_tables",
    "vector_log_latest",
    "delisted_view",
    "vectors_clean_view",
    "trend_views",
    "upgrade_backfill",
)


# vector_log and vectors_clean before tags were long form: their tag columns become `analyses`
LEGACY_TAG_COLUMNS = ("color", "color_confidence", "pattern", "pattern_confidence", "category_confidence")


def schema_version() -> str:
    """The schema this code expects: a hash of its DDL files, so any change is a new version that
    `migrate` applies once. (The taxonomy is data: the tagging step publishes its version.)"""
    import hashlib

    from vecflow.resources import SQL_DIR

    digest = hashlib.sha256()
    for path in [SQL_DIR / f"{name}.sql" for name in (*SCHEMA_FILES, "upgrade_long_tags")]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def migrate(warehouse, force: bool = False) -> bool:
    """Brings the warehouse to this code's schema version: runs `bootstrap` and records the version
    in schema_migrations, unless that version is already recorded (then it issues no DDL at all).
    Returns whether it migrated. Every DDL file is idempotent, so two tasks migrating at once agree."""
    version = schema_version()
    applied = (
        set(warehouse.query("select_schema_versions")["version"]) if warehouse.has_table("schema_migrations") else set()
    )
    if version in applied and not force:
        return False
    bootstrap(warehouse)
    warehouse.run("record_migration", version=version, files=",".join(SCHEMA_FILES))
    logging.getLogger(__name__).info("warehouse %s migrated to schema version %s", warehouse.dataset, version)
    return True


def bootstrap(warehouse) -> None:
    """Creates the tables and views (idempotent DDL), and moves a warehouse whose vector_log still has
    tag columns to long-form tags (upgrade_long_tags.sql, once). Pipeline tasks call `migrate`, which
    runs this only when the schema version changed."""
    for name in SCHEMA_FILES:
        warehouse.run(name)
        if name == "upgrade_tables" and set(LEGACY_TAG_COLUMNS) & set(warehouse.columns("vector_log")):
            warehouse.run("upgrade_long_tags")
