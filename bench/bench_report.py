"""What every benchmark writes: bench/results/<name>.json with the date and the machine it ran on."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_report(name: str, report: dict, path: Path | None = None, **machine) -> Path:
    """Writes bench/results/<name>.json (or `path`); `machine` adds to the platform and CPU count
    (library versions, the GPU)."""
    document = {
        "benchmark": name,
        "date": dt.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)), **machine},
        **report,
    }
    path = Path(path or RESULTS / f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {path}")
    return path


class RssTimeline:
    """The process's resident memory sampled every 20 ms, stamped by `clock`, to read the peak between
    two stamps (a task's, a step's)."""

    def __init__(self, clock=time.perf_counter):
        import threading

        import psutil

        self.clock, self.samples = clock, []
        self.process, self.stop = psutil.Process(), threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self.stop.wait(0.02):
            self.samples.append((self.clock(), self.process.memory_info().rss))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def peak(self, start, end) -> int:
        return max((rss for at, rss in self.samples if start <= at <= end), default=0)


class PeakMemory:
    """The process's peak resident memory while the block runs (sampled every 20 ms): DuckDB runs in
    this process, so that is the statement's footprint above what was already resident."""

    def __enter__(self):
        import threading

        import psutil

        self.process, self.stop = psutil.Process(), threading.Event()
        self.before = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def gib(self) -> dict:
        return {"peak_rss_gib": round(self.peak / 2**30, 2), "rss_before_gib": round(self.before / 2**30, 2)}
