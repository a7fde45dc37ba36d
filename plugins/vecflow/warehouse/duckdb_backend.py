"""The embedded warehouse: one DuckDB file running the BigQuery SQL files through sqlglot."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from vecflow.warehouse.sql import render_sql, to_duckdb, used_parameters

log = logging.getLogger(__name__)
DATASET = "vecflow"
STAGING = "incoming_rows"  # rows handed to a SQL file, like a load job's staging table on BigQuery

# one in-memory DuckDB per process (remade after a fork), with warehouse files attached to it while
# steps use them: how many steps use each attached file
_INSTANCE: tuple[int, duckdb.DuckDBPyConnection] | None = None
_ATTACHED: Counter = Counter()
_ATTACHED_LOCK = threading.Lock()


def _process_instance() -> duckdb.DuckDBPyConnection:
    global _INSTANCE
    with _ATTACHED_LOCK:
        if _INSTANCE is None or _INSTANCE[0] != os.getpid():
            _ATTACHED.clear()  # a forked child's copy attaches nothing
            # spills go to the system's temporary folder (an in-memory database would use the cwd)
            spill = Path(tempfile.gettempdir()) / f"vecflow-duckdb-{os.getpid()}"
            _INSTANCE = (os.getpid(), duckdb.connect(":memory:", config={"temp_directory": str(spill)}))
        return _INSTANCE[1]


BATCH_ROWS = 65_536  # rows of a record batch query_batches yields


class DuckDBWarehouse:
    dialect = "duckdb"

    def __init__(
        self, path: Path, dataset: str = DATASET, lock_timeout_s: float = 120, memory_limit: str | None = None
    ):
        self.path = Path(path)
        self.dataset = dataset
        self.lock_timeout_s = lock_timeout_s
        self.memory_limit = memory_limit  # DuckDB's own default when None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the name the file is attached under: one per file, whichever path names it
        self._alias = "warehouse_" + hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:12]

    def _attach(self, instance: duckdb.DuckDBPyConnection) -> None:
        """ATTACHes the file, waiting up to lock_timeout_s while another process holds it: DuckDB
        admits one writing process, and tasks of one run (tags and indexes) run side by side under a
        scheduler. The file is attached for one step, so waiters get their turn within seconds."""
        quoted = str(self.path).replace("'", "''")
        deadline, pause = time.monotonic() + self.lock_timeout_s, 0.05
        while True:
            try:
                instance.execute(f"ATTACH '{quoted}' AS {self._alias}")
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        if self.memory_limit:  # the process's DuckDB: the last warehouse attached sets it
            limit = self.memory_limit.replace("'", "''")
            instance.execute(f"SET memory_limit = '{limit}'")

    @contextmanager
    def connect(self):
        """A connection whose default database is the warehouse file, for one step. The file is
        ATTACHed to the process's in-memory DuckDB and DETACHed after the last step using it, which
        releases its lock: opening a DuckDB database builds its function catalog (~30 ms), attaching
        a file to a running one reads only the file's catalog (~5 ms), and a daily run has ~60 steps."""
        instance = _process_instance()
        with _ATTACHED_LOCK:
            if _ATTACHED[self._alias] == 0:
                self._attach(instance)
            _ATTACHED[self._alias] += 1
        con = instance.cursor()
        try:
            con.execute(f"USE {self._alias}")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.dataset}")
            yield con
        finally:
            con.close()
            with _ATTACHED_LOCK:
                _ATTACHED[self._alias] -= 1
                if _ATTACHED[self._alias] == 0:
                    del _ATTACHED[self._alias]
                    instance.execute(f"DETACH {self._alias}")

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

    def query_batches(self, name: str, names: dict | None = None, **params):
        """As `query_arrow`, as Arrow record batches read as they are consumed (the whole result is
        never in memory at once; the file stays attached until the last batch is read)."""
        *setup, last = self.statements(name, names)
        with self.connect() as con:
            for statement in setup:
                con.execute(statement, self._bind(statement, params))
            yield from con.sql(last, params=self._bind(last, params)).to_arrow_reader(BATCH_ROWS)

    def table(self, table: str) -> pd.DataFrame:
        return self.query("select_table", names={"table": table})

    def has_table(self, table: str) -> bool:
        """Whether the dataset has this table or view (a catalog lookup, no DDL)."""
        with self.connect() as con:
            found = con.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
                [self.dataset, table],
            ).fetchone()[0]
        return found > 0

    def columns(self, table: str) -> list[str]:
        """The table's column names, in order (a catalog lookup, no DDL)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position",
                [self.dataset, table],
            ).fetchall()
        return [name for (name,) in rows]
