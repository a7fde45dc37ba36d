"""Builds the day's faiss index per category from vectors_clean.

Versions in the index store (store.py) under <model_version>/<category>/:
  trained/{index.faiss, manifest.json}   the trained, empty IVF (coarse quantizer) of this model and
                                         category: trained once on a sample, reused by every day
  day=<date>/{index.faiss, ids.parquet, manifest.json}
A day index is a copy of the trained IVF with the day's vectors added, so day indexes merge into a
window index without retraining or re-adding (window.py). Until a category has enough vectors to
train (nlist x 39), its day indexes are exact (IDMap2,Flat). ids.parquet maps faiss int64 ids to
image_ids. Every load checks the files against their manifest's md5s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from collections import OrderedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vecflow.index.store import IndexStore, index_store

log = logging.getLogger(__name__)

MIN_POINTS_PER_CENTROID = 39  # faiss warns below this; fewer vectors get an exact (Flat) index


def stable_id(image_id: str) -> int:
    """A 63-bit id that is the same for an image on every day and every machine."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "big") >> 1


def training_minimum(nlist: int) -> int:
    return nlist * MIN_POINTS_PER_CENTROID


def index_bytes(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def ids_bytes(ids: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    ids.to_parquet(buffer, index=False)
    return buffer.getvalue()


def category_key(model_version: str, category: str) -> str:
    return f"{model_version}/{category}"


def trained_key(model_version: str, category: str) -> str:
    return f"{category_key(model_version, category)}/trained"


def day_key(model_version: str, category: str, day: dt.date) -> str:
    return f"{category_key(model_version, category)}/day={day.isoformat()}"


def load_version(store: IndexStore, key: str):
    """(index, ids frame or None, manifest) of a version, every file md5-checked."""
    import faiss

    files, manifest = store.read_version(key)
    index = faiss.deserialize_index(np.frombuffer(files["index.faiss"], dtype=np.uint8))
    ids = _IDS_CACHE.frame(manifest["files"]["ids.parquet"], files["ids.parquet"]) if "ids.parquet" in files else None
    return index, ids, manifest


class _IdsCache:
    """Parsed ids.parquet files by md5 (their content: a version never changes), least recently used
    out past `max_rows` rows in all. Every window build of a process reads each day's ids again (a
    30-day window: 30 builds); the bytes are still read and md5-checked each time, only parsing is saved.
    Callers get a copy, so nothing they do reaches the cache."""

    def __init__(self, max_rows: int = 1_000_000):
        self.max_rows, self.rows, self.frames = max_rows, 0, OrderedDict()

    def frame(self, md5: str, data: bytes) -> pd.DataFrame:
        if md5 in self.frames:
            self.frames.move_to_end(md5)
            return self.frames[md5].copy()
        # through pyarrow: pandas.read_parquet costs twice as much
        frame = pq.read_table(pa.BufferReader(data)).to_pandas()
        if len(frame) <= self.max_rows:
            self.frames[md5], self.rows = frame, self.rows + len(frame)
            while self.rows > self.max_rows:
                self.rows -= len(self.frames.popitem(last=False)[1])
        return frame.copy()


_IDS_CACHE = _IdsCache()


def load_trained(store: IndexStore, model_version: str, category: str):
    """(trained empty IVF, its md5) or (None, None) when this model and category have none yet."""
    key = trained_key(model_version, category)
    if store.manifest(key) is None:
        return None, None
    index, _, manifest = load_version(store, key)
    return index, manifest["files"]["index.faiss"]


def train_quantizer(
    store: IndexStore,
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
    manifest = store.write_version(
        trained_key(model_version, category),
        {"index.faiss": index_bytes(index)},
        {
            "model_version": model_version,
            "category": category,
            "kind": "trained",
            "index_factory": factory,
            "nlist": nlist,
            "training_vectors": len(matrix),
            "trained_on_partitions_to": run_date.isoformat(),
            "dim": int(matrix.shape[1]),
        },
    )
    log.info("trained %s for %s/%s on %d vectors", factory, model_version, category, len(matrix))
    return index, manifest["files"]["index.faiss"]


def build_index(vectors: np.ndarray, ids: np.ndarray, trained):
    """The day's vectors in a copy of the trained IVF, or in an exact index before there is one."""
    import faiss

    if trained is not None:
        index = faiss.clone_index(trained)
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    return index


def build_group(category: str, groups: int) -> int:
    """The build group (mapped task instance) a category's indexes are built in, of `groups`
    (VECFLOW_INDEX_BUILD_GROUPS): the taxonomy's categories in turn, in the taxonomy's order, so as many
    groups as categories give each its own; any other category by a stable hash of its name."""
    from vecflow.taxonomy import load_taxonomy

    known = load_taxonomy().tags("category")
    position = known.index(category) if category in known else stable_id(category)
    return position % groups


def group_categories(categories, group: int, groups: int) -> list[str]:
    return sorted(c for c in set(categories) if build_group(c, groups) == group)


def group_window_vectors(settings, warehouse, run_date: dt.date) -> dict[int, int]:
    """Clean vectors each build group's window indexes will hold at most (window and long tail up to
    run_date), for sizing a build pod's memory."""
    index = settings.index
    horizon = dt.timedelta(days=max(index.window_days, index.long_tail_days) - 1)
    counts = warehouse.query(
        "select_window_counts", date_from=run_date - horizon, date_to=run_date, model_version=settings.model_version
    )
    out = dict.fromkeys(range(index.build_groups), 0)
    for category, vectors in zip(counts["category"], counts["vectors"]):
        out[build_group(category, index.build_groups)] += int(vectors)
    return out


def build_day_indexes(settings, warehouse, run_date: dt.date, run_id: str, group: int = 0) -> list[dict]:
    """The day index of each category of build group `group` that has clean vectors on run_date
    (training its quantizer first when it has enough); removes the group's day indexes of that date
    that a rerun no longer has."""
    store, model_version, nlist = index_store(settings), settings.model_version, settings.index.nlist
    factory_template = settings.index.factory
    counts = warehouse.query("select_category_counts", run_date=run_date, model_version=model_version)
    trainable = dict(zip(counts["category"], counts["vectors"]))
    groups = settings.index.build_groups
    categories = group_categories([*trainable, *store.children(model_version)], group, groups)
    if not categories:
        log.info("partition %s: build group %d of %d has no category", run_date, group, groups)
        return []
    vectors = warehouse.query(
        "select_clean_vectors", run_date=run_date, model_version=model_version, categories=categories
    )
    built = []
    for category, rows in vectors.groupby("category", sort=True):
        matrix = np.ascontiguousarray(np.stack(rows["embedding"].to_numpy()).astype(np.float32))
        ids = np.array([stable_id(i) for i in rows["image_id"]], dtype=np.int64)
        trained, trained_md5 = load_trained(store, model_version, category)
        if trained is None and trainable.get(category, 0) >= training_minimum(nlist):
            trained, trained_md5 = train_quantizer(
                store,
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
        key = day_key(model_version, category, run_date)
        manifest = store.write_version(
            key,
            {
                "index.faiss": index_bytes(index),
                "ids.parquet": ids_bytes(pd.DataFrame({"id": ids, "image_id": rows["image_id"].to_numpy()})),
            },
            {
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
            },
        )
        built.append(
            {
                "model_version": model_version,
                "category": category,
                "kind": "day",
                "date_from": run_date,
                "date_to": run_date,
                "vector_count": manifest["vector_count"],
                "index_type": factory,
                "path": store.uri(key),
                "file_md5": manifest["files"]["index.faiss"],
                "status": "candidate",
                "run_id": run_id,
                "created_at": pd.Timestamp.now(tz="UTC"),
            }
        )
    # a rerun with fewer categories must not leave the old run's indexes of that day behind
    built_categories = {b["category"] for b in built}
    for category in categories:
        if category not in built_categories:
            store.remove(day_key(model_version, category, run_date))
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
        categories=categories,
    )
    log.info("partition %s: %d day indexes, %d vectors", run_date, len(built), int(registry["vector_count"].sum()))
    return built
