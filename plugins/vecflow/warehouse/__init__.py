"""Warehouse access: BigQuery standard SQL files from include/sql, run on DuckDB (default) or BigQuery."""

from vecflow.warehouse.sql import render_sql, to_duckdb  # noqa: F401


def get_warehouse(settings=None):
    """The configured warehouse: VECFLOW_WAREHOUSE=duckdb (default, a file under VECFLOW_HOME) or
    bigquery (see BigQueryWarehouse.from_settings)."""
    from vecflow.config import settings as load_settings

    s = settings or load_settings()
    if s.warehouse.kind == "bigquery":
        from vecflow.warehouse.bigquery_backend import BigQueryWarehouse

        return BigQueryWarehouse.from_settings(s.bigquery)
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    return DuckDBWarehouse(s.paths.warehouse_path, lock_timeout_s=s.warehouse.duckdb_lock_timeout_s)


def bootstrap(warehouse) -> None:
    """Creates the tables and views and loads the taxonomy; safe to run before every partition."""
    import pandas as pd

    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    warehouse.run("create_tables")
    warehouse.run("create_alert_tables")
    warehouse.run("upgrade_tables")
    warehouse.run("vector_log_latest")
    tags = pd.DataFrame(taxonomy.rows())
    warehouse.run("replace_table", rows=tags, names={"table": "taxonomy", "columns": list(tags.columns)})
    derivations = pd.DataFrame(
        [
            {"dimension": "style", "tag": style, "from_dimension": "category", "from_tag": category}
            for category, style in taxonomy.style_of_category().items()
        ]
    )
    warehouse.run(
        "replace_table", rows=derivations, names={"table": "tag_derivations", "columns": list(derivations.columns)}
    )
