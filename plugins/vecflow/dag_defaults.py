"""Settings every vecflow DAG shares."""
import datetime as dt
import os

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_ARGS = {
    "owner": "data-eng",
    "retries": 2,
    # local demo and test runs set a short delay so a failing task fails fast
    "retry_delay": dt.timedelta(seconds=int(os.environ.get("VECFLOW_RETRY_DELAY_SECONDS", "300"))),
    "retry_exponential_backoff": True,
}

# Keyword arguments of every vecflow @dag: one run at a time, no implicit catchup (backfills are explicit).
DAG_KWARGS = {
    "start_date": START_DATE,
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}
