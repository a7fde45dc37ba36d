"""Connect arguments for the SQLite metadata database of tests/test_backfill.py's `airflow standalone`
(AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS names this dict): the scheduler, the dag processor and
the CLI write to one file, and SQLite's default 5 s busy wait made a CLI command fail with
"database is locked"."""
CONNECT_ARGS = {"timeout": 60}
