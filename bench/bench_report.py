"""What every benchmark writes: bench/results/<name>.json with the date and the machine it ran on."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_report(name: str, report: dict, **machine) -> Path:
    """Writes bench/results/<name>.json; `machine` adds to the platform and CPU count (library
    versions, the GPU)."""
    document = {
        "benchmark": name,
        "date": dt.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)), **machine},
        **report,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {path}")
    return path
