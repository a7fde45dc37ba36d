"""The embedding job's contract, shared by both sides of the runtime boundary: `ShardJob`, the
arguments of one shard job (built by vecflow's local runner and its pod factory, parsed by
`vecflow_model.embed.parse_args`), and `OUTPUT_SCHEMA`, the shard output file (written by the
entrypoint, loaded into vector_log by vecflow.embed.load; a test compares it with vector_log).

The manifest (image_id, uri, source, listed_date, category; from the fetch stage also content,
the image's bytes, and reject_reason/reject_detail decided before the job) and the output are
local paths or gs:// / s3:// URLs, read and written with pyarrow's filesystems (`open_location`).

Light on purpose: the Airflow side imports it, and it needs only pyarrow and numpy.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

# The shard manifest the job reads (the planner's manifest has the first five columns)
MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("source", pa.string()),
        ("listed_date", pa.date32()),
        ("category", pa.string()),
        ("content", pa.binary()),  # the image's bytes, when the fetch stage downloaded or packed it
        ("reject_reason", pa.string()),  # decided by the fetch stage; the job passes it on
        ("reject_detail", pa.string()),
    ]
)
# Embeddings are float32 on the wire (what the model computes); the warehouse keeps FLOAT64.
OUTPUT_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source", pa.string()),
        ("listed_date", pa.date32()),
        ("catalog_category", pa.string()),
        ("content_md5", pa.string()),
        ("dhash", pa.int64()),
        ("edge_signature", pa.list_(pa.float64())),
        ("model_version", pa.string()),
        ("dim", pa.int32()),
        ("embedding", pa.list_(pa.float32())),
        # what validation, the funnel and the quality suite read instead of the vector (vector_checks)
        ("embedding_norm", pa.float64()),
        ("embedding_finite", pa.bool_()),
        # what tags are computed from, JSON keyed by analyser: colour and pattern measurements of the
        # pixels, the model head's class ("model"); vecflow.tagging maps them to a taxonomy's tags
        ("analyses", pa.string()),
        ("run_id", pa.string()),
        ("shard_id", pa.int32()),
        ("attempt", pa.int32()),
        ("embedded_at", pa.timestamp("us", tz="UTC")),
        # a vector this model computed before for the same content, copied by the fetch stage
        ("reused", pa.bool_()),
        ("reject_reason", pa.string()),
        ("reject_detail", pa.string()),
    ]
)
REJECT_COLUMNS = ["reject_reason", "reject_detail"]
# what a row with a vector contributes to vector_log (the rest of a rejected row goes to rejects)
VECTOR_COLUMNS = [name for name in OUTPUT_SCHEMA.names if name not in REJECT_COLUMNS]


def vector_checks(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (n, dim) matrix: its L2 norm (NaN or inf when an element is) and whether every
    element is finite. The job writes them beside each vector so the warehouse checks scalars."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return np.linalg.norm(vectors, axis=1), np.isfinite(vectors).all(axis=1)


def resolve_uri(uri: str, root: Path) -> Path | None:
    """The local file of a manifest URI: a path (relative ones under `root`) or a file:// URI
    (percent-decoded); None for any other scheme (the job reads no network: the fetch stage downloads
    remote images before it)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if len(parsed.scheme) > 1:  # a scheme, not a Windows drive letter
        return None
    path = Path(uri)
    return path if path.is_absolute() else root / path


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and path of a manifest or output location: a local path, gs:// (Google's
    default credentials; STORAGE_EMULATOR_HOST=http://host:port points it at another endpoint, as it
    does the google-cloud-storage client) or s3:// (credentials and AWS_ENDPOINT_URL from the
    environment)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if location.startswith("gs://") and emulator:
        endpoint = urllib.parse.urlsplit(emulator)
        gcs = pafs.GcsFileSystem(anonymous=True, scheme=endpoint.scheme, endpoint_override=endpoint.netloc)
        return gcs, location.removeprefix("gs://")
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


@dataclass(frozen=True)
class ShardJob:
    """One shard job. `attempt` None: the entrypoint reads ATTEMPT from its environment (a pod's
    try number is only known when Airflow renders the pod, not when the shard is planned)."""

    manifest: str
    output: str
    catalog_root: Path
    model_version: str
    registry: Path
    run_id: str
    shard_id: int
    attempt: int | None = None
    device: str = "cpu"
    batch_size: int = 256
    workers: int = 0
    amp: str = "auto"
    compile: bool = False

    def to_args(self) -> list[str]:
        """The entrypoint's command-line arguments: `python -m vecflow_model.embed *job.to_args()`."""
        args: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            elif value is not None:
                args += [flag, str(value)]
        return args
