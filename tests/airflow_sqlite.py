"""Connect arguments for the SQLite metadata database of tests/test_backfill.py's `airflow standalone`
(AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS names this dict). The scheduler, the dag processor and
the CLI write to one file. With SQLite's default deferred transactions a writer that already read
gets "database is locked" at once when another writer is active (waiting could deadlock), and
`airflow backfill create` failing that way after committing its backfill row leaves an orphan that
blocks the next one. Transactions that take the write lock when they begin (IMMEDIATE) wait their
turn instead, up to the timeout."""

CONNECT_ARGS = {"timeout": 60, "isolation_level": "IMMEDIATE"}
