"""Hand-made vector_log rows for tests of the warehouse steps, and content snapshots of tables and index manifests."""

from __future__ import annotations

import colorsys
import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa

from vecflow.embed.load import LOG_COLUMNS, append_vectors
from vecflow_model.contract import vector_checks

D1, D2 = dt.date(2026, 3, 30), dt.date(2026, 4, 2)  # two quarters
# what names the run, its attempt or the time (a rerun through the scheduler clears the run: attempt 2)
VOLATILE = {
    "run_id",
    "vector_run_id",
    "attempt",
    "recorded_at",
    "loaded_at",
    "created_at",
    "embedded_at",
    "published_at",
    "reused",
}
DERIVED_TABLES = [
    "catalog",
    "vectors_clean",
    "dedup_map",
    "rejects",
    "image_tags",
    "funnel_metrics",
    "index_registry",
    "tag_trends",
    "v_vector_log_latest",
]


def snapshot(warehouse) -> dict[str, str]:
    """Content hash per derived table, ignoring columns that name the run or the time: two states of
    the pipeline with the same snapshot hold the same data."""
    out = {}
    for table in DERIVED_TABLES:
        frame = warehouse.table(table)
        if table == "funnel_metrics":  # how a run got its vectors (embedded or reused), not what they are
            frame = frame[frame["metric"] != "reused"]
        frame = frame[[c for c in frame.columns if c not in VOLATILE]].astype(str)
        frame = frame.sort_values(list(frame.columns)).reset_index(drop=True)
        out[table] = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    return out


def manifest_snapshot(index_dir) -> dict[str, str]:
    """Content hash per index manifest, ignoring the fields that name the run or the time."""
    import json

    out = {}
    for path in sorted(index_dir.rglob("manifest.json")):
        manifest = {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
        out[str(path.relative_to(index_dir))] = hashlib.sha256(
            json.dumps(manifest, sort_keys=True).encode()
        ).hexdigest()
    return out


def seed_of(image_id: str) -> int:
    return int(hashlib.sha1(image_id.encode()).hexdigest()[:15], 16)


def unit(seed: int, dim: int = 256) -> list[float]:
    v = np.random.default_rng(seed).normal(size=dim)
    return (v / np.linalg.norm(v)).tolist()


def analyses(color: str | None, pattern: str | None, category: str | None = None) -> str:
    """What the embedding job measures of a garment of the shipped palette's `color` with `pattern`
    (and the model's class): the analyses the tagging step maps back to those tags."""
    from vecflow.taxonomy import load_taxonomy
    from vecflow_model.pixel_tags import PATTERN_LAYOUTS, PATTERN_PERIODS

    taxonomy = load_taxonomy()
    out: dict = {}
    if color is not None:
        r, g, b = (c / 255 for c in taxonomy.tag_info("color", color)["rgb"])
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out["colour"] = {"hue": h, "saturation": s, "value": v, "warmth": r - b}
    if pattern is not None:
        info = taxonomy.tag_info("pattern", pattern)
        marked = f"{info['layout']}_{info['period_px']}" if "layout" in info else None
        out["pattern"] = {
            f"{layout}_{p}": 120.0 if f"{layout}_{p}" == marked else 8.0
            for layout in PATTERN_LAYOUTS
            for p in PATTERN_PERIODS
        }
    if category is not None:
        out["model"] = {"category": category, "confidence": 0.95}
    return json.dumps(out)


def row(
    image_id,
    day,
    md5=None,
    category="dress",
    color="red",
    pattern="solid",
    embedding=None,
    run_id="run-1",
    shard_id=0,
    attempt=1,
    at="2026-05-01T00:00:00Z",
    model_version="m1",
    dhash=0,
    edge_signature=None,
    source="shop_a",
    catalog_category=None,
):
    embedding = unit(seed_of(image_id)) if embedding is None else embedding
    # unrelated pictures: random edge signatures are far from each other (cosine ~0)
    edge_signature = unit(seed_of(image_id) + 1, 128) if edge_signature is None else edge_signature
    [norm], [finite] = vector_checks([embedding])  # what the embedding job writes beside the vector
    return {
        "image_id": image_id,
        "content_md5": md5 or f"md5-{image_id}",
        "dhash": dhash,
        "edge_signature": edge_signature,
        "source": source,
        "listed_date": day,
        "catalog_category": catalog_category or category,
        "category": category,
        "model_version": model_version,
        "dim": len(embedding),
        "embedding": embedding,
        "embedding_norm": float(norm),
        "embedding_finite": bool(finite),
        "analyses": analyses(color, pattern, category),
        "run_id": run_id,
        "shard_id": shard_id,
        "attempt": attempt,
        "embedded_at": pd.Timestamp(at),
        "reused": False,
    }


def load(warehouse, rows, day, run_id="run-1", shard_id=0, attempt=1):
    table = pa.Table.from_pandas(pd.DataFrame(rows)[LOG_COLUMNS], preserve_index=False)
    append_vectors(warehouse, table, day, run_id, shard_id, attempt)


def tag_partition(warehouse, run_date, run_id, model_version):
    """The daily tagging step with the configured taxonomy."""
    from vecflow.config import settings
    from vecflow.tagging import tag_partition as tag
    from vecflow.taxonomy import load_taxonomy

    return tag(settings(), warehouse, load_taxonomy(), run_date, run_id, model_version)


def catalog(warehouse, day, ids, category="dress", attributes=None, uris=None):
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "uri": uris if uris is not None else [f"{i}.jpg" for i in ids],
            "source": "shop_a",
            "listed_date": day,
            "category": category,
            "attributes": attributes if attributes is not None else [None] * len(ids),
            "run_id": "run-1",
            "loaded_at": pd.Timestamp("2026-05-01", tz="UTC"),
        }
    )
    warehouse.run(
        "replace_partition",
        rows=frame,
        names={"table": "catalog", "partition_column": "listed_date", "columns": list(frame.columns)},
        partition_value=day,
    )
