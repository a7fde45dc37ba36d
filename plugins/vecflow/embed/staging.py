"""A run's staging area: `<storage URL>/staging/<date>/<run id>/`, a local directory or a bucket
prefix (VECFLOW_STORAGE_URL), where the planner writes shard manifests, the fetch stage the fetched
manifests (image bytes inside) and copied vectors, and the embedding job its outputs. Workers reach
it through fsspec with the storage options, pods through pyarrow's filesystems (the job's image
has no fsspec), so neither needs a shared disk.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vecflow.config import Settings
from vecflow.embed import safe_run_id


class Staging:
    """Parquet files under the staging URL, by URL."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, _ = fsspec.core.url_to_fs(self.url, **(storage_options or {}))

    def shard_dir(self, run_date: dt.date, run_id: str) -> str:
        """The URL under which one run of one partition keeps its shards' files."""
        return f"{self.url}/{run_date.isoformat()}/{safe_run_id(run_id)}"

    def write(self, url: str, table: pa.Table) -> None:
        """Writes a parquet file: an object in one upload, a local file as the index store writes
        one (temporary name, renamed), so no reader sees half a file."""
        from vecflow.index.store import write_file_atomically

        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        if "://" in url:
            self.fs.pipe_file(url, buffer.getvalue())
            return
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(Path(url), buffer.getvalue())

    def read(self, url: str) -> pa.Table:
        """A parquet file; FileNotFoundError when it is not there."""
        with self.fs.open(url, "rb") as f:
            return pq.read_table(f)

    def exists(self, url: str) -> bool:
        return self.fs.exists(url)

    def remove(self, url: str) -> None:
        """Removes a file or a folder (with what it holds), if it is there."""
        if self.fs.exists(url):
            self.fs.rm(url, recursive=True)


@functools.cache
def _staging(url: str, options_json: str) -> Staging:
    return Staging(url, json.loads(options_json))


def staging(settings: Settings) -> Staging:
    """The settings' staging area (one per URL and options in a process)."""
    paths = settings.paths
    return _staging(paths.staging_url, json.dumps(paths.storage_options, sort_keys=True))
