"""Data funnel: per stage and category, what came in, went out and was dropped (funnel.sql). The
balance rules are checked by the funnel quality suite (vecflow.quality, include/sql/funnel_balance.sql);
include/sql/funnel_violations.sql lists the broken ones for a person looking at a partition."""

from __future__ import annotations

import datetime as dt


def record_funnel(warehouse, run_date: dt.date, run_id: str, model_version: str) -> None:
    warehouse.run("funnel", run_date=run_date, run_id=run_id, model_version=model_version)
