"""The fetch stage of a shard, on the CPU before the embedding job (in the shard's task, or its own
task before a GPU pod):

1. Remote images (http(s)://, gs://, s3://) are downloaded and their bytes put in the fetched
   manifest (`content`), so the embedding job reads no network. For GPU pods (which share no disk
   with the worker) local images are packed the same way. An image that could
   not be fetched keeps its row with the fetch's reject reason and detail (vecflow.fetch), which the
   job passes on as a reject row, so the embed stage's funnel counts it.
2. Pay once: content this model embedded before (the same md5 in vector_log) is not sent to the job.
   Its vector is copied into `shard-NNNN.vectors.reused.parquet` (the job's output schema, `reused` true),
   which the loader appends with the job's output; the funnel counts them (embed, `reused`).

The job gets `shard-NNNN.fetched.parquet` in the staging area: the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from vecflow.catalog import catalog_root
from vecflow.config import Settings
from vecflow.embed.staging import staging
from vecflow_model.contract import MANIFEST_SCHEMA, OUTPUT_SCHEMA, resolve_uri
from vecflow_model.imaging import content_md5

log = logging.getLogger(__name__)
REMOTE_SCHEMES = ("http://", "https://", "gs://", "s3://")


def is_remote(uri) -> bool:
    return isinstance(uri, str) and uri.lower().startswith(REMOTE_SCHEMES)


def reused_url(shard: dict) -> str:
    """Where the fetch stage puts a shard's copied vectors (beside its output)."""
    return shard["output"].removesuffix(".parquet") + ".reused.parquet"


def prefetch_shard(shard: dict, settings: Settings, warehouse, attempt: int) -> dict:
    """The shard to embed: its manifest replaced by the fetched one, less the images whose vectors are
    reused (written to reused_url(shard) for the loader)."""
    from vecflow.fetch import fetch_images

    area = staging(settings)
    manifest = area.read(shard["manifest"]).to_pandas().reset_index(drop=True)
    uris = manifest["uri"].tolist()
    n = len(manifest)
    reasons, details, md5s, contents = [None] * n, [None] * n, [None] * n, [None] * n
    remote = [i for i, uri in enumerate(uris) if is_remote(uri)]
    if remote:
        fetched = fetch_images([uris[i] for i in remote], settings.fetch, settings.catalog.storage_options)
        for i, result in zip(remote, fetched):
            if result.ok:
                contents[i], md5s[i] = result.data, result.content_md5
            else:
                reasons[i], details[i] = result.reason, f"{result.uri}: {result.detail}"
    root = Path(catalog_root(settings))
    pack_local = settings.embed.backend == "kubernetes"
    for i, uri in enumerate(uris):
        if md5s[i] is None and reasons[i] is None:
            data = _local_bytes(uri, root)  # None when unreadable: the job rejects it with the reason
            md5s[i] = content_md5(data) if data is not None else None
            if pack_local:
                contents[i] = data
    manifest = manifest.assign(content=contents, reject_reason=reasons, reject_detail=details)
    reused = _reusable(warehouse, shard, md5s, manifest, attempt)
    area.remove(reused_url(shard))  # what an earlier attempt left
    if len(reused):
        area.write(reused_url(shard), reused)
    keep = ~manifest["image_id"].isin(set(reused.column("image_id").to_pylist()))
    target = shard["manifest"].replace(".manifest.parquet", ".fetched.parquet")
    area.write(target, pa.Table.from_pandas(manifest[keep], schema=MANIFEST_SCHEMA, preserve_index=False))
    log.info(
        "shard %s: %d images, %d fetched of %d remote, %d fetch rejects, %d vectors reused, %d to embed",
        shard["shard_id"],
        n,
        len(remote) - sum(r is not None for r in reasons),
        len(remote),
        sum(r is not None for r in reasons),
        len(reused),
        int(keep.sum()),
    )
    return {**shard, "manifest": target}


def _local_bytes(uri, root: Path) -> bytes | None:
    path = resolve_uri(uri, root) if isinstance(uri, str) else None
    try:
        return path.read_bytes() if path else None
    except OSError:
        return None


def _records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows with None for a missing value: pandas reads a NULL text value (an image with
    no category) as NaN, which pyarrow refuses in a string column."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _reusable(warehouse, shard: dict, md5s: list, manifest: pd.DataFrame, attempt: int) -> pa.Table:
    """The copied vectors (OUTPUT_SCHEMA rows) of the manifest's images whose content this model embedded."""
    wanted = sorted({m for m in md5s if m})
    empty = pa.Table.from_pylist([], schema=OUTPUT_SCHEMA)
    if not wanted:
        return empty
    found = warehouse.query("select_reusable_vectors", model_version=shard["model_version"], content_md5s=wanted)
    if found.empty:
        return empty
    by_md5 = {row["content_md5"]: row for row in _records(found)}
    now = dt.datetime.now(dt.UTC)
    rows = []
    for md5, item in zip(md5s, _records(manifest)):
        vector = by_md5.get(md5)
        if vector is None or item["reject_reason"]:
            continue
        listing = {
            "image_id": item["image_id"],
            "source": item.get("source"),
            "listed_date": item.get("listed_date"),
            "catalog_category": item.get("category"),
        }
        run = {
            "run_id": shard["run_id"],
            "shard_id": int(shard["shard_id"]),
            "attempt": attempt,
            "embedded_at": now,
            "reused": True,
            "reject_reason": None,
            "reject_detail": None,
        }
        copied = {name: vector.get(name) for name in OUTPUT_SCHEMA.names if name not in listing and name not in run}
        copied["embedding"] = [float(x) for x in copied["embedding"]]
        if copied.get("edge_signature") is not None:
            copied["edge_signature"] = [float(x) for x in copied["edge_signature"]]
        rows.append({**copied, **listing, **run})
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
