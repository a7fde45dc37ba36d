"""The embedded warehouse: one DuckDB file running the BigQuery SQL files through sqlglot."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from vecflow.warehouse.sql import render_sql, to_duckdb, used_parameters

log = logging.getLogger(__name__)
DATASET = "vecflow"
STAGING = "incoming_rows"  # rows handed to a SQL file, like a load job's staging table on BigQuery


class DuckDBWarehouse:
    dialect = "duckdb"

    def __init__(self, path: Path, dataset: str = DATASET, lock_timeout_s: float = 120):
        self.path = Path(path)
        self.dataset = dataset
        self.lock_timeout_s = lock_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _open(self) -> duckdb.DuckDBPyConnection:
        """A connection, waiting up to lock_timeout_s while another process holds the file: DuckDB
        admits one writing process, and tasks of one run (tags and indexes) run side by side under a
        scheduler. Connections live for one step, so waiters get their turn within seconds."""
        deadline, pause = time.monotonic() + self.lock_timeout_s, 0.05
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    @contextmanager
    def connect(self):
        con = self._open()
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.dataset}")
            yield con
        finally:
            con.close()

    def statements(self, name: str, names: dict | None = None) -> tuple[str, ...]:
        return to_duckdb(render_sql(name, self.dataset, staging=STAGING, **(names or {})))

    @staticmethod
    def _bind(statement: str, params: dict) -> dict:
        return used_parameters(statement, "$", params)

    def run(self, name: str, rows: pa.Table | pd.DataFrame | None = None, names: dict | None = None, **params) -> None:
        """Runs every statement of include/sql/<name>.sql in one transaction; `rows` are readable
        as the staging table and `names` fill identifiers."""
        statements = self.statements(name, names)
        with self.connect() as con:
            if rows is not None:
                con.register(STAGING, rows)
            con.execute("BEGIN TRANSACTION")
            try:
                for statement in statements:
                    con.execute(statement, self._bind(statement, params))
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        log.info("ran %s.sql %s", name, {k: str(v) for k, v in params.items()})

    def query(self, name: str, names: dict | None = None, **params) -> pd.DataFrame:
        """The result of the last statement of include/sql/<name>.sql."""
        *setup, last = self.statements(name, names)
        with self.connect() as con:
            for statement in setup:
                con.execute(statement, self._bind(statement, params))
            return con.execute(last, self._bind(last, params)).df()

    def query_arrow(self, name: str, names: dict | None = None, **params) -> pa.Table:
        """As `query`, as an Arrow table: lists (vectors) stay one flat buffer and strings stay Arrow,
        where pandas would make an object per value."""
        *setup, last = self.statements(name, names)
        with self.connect() as con:
            for statement in setup:
                con.execute(statement, self._bind(statement, params))
            return con.sql(last, params=self._bind(last, params)).to_arrow_table()

    def table(self, table: str) -> pd.DataFrame:
        return self.query("select_table", names={"table": table})

    def has_table(self, table: str) -> bool:
        """Whether the dataset has this table or view (a catalog lookup, no DDL)."""
        with self.connect() as con:
            found = con.execute(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [self.dataset, table],
            ).fetchone()[0]
        return found > 0

    def columns(self, table: str) -> list[str]:
        """The table's column names, in order (a catalog lookup, no DDL)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position",
                [self.dataset, table],
            ).fetchall()
        return [name for (name,) in rows]
