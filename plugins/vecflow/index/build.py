"""Builds the day's faiss index per category from vectors_clean.

Files under index/<model_version>/<category>/:
  trained/{index.faiss, manifest.json}   the trained, empty IVF (coarse quantizer) of this model and
                                         category: trained once on a sample, reused by every day
  day=<date>/{index.faiss, ids.parquet, manifest.json}
A day index is a copy of the trained IVF with the day's vectors added, so day indexes merge into a
window index without retraining or re-adding (window.py). Until a category has enough vectors to
train (nlist x 39), its day indexes are exact (IDMap2,Flat). Directories are written under a
temporary name and renamed into place, so a reader sees the old one or the new one, never half of
one. ids.parquet maps faiss int64 ids to image_ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
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


def training_minimum(nlist: int) -> int:
    return nlist * MIN_POINTS_PER_CENTROID


def trained_dir(index_dir: Path, model_version: str, category: str) -> Path:
    return index_dir / model_version / category / "trained"


def load_trained(index_dir: Path, model_version: str, category: str):
    """(trained empty IVF, its md5) or (None, None) when this model and category have none yet."""
    import faiss

    directory = trained_dir(index_dir, model_version, category)
    if not (directory / "manifest.json").exists():
        return None, None
    manifest = json.loads((directory / "manifest.json").read_text())
    verify_files(directory, manifest)
    return faiss.read_index(str(directory / "index.faiss")), manifest["files"]["index.faiss"]


def train_quantizer(
    index_dir: Path,
    warehouse,
    model_version: str,
    category: str,
    run_date: dt.date,
    factory_template: str,
    nlist: int,
    sample_size: int,
):
    """Trains the category's IVF on up to sample_size vectors listed up to run_date (the caller checks
    that there are enough). Returns (trained index, md5)."""
    import faiss

    sample = warehouse.query(
        "select_training_sample",
        run_date=run_date,
        model_version=model_version,
        category=category,
        sample_size=sample_size,
    )
    matrix = np.ascontiguousarray(np.stack(sample["embedding"].to_numpy()).astype(np.float32))
    factory = factory_template.format(nlist=nlist)
    index = faiss.index_factory(matrix.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(matrix)

    def write(directory: Path) -> None:
        faiss.write_index(index, str(directory / "index.faiss"))
        manifest = {
            "model_version": model_version,
            "category": category,
            "kind": "trained",
            "index_factory": factory,
            "nlist": nlist,
            "training_vectors": len(matrix),
            "trained_on_partitions_to": run_date.isoformat(),
            "dim": int(matrix.shape[1]),
            "files": {"index.faiss": file_md5(directory / "index.faiss")},
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))

    write_atomically(trained_dir(index_dir, model_version, category), write)
    log.info("trained %s for %s/%s on %d vectors", factory, model_version, category, len(matrix))
    return load_trained(index_dir, model_version, category)


def verify_files(directory: Path, manifest: dict) -> None:
    """Every file of an index directory against the md5 its manifest records."""
    for name, md5 in manifest["files"].items():
        actual = file_md5(directory / name)
        if actual != md5:
            raise IndexIntegrityError(f"{directory / name}: md5 {actual}, manifest says {md5}")


class IndexIntegrityError(RuntimeError):
    """An index file does not match the md5 in its manifest."""


def build_index(vectors: np.ndarray, ids: np.ndarray, trained):
    """The day's vectors in a copy of the trained IVF, or in an exact index before there is one."""
    import faiss

    if trained is not None:
        index = faiss.clone_index(trained)
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
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


def build_day_indexes(settings, warehouse, run_date: dt.date, run_id: str) -> list[dict]:
    import faiss

    index_dir, model_version, nlist = settings.paths.index_dir, settings.model_version, settings.index.nlist
    factory_template = settings.index.factory
    vectors = warehouse.query("select_clean_vectors", run_date=run_date, model_version=model_version)
    trainable = None  # vectors per category up to run_date, read once and only if some category needs it
    built = []
    for category, group in vectors.groupby("category", sort=True):
        matrix = np.ascontiguousarray(np.stack(group["embedding"].to_numpy()).astype(np.float32))
        ids = np.array([stable_id(i) for i in group["image_id"]], dtype=np.int64)
        trained, trained_md5 = load_trained(index_dir, model_version, category)
        if trained is None and trainable is None:
            counts = warehouse.query("select_category_counts", run_date=run_date, model_version=model_version)
            trainable = dict(zip(counts["category"], counts["vectors"]))
        if trained is None and trainable.get(category, 0) >= training_minimum(nlist):
            trained, trained_md5 = train_quantizer(
                index_dir,
                warehouse,
                model_version,
                category,
                run_date,
                factory_template,
                nlist,
                settings.index.train_sample,
            )
        factory = "IDMap2,Flat" if trained is None else factory_template.format(nlist=nlist)
        index = build_index(matrix, ids, trained)
        final_dir = index_dir / model_version / category / f"day={run_date.isoformat()}"

        def write(directory: Path) -> None:
            faiss.write_index(index, str(directory / "index.faiss"))
            pd.DataFrame({"id": ids, "image_id": group["image_id"].to_numpy()}).to_parquet(
                directory / "ids.parquet", index=False
            )
            manifest = {
                "model_version": model_version,
                "category": category,
                "kind": "day",
                "date_from": run_date.isoformat(),
                "date_to": run_date.isoformat(),
                "vector_count": int(index.ntotal),
                "dim": int(matrix.shape[1]),
                "index_factory": factory,
                "trained_md5": trained_md5,
                "metric": "inner_product",
                "run_id": run_id,
                "files": {name: file_md5(directory / name) for name in ("index.faiss", "ids.parquet")},
            }
            (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))

        write_atomically(final_dir, write)
        manifest = json.loads((final_dir / "manifest.json").read_text())
        built.append(
            {
                "model_version": model_version,
                "category": category,
                "kind": "day",
                "date_from": run_date,
                "date_to": run_date,
                "vector_count": manifest["vector_count"],
                "index_type": factory,
                "path": str(final_dir),
                "file_md5": manifest["files"]["index.faiss"],
                "status": "candidate",
                "run_id": run_id,
                "created_at": pd.Timestamp.now(tz="UTC"),
            }
        )
    # a rerun with fewer categories must not leave the old run's indexes of that day behind
    built_categories = {b["category"] for b in built}
    for stale in (index_dir / model_version).glob(f"*/day={run_date.isoformat()}"):
        if stale.parent.name not in built_categories:
            shutil.rmtree(stale)
    registry = pd.DataFrame(
        built,
        columns=[
            "model_version",
            "category",
            "kind",
            "date_from",
            "date_to",
            "vector_count",
            "index_type",
            "path",
            "file_md5",
            "status",
            "run_id",
            "created_at",
        ],
    )
    warehouse.run(
        "register_day_indexes",
        rows=registry,
        names={"columns": list(registry.columns)},
        run_date=run_date,
        model_version=model_version,
    )
    log.info("partition %s: %d day indexes, %d vectors", run_date, len(built), int(registry["vector_count"].sum()))
    return built
