"""The fetch stage of a shard, on the CPU in the shard's task before the embedding job (local backend):

1. Remote images (http(s)://, gs://, s3://) are downloaded into the run's staging area
   (`shard-NNNN.images/`, named by content md5): the embedding job reads no network. An image that
   could not be fetched keeps its row with the fetch's reject reason and detail (vecflow.fetch), which
   the job passes on as a reject row, so the embed stage's funnel counts it.
2. Pay once: content this model embedded before (the same md5 in vector_log) is not sent to the job.
   Its vector is copied into `shard-NNNN.vectors.reused.parquet` (the job's output schema, `reused` true),
   which the loader appends with the job's output; the funnel counts them (embed, `reused`).

The job gets `shard-NNNN.fetched.parquet`: the rest, by local path.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vecflow.catalog import catalog_root
from vecflow.config import Settings
from vecflow_model.contract import OUTPUT_SCHEMA, resolve_uri
from vecflow_model.imaging import content_md5

log = logging.getLogger(__name__)
REMOTE_SCHEMES = ("http://", "https://", "gs://", "s3://")


def is_remote(uri) -> bool:
    return isinstance(uri, str) and uri.lower().startswith(REMOTE_SCHEMES)


def reused_path(shard: dict) -> Path:
    """Where the fetch stage puts a shard's copied vectors (beside its output)."""
    return Path(shard["output"]).with_suffix(".reused.parquet")


def prefetch_shard(shard: dict, settings: Settings, warehouse, attempt: int) -> dict:
    """The shard to embed: its manifest replaced by the fetched one, less the images whose vectors are
    reused (written to reused_path(shard) for the loader)."""
    from vecflow.fetch import fetch_images

    source = Path(shard["manifest"])
    manifest = pd.read_parquet(source).reset_index(drop=True)
    uris = manifest["uri"].tolist()
    reasons, details, md5s = [None] * len(manifest), [None] * len(manifest), [None] * len(manifest)
    remote = [i for i, uri in enumerate(uris) if is_remote(uri)]
    if remote:
        images = source.with_name(source.name.replace(".manifest.parquet", ".images"))
        images.mkdir(parents=True, exist_ok=True)
        fetched = fetch_images([uris[i] for i in remote], settings.fetch, settings.catalog.storage_options)
        for i, result in zip(remote, fetched):
            if result.ok:
                path = images / result.content_md5
                path.write_bytes(result.data)
                uris[i], md5s[i] = str(path), result.content_md5
            else:
                reasons[i], details[i] = result.reason, f"{result.uri}: {result.detail}"
    root = Path(catalog_root(settings))
    for i, uri in enumerate(uris):
        if md5s[i] is None and reasons[i] is None:
            md5s[i] = _local_md5(uri, root)  # None when unreadable: the job rejects it with the reason
    manifest = manifest.assign(uri=uris, reject_reason=reasons, reject_detail=details)
    reused = _reusable(warehouse, shard, md5s, manifest, attempt)
    reused_path(shard).unlink(missing_ok=True)  # what an earlier attempt left
    if len(reused):
        pq.write_table(reused, reused_path(shard))
    keep = ~manifest["image_id"].isin(set(reused.column("image_id").to_pylist()))
    target = source.with_name(source.name.replace(".manifest.parquet", ".fetched.parquet"))
    manifest[keep].to_parquet(target, index=False)
    log.info(
        "shard %s: %d images, %d fetched of %d remote, %d fetch rejects, %d vectors reused, %d to embed",
        shard["shard_id"],
        len(manifest),
        len(remote) - sum(r is not None for r in reasons),
        len(remote),
        sum(r is not None for r in reasons),
        len(reused),
        int(keep.sum()),
    )
    return {**shard, "manifest": str(target)}


def _local_md5(uri, root: Path) -> str | None:
    path = resolve_uri(uri, root) if isinstance(uri, str) else None
    try:
        return content_md5(path.read_bytes()) if path else None
    except OSError:
        return None


def _reusable(warehouse, shard: dict, md5s: list, manifest: pd.DataFrame, attempt: int) -> pa.Table:
    """The copied vectors (OUTPUT_SCHEMA rows) of the manifest's images whose content this model embedded."""
    wanted = sorted({m for m in md5s if m})
    empty = pa.Table.from_pylist([], schema=OUTPUT_SCHEMA)
    if not wanted:
        return empty
    found = warehouse.query("select_reusable_vectors", model_version=shard["model_version"], content_md5s=wanted)
    if found.empty:
        return empty
    by_md5 = {row["content_md5"]: row for row in found.to_dict("records")}
    now = dt.datetime.now(dt.UTC)
    rows = []
    for md5, item in zip(md5s, manifest.to_dict("records")):
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
