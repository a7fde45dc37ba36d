"""Builds the day's faiss index per category from vectors_clean.

Files: index/<model_version>/<category>/day=<date>/{index.faiss, ids.parquet, manifest.json}.
A directory is written under a temporary name and renamed into place, so a reader sees the old
day or the new one, never half of one. ids.parquet maps faiss int64 ids to image_ids.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MIN_POINTS_PER_CENTROID = 39  # faiss warns below this; fewer vectors get an exact (Flat) index


def stable_id(image_id: str) -> int:
    """A 63-bit id that is the same for an image on every day and every machine."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "big") >> 1


def file_md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def choose_factory(factory_template: str, count: int) -> str:
    """The configured IVF factory when there are enough vectors to train it, else exact search."""
    nlist = max(1, int(math.sqrt(count)))
    if "{nlist}" in factory_template and count >= nlist * MIN_POINTS_PER_CENTROID and nlist >= 2:
        return factory_template.format(nlist=nlist)
    return "IDMap2,Flat" if "{nlist}" in factory_template else factory_template


def build_index(vectors: np.ndarray, ids: np.ndarray, factory: str):
    import faiss

    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add_with_ids(vectors, ids)
    return index


def write_atomically(final_dir: Path, write) -> None:
    tmp = final_dir.with_name(f".{final_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp, final_dir)
    if old.exists():
        shutil.rmtree(old)


def build_day_indexes(index_dir: Path, warehouse, run_date: dt.date, run_id: str, model_version: str,
                      factory_template: str) -> list[dict]:
    import faiss

    vectors = warehouse.query("select_clean_vectors", run_date=run_date, model_version=model_version)
    built = []
    for category, group in vectors.groupby("category", sort=True):
        matrix = np.ascontiguousarray(np.stack(group["embedding"].to_numpy()).astype(np.float32))
        ids = np.array([stable_id(i) for i in group["image_id"]], dtype=np.int64)
        factory = choose_factory(factory_template, len(matrix))
        index = build_index(matrix, ids, factory)
        final_dir = index_dir / model_version / category / f"day={run_date.isoformat()}"

        def write(directory: Path) -> None:
            faiss.write_index(index, str(directory / "index.faiss"))
            pd.DataFrame({"id": ids, "image_id": group["image_id"].to_numpy()}).to_parquet(
                directory / "ids.parquet", index=False)
            manifest = {
                "model_version": model_version, "category": category, "kind": "day",
                "date_from": run_date.isoformat(), "date_to": run_date.isoformat(),
                "vector_count": int(index.ntotal), "dim": int(matrix.shape[1]), "index_factory": factory,
                "metric": "inner_product", "run_id": run_id,
                "files": {name: file_md5(directory / name) for name in ("index.faiss", "ids.parquet")},
            }
            (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))

        write_atomically(final_dir, write)
        manifest = json.loads((final_dir / "manifest.json").read_text())
        built.append({
            "model_version": model_version, "category": category, "kind": "day", "date_from": run_date,
            "date_to": run_date, "vector_count": manifest["vector_count"], "index_type": factory,
            "path": str(final_dir), "file_md5": manifest["files"]["index.faiss"], "status": "candidate",
            "run_id": run_id, "created_at": pd.Timestamp.now(tz="UTC"),
        })
    # a rerun with fewer categories must not leave the old run's indexes of that day behind
    built_categories = {b["category"] for b in built}
    for stale in (index_dir / model_version).glob(f"*/day={run_date.isoformat()}"):
        if stale.parent.name not in built_categories:
            shutil.rmtree(stale)
    registry = pd.DataFrame(built, columns=[
        "model_version", "category", "kind", "date_from", "date_to", "vector_count", "index_type", "path",
        "file_md5", "status", "run_id", "created_at"])
    warehouse.run("register_day_indexes", rows=registry, names={"columns": list(registry.columns)},
                  run_date=run_date, model_version=model_version)
    log.info("partition %s: %d day indexes, %d vectors", run_date, len(built), int(registry["vector_count"].sum()))
    return built
