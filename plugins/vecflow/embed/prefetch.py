"""The fetch stage of a shard: its remote images (http(s)://, gs://, s3://) downloaded into the run's
staging area before the embedding job, which reads no network. Runs on the CPU, in the shard's task
before the entrypoint (local backend).

A shard whose manifest lists only local files is left as it is. Otherwise the fetched images are
written under `shard-NNNN.images/` beside the manifest, named by their content md5, and a manifest
`shard-NNNN.fetched.parquet` lists them by local path; an image that could not be fetched keeps its
row with the fetch's reject reason and detail (vecflow.fetch), which the entrypoint passes on as a
reject row, so the embed stage's funnel counts it (in = vectors + rejects).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from vecflow.config import Settings

log = logging.getLogger(__name__)
REMOTE_SCHEMES = ("http://", "https://", "gs://", "s3://")


def is_remote(uri) -> bool:
    return isinstance(uri, str) and uri.lower().startswith(REMOTE_SCHEMES)


def prefetch_shard(shard: dict, settings: Settings) -> dict:
    """The shard to embed: `shard` itself when every image is local, else the same shard with its
    manifest replaced by the fetched one."""
    from vecflow.fetch import fetch_images

    source = Path(shard["manifest"])
    manifest = pd.read_parquet(source)
    remote = manifest["uri"].map(is_remote)
    if not remote.any():
        return shard
    fetched = fetch_images(manifest.loc[remote, "uri"].tolist(), settings.fetch, settings.catalog.storage_options)
    images = source.with_name(source.name.replace(".manifest.parquet", ".images"))
    images.mkdir(parents=True, exist_ok=True)
    uris, reasons, details = manifest["uri"].tolist(), [None] * len(manifest), [None] * len(manifest)
    for position, result in zip(remote[remote].index, fetched):
        i = manifest.index.get_loc(position)
        if result.ok:
            path = images / result.content_md5
            path.write_bytes(result.data)
            uris[i] = str(path)
        else:
            reasons[i], details[i] = result.reason, f"{result.uri}: {result.detail}"
    out = manifest.assign(uri=uris, reject_reason=reasons, reject_detail=details)
    target = source.with_name(source.name.replace(".manifest.parquet", ".fetched.parquet"))
    out.to_parquet(target, index=False)
    failed = sum(r is not None for r in reasons)
    log.info(
        "shard %s: fetched %d of %d remote images (%d rejects) into %s",
        shard["shard_id"],
        int(remote.sum()) - failed,
        int(remote.sum()),
        failed,
        images,
    )
    return {**shard, "manifest": str(target)}
