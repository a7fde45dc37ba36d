"""The production warehouse: BigQuery, through the Google provider's hook and an Airflow Connection.

The SQL files are BigQuery standard SQL already, sent as rendered (cut into statements, not
re-serialised). A file that changes data with several statements runs as one multi-statement
transaction in a session (BEGIN TRANSACTION, a job per statement with the parameters it uses,
COMMIT TRANSACTION): a script job would do the same in one job, but the emulator the tests run
against takes no query parameters inside scripts, and a session's transaction is as atomic. Rows handed to a step are loaded as parquet into
a staging table in the dataset, read by the step as {{ staging }}, and dropped afterwards. Every job
carries the warehouse's labels (a task's dag_id, task_id, run_id and partition), so its cost can be
attributed in INFORMATION_SCHEMA.JOBS and billing exports.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot

from vecflow.warehouse.sql import render_sql, used_parameters

log = logging.getLogger(__name__)


# a file that changes data runs in a transaction; BigQuery admits no DDL in one (temporary tables aside)
CHANGES_DATA = re.compile(r"^\s*(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
DDL = re.compile(r"^\s*(CREATE(?!\s+(OR\s+REPLACE\s+)?TEMP)|DROP|ALTER|TRUNCATE)\b", re.IGNORECASE)


def split_statements(script: str) -> list[str]:
    """The statements of a rendered file, each as the file has it (cut at its semicolons by sqlglot's
    tokenizer, not re-serialised); comments between statements are left out."""
    statements, first, last = [], None, 0
    for token in sqlglot.tokenize(script, read="bigquery"):
        if token.token_type == sqlglot.tokens.TokenType.SEMICOLON:
            if first is not None:
                statements.append(script[first : last + 1])
            first = None
        else:
            first = token.start if first is None else first
            last = token.end
    if first is not None:
        statements.append(script[first : last + 1])
    return statements


def job_labels(values: dict) -> dict[str, str]:
    """BigQuery job labels from names and values: lowercase letters, digits, `_` and `-`, at most 63
    characters each (other characters become `_`); empty values are left out."""

    def clean(text) -> str:
        return re.sub(r"[^a-z0-9_-]", "_", str(text).lower())[:63]

    return {clean(k): clean(v) for k, v in values.items() if v not in (None, "")}


def _parameter(name: str, value):
    from google.cloud import bigquery

    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, dt.datetime):
        kind = "TIMESTAMP"
    elif isinstance(value, dt.date):
        kind = "DATE"
    elif isinstance(value, str) or value is None:
        kind = "STRING"
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return bigquery.ArrayQueryParameter(name, "STRING", list(value))
    else:
        raise TypeError(f"query parameter {name}={value!r}: unsupported type {type(value).__name__}")
    return bigquery.ScalarQueryParameter(name, kind, value)


def _schema(table: pa.Table) -> list:
    """BigQuery fields for an Arrow table (staging tables are created before the load)."""
    from google.cloud import bigquery

    def kind(t: pa.DataType) -> str:
        if pa.types.is_dictionary(t):  # dictionary-encoded strings (tag rows) load as their values
            return kind(t.value_type)
        if pa.types.is_boolean(t):
            return "BOOL"
        if pa.types.is_integer(t):
            return "INT64"
        if pa.types.is_floating(t):
            return "FLOAT64"
        if pa.types.is_date(t):
            return "DATE"
        if pa.types.is_timestamp(t):
            return "TIMESTAMP"
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
            return "STRING"
        raise TypeError(f"no BigQuery type for Arrow {t}")

    fields = []
    for field in table.schema:
        if pa.types.is_list(field.type):
            fields.append(bigquery.SchemaField(field.name, kind(field.type.value_type), mode="REPEATED"))
        else:
            fields.append(bigquery.SchemaField(field.name, kind(field.type)))
    return fields


class BigQueryWarehouse:
    dialect = "bigquery"

    def __init__(self, client, dataset: str = "vecflow", location: str | None = None, labels: dict | None = None):
        self.client = client
        self.dataset = dataset
        self.location = location
        self.labels = job_labels({"app": "vecflow", **(labels or {})})

    @classmethod
    def from_settings(cls, bq, labels: dict | None = None) -> BigQueryWarehouse:
        """An endpoint (an emulator, anonymous credentials) or the Airflow Connection `bq.conn_id`
        (default google_cloud_default); `bq` is the settings' bigquery group."""
        dataset, location, endpoint = bq.dataset, bq.location, bq.endpoint
        if endpoint:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import bigquery

            client = bigquery.Client(
                project=bq.project or "vecflow-local",
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=endpoint),
            )
        else:
            from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

            hook = BigQueryHook(gcp_conn_id=bq.conn_id, location=location)
            client = hook.get_client(project_id=bq.project or hook.project_id, location=location)
        warehouse = cls(client, dataset, location, labels)
        client.create_dataset(dataset, exists_ok=True)
        return warehouse

    def statements(self, name: str, names: dict | None = None, staging: str = "unused_staging") -> list[str]:
        return split_statements(render_sql(name, self.dataset, staging=staging, **(names or {})))

    def _job(self, statement: str, params: dict, session_id: str | None = None, create_session: bool = False):
        from google.cloud import bigquery

        used = used_parameters(statement, "@", params)
        config = bigquery.QueryJobConfig(
            query_parameters=[_parameter(k, v) for k, v in used.items()], labels=self.labels
        )
        config.create_session = create_session
        if session_id:
            config.connection_properties = [bigquery.ConnectionProperty("session_id", session_id)]
        return self.client.query(statement, job_config=config, location=self.location)

    def _execute(self, statement: str, params: dict, session_id: str | None = None):
        return self._job(statement, params, session_id).result()

    def _transaction(self, statements: list[str], params: dict) -> None:
        """The statements as one multi-statement transaction: BEGIN TRANSACTION opens a session, each
        statement is a job in it (with its own parameters), COMMIT TRANSACTION ends it; a failure rolls
        every statement back, so a step failing halfway leaves its tables as they were."""
        begin = self._job("BEGIN TRANSACTION", {}, create_session=True)
        begin.result()
        session_id = begin.session_info.session_id
        try:
            for statement in statements:
                self._execute(statement, params, session_id)
            self._execute("COMMIT TRANSACTION", {}, session_id)
        except Exception:
            try:
                self._execute("ROLLBACK TRANSACTION", {}, session_id)
            except Exception as rollback:  # the session may have rolled back already; the first error counts
                log.warning("ROLLBACK TRANSACTION after a failed statement: %s", rollback)
            raise

    def _stage(self, rows: pa.Table | pd.DataFrame) -> str:
        from google.cloud import bigquery

        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        buf.seek(0)
        staging = f"{self.dataset}._staging_{uuid.uuid4().hex[:12]}"
        self.client.create_table(bigquery.Table(f"{self.client.project}.{staging}", schema=_schema(table)))
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,  # a new, uniquely named table
            labels=self.labels,
        )
        config.parquet_options = bigquery.ParquetOptions()
        config.parquet_options.enable_list_inference = True
        self.client.load_table_from_file(buf, staging, job_config=config, size=None).result()
        return staging

    def run(self, name: str, rows: pa.Table | pd.DataFrame | None = None, names: dict | None = None, **params) -> None:
        """Runs include/sql/<name>.sql: in one transaction when it changes data with more than one
        statement; `rows` are readable as the staging table and `names` fill identifiers."""
        staging = self._stage(rows) if rows is not None else "unused_staging"
        try:
            statements = self.statements(name, names, staging)
            if len(statements) > 1 and any(CHANGES_DATA.match(st) for st in statements):
                if any(DDL.match(st) for st in statements):
                    raise ValueError(f"{name}.sql mixes DDL with data changes: BigQuery runs no DDL in a transaction")
                self._transaction(statements, params)
            else:  # one statement, or DDL: each statement is atomic on its own
                for statement in statements:
                    self._execute(statement, params)
        finally:
            if rows is not None:
                self.client.delete_table(staging, not_found_ok=True)
        log.info("ran %s.sql on BigQuery %s", name, {k: str(v) for k, v in params.items()})

    def query(self, name: str, names: dict | None = None, **params) -> pd.DataFrame:
        """The result of the last statement of include/sql/<name>.sql."""
        *setup, last = self.statements(name, names)
        for statement in setup:
            self._execute(statement, params)
        return self._execute(last, params).to_dataframe(create_bqstorage_client=False)

    def query_arrow(self, name: str, names: dict | None = None, **params) -> pa.Table:
        """As `query`, as an Arrow table (vectors as one list column, strings as Arrow)."""
        *setup, last = self.statements(name, names)
        for statement in setup:
            self._execute(statement, params)
        return self._execute(last, params).to_arrow(create_bqstorage_client=False)

    def query_batches(self, name: str, names: dict | None = None, **params):
        """As `query_arrow`, as Arrow record batches, a page of results each, read as they are consumed."""
        *setup, last = self.statements(name, names)
        for statement in setup:
            self._execute(statement, params)
        yield from self._execute(last, params).to_arrow_iterable()

    def table(self, table: str) -> pd.DataFrame:
        return self.query("select_table", names={"table": table})

    def has_table(self, table: str) -> bool:
        """Whether the dataset has this table or view (a metadata lookup, no job)."""
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(f"{self.client.project}.{self.dataset}.{table}")
        except NotFound:
            return False
        return True

    def columns(self, table: str) -> list[str]:
        """The table's column names (a metadata lookup, no job)."""
        return [f.name for f in self.client.get_table(f"{self.client.project}.{self.dataset}.{table}").schema]
