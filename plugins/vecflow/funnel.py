"""Data funnel: per stage and category, in = out + dropped, and one stage's out is the next one's in."""
from __future__ import annotations

import datetime as dt


class FunnelError(AssertionError):
    """The funnel does not balance: rows were lost or invented between stages."""


def record_funnel(warehouse, run_date: dt.date, run_id: str, model_version: str) -> None:
    warehouse.run("funnel", run_date=run_date, run_id=run_id, model_version=model_version)


def check_funnel(warehouse, run_date: dt.date) -> None:
    violations = warehouse.query("funnel_violations", run_date=run_date)
    if len(violations):
        lines = [f"  {r.stage} / {r.category}: {r.problem} (in={r.in_rows}, out={r.out_rows}, "
                 f"dropped={r.dropped_rows})" for r in violations.itertuples()]
        raise FunnelError(f"funnel of {run_date} does not balance:\n" + "\n".join(lines))
