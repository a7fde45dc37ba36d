"""Embed stage: plan shards from a catalog partition, run the embedding entrypoint, load the vector log."""

import re


def safe_run_id(run_id: str) -> str:
    """A run_id usable as a path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
