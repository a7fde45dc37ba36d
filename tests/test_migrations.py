"""Migrations once (vecflow.warehouse.migrate), on DuckDB and the BigQuery emulator: a warehouse at
this code's schema version gets no DDL from a daily run's tasks or the watchdog; a new schema
version is applied once and recorded."""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pytest

from vecflow import tasks
from vecflow.catalog import partition_dir
from vecflow.config import settings
from vecflow.warehouse import migrate, schema_version

DAY = dt.date(2026, 3, 30)
DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)


def recorded_statements(warehouse, monkeypatch) -> list[str]:
    """Every statement the warehouse renders from a SQL file from now on."""
    statements: list[str] = []
    original = type(warehouse).statements

    def recording(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        statements.extend(out)
        return out

    monkeypatch.setattr(type(warehouse), "statements", recording)
    return statements


def test_a_migrated_warehouse_gets_no_ddl_from_a_daily_run_or_the_watchdog(warehouse, vecflow_home, monkeypatch):
    assert migrate(warehouse) is True  # the fixture's bootstrap records no version
    assert warehouse.query("select_schema_versions")["version"].tolist() == [schema_version()]
    folder = partition_dir(vecflow_home / "catalog", DAY)
    folder.mkdir(parents=True)
    pd.DataFrame({"image_id": ["a"], "uri": ["a.jpg"], "source": ["shop_a"]}).to_parquet(folder / "manifest.parquet")

    statements = recorded_statements(warehouse, monkeypatch)
    assert migrate(warehouse) is False
    s = settings()
    assert len(tasks.plan_shards(s, warehouse, DAY, "run-1")) == 1
    tasks.check_inflow(s, warehouse, dt.datetime(2026, 3, 31, 6, tzinfo=dt.UTC), "watchdog-1")
    assert statements, "the tasks ran no SQL: nothing was checked"
    assert [st for st in statements if DDL.match(st)] == []
    assert len(warehouse.table("catalog")) == 1


def test_a_new_schema_version_is_applied_once(warehouse, monkeypatch):
    import vecflow.warehouse

    migrate(warehouse)
    monkeypatch.setattr(vecflow.warehouse, "schema_version", lambda: "next-version")
    statements = recorded_statements(warehouse, monkeypatch)
    assert migrate(warehouse) is True
    assert any(DDL.match(st) for st in statements)
    assert migrate(warehouse) is False
    assert set(warehouse.query("select_schema_versions")["version"]) == {schema_version(), "next-version"}


def test_the_migrate_command_applies_a_version_once(vecflow_home, capsys):
    from vecflow.cli import main

    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"schema version {schema_version()}: applied",
        f"schema version {schema_version()}: already applied, nothing to do",
    ]


def test_an_earlier_versions_rows_are_backfilled_when_migrating(vecflow_home):
    """A warehouse from before vectors were stored once: vector_log rows without the job's scalars,
    vectors_clean rows carrying a copy of each vector and no pointer to its vector_log row. Migrating
    drops the copies, computes the scalars once, and points every clean row at its vector."""
    import math

    import duckdb
    import numpy as np
    from warehouse_rows import load, row, unit

    from vecflow.clean import clean_partition
    from vecflow.tagging import publish_taxonomy
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap, get_warehouse

    s = settings().with_model("m1")
    warehouse = get_warehouse(s)
    bootstrap(warehouse)
    publish_taxonomy(warehouse, load_taxonomy())  # as loading a shard does: validation reads the categories
    load(warehouse, [row("a", DAY), row("b", DAY), row("nan", DAY, embedding=[math.nan] + unit(2)[1:])], DAY)
    clean_partition(s, warehouse, DAY, "run-1")
    with duckdb.connect(str(s.paths.warehouse_path)) as con:  # back to the earlier version's shape
        con.execute("UPDATE vecflow.vector_log SET embedding_norm = NULL, embedding_finite = NULL")
        con.execute("ALTER TABLE vecflow.vectors_clean ADD COLUMN embedding DOUBLE[]")
        con.execute("UPDATE vecflow.vectors_clean SET vector_run_id = NULL, shard_id = NULL, attempt = NULL")

    assert migrate(warehouse, force=True) is True
    log = warehouse.table("vector_log").set_index("image_id")
    assert np.isclose(log.loc["a", "embedding_norm"], 1.0) and bool(log.loc["a", "embedding_finite"])
    assert not bool(log.loc["nan", "embedding_finite"])
    assert "embedding" not in warehouse.table("vectors_clean").columns
    clean = warehouse.table("v_vectors_clean").set_index("image_id")
    assert sorted(clean.index) == ["a", "b"]
    assert np.allclose(clean.loc["a", "embedding"], log.loc["a", "embedding"])


