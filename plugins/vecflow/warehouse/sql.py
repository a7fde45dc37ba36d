"""SQL files: BigQuery standard SQL, Jinja for names only, query parameters (@name) for values."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import jinja2
import sqlglot

from vecflow.resources import SQL_DIR

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(SQL_DIR)), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


def render_sql(name: str, dataset: str, **names) -> str:
    """The BigQuery text of include/sql/<name>.sql with table names qualified by `dataset`.

    `names` fill identifiers only (tables, columns; lists of them, nested); values always go as query
    parameters."""
    for ident in _identifiers(list(names.values())):
        if not isinstance(ident, str) or not ident.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"{ident!r} is not a plain SQL identifier")
    return _env.get_template(f"{name}.sql").render(dataset=dataset, **names)


def _identifiers(value):
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _identifiers(item)
    else:
        yield value


def used_parameters(statement: str, marker: str, params: dict) -> dict:
    """The parameters a statement uses (written marker + name: `@name` on BigQuery, `$name` on
    DuckDB); a missing one is a KeyError naming it."""
    used = set(re.findall(re.escape(marker) + r"(\w+)", statement))
    missing = used - set(params)
    if missing:
        raise KeyError(f"query parameter(s) {sorted(missing)} not given")
    return {name: params[name] for name in sorted(used)}


@lru_cache(maxsize=256)
def to_duckdb(bigquery_sql: str) -> tuple[str, ...]:
    """Statements transpiled to DuckDB; @param becomes $param. Comments are dropped (a parameter
    named in a comment must not count as used). Partition/cluster clauses have no DuckDB
    equivalent and are dropped (sqlglot warns about them, which is expected)."""
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    return tuple(
        s for s in sqlglot.transpile(bigquery_sql, read="bigquery", write="duckdb", comments=False) if s.strip()
    )
