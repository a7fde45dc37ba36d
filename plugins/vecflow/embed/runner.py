"""Runs the embedding entrypoint (include/models/vecflow_model) for one shard on this machine.

`subprocess` runs exactly the container command as a child process; `inprocess` calls the same
entrypoint with the same arguments inside the task's process, which saves the interpreter and torch
start-up per shard (what makes a daily demo over months fit in minutes on two cores).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from vecflow.config import MODELS_DIR, TAXONOMY_PATH, Settings, import_models_package

log = logging.getLogger(__name__)


class EmbedError(RuntimeError):
    """The entrypoint failed for the whole shard."""


def entrypoint_args(shard: dict, settings: Settings, attempt: int, device: str = "cpu") -> list[str]:
    """The entrypoint's arguments: the same list for a local process and a Kubernetes pod."""
    return [
        "--manifest", shard["manifest"], "--catalog-root", str(settings.catalog_dir),
        "--output", shard["output"], "--taxonomy", str(TAXONOMY_PATH),
        "--model-version", shard.get("model_version") or settings.model_version, "--registry", str(settings.model_registry),
        "--run-id", shard["run_id"], "--shard-id", str(shard["shard_id"]), "--attempt", str(attempt),
        "--device", device, "--batch-size", str(settings.embed_batch_size),
        "--workers", str(settings.embed_workers),
    ]


def run_shard(shard: dict, settings: Settings, attempt: int) -> None:
    args = entrypoint_args(shard, settings, attempt)
    if settings.embed_runner == "subprocess":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(MODELS_DIR), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-m", "vecflow_model.embed", *args], env=env,
                              capture_output=True, text=True)
        if done.stdout or done.stderr:
            log.info("entrypoint output:\n%s%s", done.stdout, done.stderr)
        if done.returncode != 0:
            raise EmbedError(f"shard {shard['shard_id']}: entrypoint exited {done.returncode}")
        return
    import_models_package()
    from vecflow_model.embed import main

    status = main(args)
    if status != 0:
        raise EmbedError(f"shard {shard['shard_id']}: entrypoint returned {status}")