def test_tag_columns_of_an_earlier_version_become_analyses_and_keep_their_tags(vecflow_home):
    """A warehouse from before tags were long form: vector_log and vectors_clean with colour, pattern
    and category-confidence columns and no analyses. Migrating moves each row's tags into its analyses
    (legacy tags and the model's class) and drops the columns; the tagging step then gives the rows
    the tags they had, under the taxonomy's current version."""
    import duckdb
    from warehouse_rows import load, row, tag_partition

    from vecflow.clean import clean_partition
    from vecflow.tagging import publish_taxonomy
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap, get_warehouse

    s = settings().with_model("m1")
    warehouse = get_warehouse(s)
    bootstrap(warehouse)
    publish_taxonomy(warehouse, load_taxonomy())
    load(warehouse, [row("a", DAY, category="coat"), row("b", DAY, category="bag")], DAY)
    clean_partition(s, warehouse, DAY, "run-1")
    with duckdb.connect(str(s.paths.warehouse_path)) as con:  # back to the earlier version's shape
        for table in ("vector_log", "vectors_clean"):
            for column, kind in [
                ("color", "VARCHAR"),
                ("color_confidence", "DOUBLE"),
                ("pattern", "VARCHAR"),
                ("pattern_confidence", "DOUBLE"),
                ("category_confidence", "DOUBLE"),
            ]:
                con.execute(f"ALTER TABLE vecflow.{table} ADD COLUMN {column} {kind}")
            con.execute(
                f"UPDATE vecflow.{table} SET analyses = NULL, color = IF(image_id = 'a', 'green', 'pink'), "
                "color_confidence = 0.7, pattern = IF(image_id = 'a', 'checked', NULL), pattern_confidence = 0.6, "
                "category_confidence = 0.9"
            )

    assert migrate(warehouse, force=True) is True
    for table in ("vector_log", "vectors_clean"):
        columns = set(warehouse.table(table).columns)
        assert "analyses" in columns and not columns & {"color", "pattern", "category_confidence"}
    tag_partition(warehouse, DAY, "run-2", "m1")
    tags = warehouse.table("image_tags")
    got = {(r.image_id, r.dimension): (r.tag, r.confidence) for r in tags.itertuples() if r.dimension != "category"}
    assert got[("a", "color")] == ("green", 0.7) and got[("a", "pattern")] == ("checked", 0.6)
    assert got[("b", "color")] == ("pink", 0.7) and ("b", "pattern") not in got
    assert got[("a", "style")][0] == "outerwear" and set(tags["taxonomy_version"]) == {load_taxonomy().version}


def test_duckdb_steps_attach_the_file_for_a_step_only(tmp_path):
    """Two warehouse files in one process, a step inside a step, and the file's lock released between
    steps (another process opens it) although the process keeps its DuckDB."""
    import subprocess
    import sys

    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    first, second = DuckDBWarehouse(tmp_path / "a.duckdb"), DuckDBWarehouse(tmp_path / "b b's.duckdb")
    with first.connect() as con:
        con.execute("CREATE TABLE vecflow.t AS SELECT 1 AS x")
        with first.connect() as inner, second.connect() as other:  # nested: the same attachment
            inner.execute("INSERT INTO vecflow.t VALUES (2)")
            other.execute("CREATE TABLE vecflow.t AS SELECT 10 AS x")
    assert first.has_table("t") and first.columns("t") == ["x"]
    with first.connect() as con:
        assert con.execute("SELECT SUM(x) FROM vecflow.t").fetchone()[0] == 3
    with second.connect() as con:
        assert con.execute("SELECT SUM(x) FROM vecflow.t").fetchone()[0] == 10
    reader = (
        "import duckdb, sys; print(duckdb.connect(sys.argv[1]).execute('SELECT SUM(x) FROM vecflow.t').fetchone()[0])"
    )
    done = subprocess.run([sys.executable, "-c", reader, str(first.path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr


def test_duckdb_memory_is_the_settings_limit(vecflow_home, monkeypatch):
    """get_warehouse() bounds the process's DuckDB by VECFLOW_DUCKDB_MEMORY_LIMIT (DuckDB's own default,
    80% of RAM, it fills with cached blocks); a value that is no size is refused by name."""
    from vecflow.config import ConfigError
    from vecflow.warehouse import get_warehouse

    monkeypatch.setenv("VECFLOW_DUCKDB_MEMORY_LIMIT", "512MiB")
    with get_warehouse().connect() as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "512.0 MiB"
    monkeypatch.setenv("VECFLOW_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="VECFLOW_DUCKDB_MEMORY_LIMIT='lots' must be a size"):
        settings().warehouse  # noqa: B018  (parsing the group is the check)
