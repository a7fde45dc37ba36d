"""Runs the embedding job (include/models/vecflow_model) for one shard on this machine.

`subprocess` runs exactly the container command as a child process; `inprocess` calls the same
entrypoint with the same arguments inside the task's process, which saves the interpreter and torch
start-up per shard (what makes a daily demo over months fit in minutes on two cores).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from vecflow.catalog import catalog_root
from vecflow.config import Settings
from vecflow_model.contract import ShardJob

log = logging.getLogger(__name__)


class EmbedError(RuntimeError):
    """The entrypoint failed for the whole shard."""


def shard_job(shard: dict, settings: Settings, **where) -> ShardJob:
    """The job of a planned shard (embed.plan.write_shards). `where` overrides what differs where it
    runs: a pod's registry, device and workers (embed.pods)."""
    fields = {
        "manifest": shard["manifest"],
        "output": shard["output"],
        "catalog_root": Path(catalog_root(settings)),
        "model_version": shard["model_version"],
        "registry": settings.embed.model_registry,
        "run_id": shard["run_id"],
        "shard_id": int(shard["shard_id"]),
        "batch_size": settings.embed.batch_size,
        "workers": settings.embed.workers,
    }
    return ShardJob(**{**fields, **where})


def run_shard(shard: dict, settings: Settings, attempt: int) -> None:
    job = shard_job(shard, settings, attempt=attempt)
    if settings.embed.runner == "subprocess":
        done = subprocess.run(
            [sys.executable, "-m", "vecflow_model.embed", *job.to_args()], capture_output=True, text=True
        )
        if done.stdout or done.stderr:
            log.info("entrypoint output:\n%s%s", done.stdout, done.stderr)
        if done.returncode != 0:
            raise EmbedError(f"shard {job.shard_id}: entrypoint exited {done.returncode}")
        return
    from vecflow_model.embed import main

    status = main(job.to_args())
    if status != 0:
        raise EmbedError(f"shard {job.shard_id}: entrypoint returned {status}")
