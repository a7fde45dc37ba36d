"""Window index per category: the last N day indexes merged, evaluated, and published atomically.

Versions in the index store (store.py) under <model_version>/<category>/:
  window/v-<date>-<content>/{index.faiss, ids.parquet, manifest.json}   a version (immutable)
  CURRENT                                                          JSON naming the published version
Day indexes built on the category's trained IVF are merged with merge_from (no retraining, no
re-adding); exact day indexes from before the IVF was trained are added from their stored vectors.
Expiry: days older than the window leave it, except their long-tail items: those up to
`index_long_tail_days` old whose nearest neighbour in the window has cosine below
`index_long_tail_similarity` (nothing like them is listed any more, so they stay searchable; seed
001 5.4). A version is published only when its recall@10 against exact search and its same-category
precision@10 (the catalog's labels of its neighbours) reach their minimums and have not dropped
beyond their tolerances from the published one's (gate_problem); publishing (and rollback)
swaps CURRENT with a precondition on the pointer it read (PointerConflict when another writer got
there first), so a reader sees one version or the other and no switch is lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import numpy as np
import pandas as pd

from vecflow.index.build import category_key, ids_bytes, index_bytes, load_trained, load_version, stable_id
from vecflow.index.store import IndexIntegrityError, IndexStore, Pointer, index_store

log = logging.getLogger(__name__)
K = 10


class IndexGateError(RuntimeError):
    """A window index failed its evaluation gate and was not published."""


def model_categories(settings, model_version: str) -> list[str]:
    """The categories a model has indexes for (a folder each in the index store)."""
    return model_categories_in(index_store(settings), model_version)


def model_categories_in(store: IndexStore, model_version: str) -> list[str]:
    return store.children(model_version)


def published_categories(settings, model_version: str) -> list[str]:
    """The categories of a model with a published window index (a CURRENT pointer)."""
    store = index_store(settings)
    return [c for c in model_categories(settings, model_version) if store.exists(current_key(model_version, c))]


def current_key(model_version: str, category: str) -> str:
    return f"{category_key(model_version, category)}/CURRENT"


def window_key(model_version: str, category: str, version: str) -> str:
    return f"{category_key(model_version, category)}/window/{version}"


def read_current(store: IndexStore, model_version: str, category: str) -> Pointer | None:
    return store.read_pointer(current_key(model_version, category))


def write_current(store: IndexStore, model_version: str, category: str, version: str, expected: Pointer | None) -> None:
    store.swap_pointer(
        current_key(model_version, category),
        {"version": version, "switched_at": pd.Timestamp.now(tz="UTC").isoformat()},
        expected,
    )


def load_published(store: IndexStore, model_version: str, category: str):
    """The published window index of a category, md5-checked: (index, ids, manifest)."""
    current = read_current(store, model_version, category)
    if current is None:
        raise FileNotFoundError(f"no published index for {model_version}/{category} in {store.url}")
    return load_version(store, window_key(model_version, category, current.payload["version"]))


def _day_keys(store: IndexStore, model_version: str, category: str, date_from: dt.date, date_to: dt.date):
    base = category_key(model_version, category)
    for name in store.children(base):
        if name.startswith("day="):
            day = dt.date.fromisoformat(name.removeprefix("day="))
            if date_from <= day <= date_to:
                yield day, f"{base}/{name}"


def merge_days(store: IndexStore, model_version: str, category: str, date_from: dt.date, date_to: dt.date):
    """The window's index and id map from its day indexes; counts of days merged and added."""
    import faiss

    trained, trained_md5 = load_trained(store, model_version, category)
    window = faiss.clone_index(trained) if trained is not None else None
    exact_vectors, exact_ids, id_frames, sources, contents = [], [], [], [], [str(trained_md5)]
    merged = added = 0
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a day's lists are short: OpenMP's start-up costs 30x the merge itself
    try:
        for day, key in _day_keys(store, model_version, category, date_from, date_to):
            index, ids, manifest = load_version(store, key)
            id_frames.append(ids)
            sources.append(day.isoformat())
            contents.append(f"{day}:{manifest['files']['index.faiss']}:{manifest['files']['ids.parquet']}")
            if window is not None and manifest.get("trained_md5") == trained_md5:
                window.merge_from(index, 0)
                merged += 1
            else:  # an exact day index from before the IVF was trained
                exact_vectors.append(
                    index.index.reconstruct_n(0, index.ntotal)
                    if index.ntotal
                    else np.zeros((0, index.d), dtype=np.float32)
                )
                exact_ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
                added += 1
    finally:
        faiss.omp_set_num_threads(threads)
    if not sources:
        return None
    if window is None:
        window = faiss.IndexIDMap2(faiss.IndexFlatIP(trained.d if trained is not None else exact_vectors[0].shape[1]))
    if exact_vectors:
        window.add_with_ids(np.ascontiguousarray(np.vstack(exact_vectors)), np.concatenate(exact_ids))
    return (
        window,
        pd.concat(id_frames, ignore_index=True),
        {
            "days_merged": merged,
            "days_added": added,
            "source_partitions": sources,
            "trained_md5": trained_md5,
            "content_key": "|".join(contents),
        },
    )


def nprobe_ladder(index, start: int) -> list[int]:
    """The nprobe values tuning tries: the setting, doubled up to every list (exact over the lists)."""
    nlist = getattr(index, "nlist", None)
    if not nlist:
        return [start]
    ladder, nprobe = [], min(start, nlist)
    while nprobe < nlist:
        ladder.append(nprobe)
        nprobe *= 2
    return [*ladder, nlist]


def evaluate(index, vectors: pd.DataFrame, nprobes: list[int], queries: int, target: float = 0.0) -> dict:
    """recall@10 of the index against exact search, and same-category precision@10 (the catalog's
    label) of its results, on up to `queries` vectors of the window drawn evenly, at the smallest
    of `nprobes` (ascending) whose recall reaches `target`, or the largest when none does. The
    result says which (`nprobe`) and what each tried reached (`nprobe_recall`)."""
    import faiss

    if index.ntotal == 0 or vectors.empty:
        return {"recall_at_10": None, "precision_at_10": None, "queries": 0, "nprobe": nprobes[0]}
    matrix = np.ascontiguousarray(np.stack(vectors["embedding"].to_numpy()).astype(np.float32))
    ids = np.array([stable_id(i) for i in vectors["image_id"]], dtype=np.int64)
    labels = dict(zip(ids, vectors["catalog_category"]))
    picks = np.unique(np.linspace(0, len(matrix) - 1, min(queries, len(matrix))).astype(int))
    k = min(K, len(matrix))
    exact = faiss.IndexFlatIP(matrix.shape[1])
    exact.add(matrix)
    _, exact_rows = exact.search(matrix[picks], k)
    tried = {}
    for nprobe in nprobes:
        if hasattr(index, "nprobe"):
            index.nprobe = nprobe
        _, found = index.search(matrix[picks], k)
        recall = float(np.mean([len(set(ids[e]) & set(f)) / k for e, f in zip(exact_rows, found)]))
        tried[str(nprobe)] = round(recall, 4)
        if recall >= target:
            break
    precision = np.mean(
        [np.mean([labels.get(i) == labels[ids[q]] for i in f if i != -1]) for q, f in zip(picks, found)]
    )
    return {
        "recall_at_10": round(recall, 4),
        "precision_at_10": round(float(precision), 4),
        "queries": int(len(picks)),
        "nprobe": int(nprobe),
        "nprobe_recall": tried,
    }


def long_tail(in_window: pd.DataFrame, expired: pd.DataFrame, max_similarity: float) -> pd.DataFrame:
    """The expired items whose nearest neighbour in the window (exact search) has cosine below
    max_similarity: the long tail that stays."""
    import faiss

    if expired.empty:
        return expired
    if in_window.empty:
        return expired
    window = faiss.IndexFlatIP(len(in_window["embedding"].iloc[0]))
    window.add(np.ascontiguousarray(np.stack(in_window["embedding"].to_numpy()).astype(np.float32)))
    nearest, _ = window.search(np.ascontiguousarray(np.stack(expired["embedding"].to_numpy()).astype(np.float32)), 1)
    return expired[nearest[:, 0] < max_similarity]


METADATA_FORMAT = 2  # ids.parquet's columns (METADATA_COLUMNS); part of a version's content
# what a window's ids.parquet holds per faiss id: what filtered search and results read
METADATA_COLUMNS = ["id", "image_id", "listed_date", "source", "category", "tags", "duplicates", "attributes"]


def window_metadata(ids: pd.DataFrame, vectors: pd.DataFrame) -> pd.DataFrame:
    """The window's ids.parquet: one row per faiss id with what filtered search and results read
    (METADATA_COLUMNS); an image listed on several days of the window has one id: its latest row."""
    latest = vectors.sort_values("listed_date").drop_duplicates("image_id", keep="last")
    meta = ids.drop_duplicates("id").merge(
        latest[[c for c in METADATA_COLUMNS if c not in ("id", "image_id")] + ["image_id"]], on="image_id", how="left"
    )
    for column in ("tags", "duplicates"):
        meta[column] = [[] if v is None or np.ndim(v) == 0 else [str(x) for x in v] for v in meta[column]]
    meta["listed_date"] = pd.to_datetime(meta["listed_date"]).dt.date
    return meta[METADATA_COLUMNS].reset_index(drop=True)


def version_name(date_to: dt.date, content_key: str) -> str:
    """Named by content (the day indexes merged and the trained IVF): a rerun that changes nothing
    gives the same version, a fixed day gives a new one."""
    return f"v-{date_to:%Y%m%d}-{hashlib.sha1(content_key.encode()).hexdigest()[:10]}"


def build_group_indexes(settings, warehouse, run_date: dt.date, run_id: str, group: int = 0) -> dict:
    """The daily index stage for one build group (build.build_group): the day indexes of the
    partition, then each category's window index, published if it passes its gate (IndexGateError
    names those that did not, after the others are published). What it built, for the asset event."""
    from vecflow.index.build import build_day_indexes, group_categories

    built = build_day_indexes(settings, warehouse, run_date, run_id, group)
    categories = model_categories(settings, settings.model_version)
    windows = build_and_publish(
        settings, warehouse, run_date, run_id, group_categories(categories, group, settings.index.build_groups)
    )
    return {
        "model_version": settings.model_version,
        "group": group,
        "day": {b["category"]: b["vector_count"] for b in built},
        "window": {
            w["category"]: {k: w[k] for k in ("version", "status", "vector_count", "recall_at_10", "nprobe")}
            for w in windows
        },
    }


def build_and_publish(settings, warehouse, run_date: dt.date, run_id: str, categories: list[str]) -> list[dict]:
    """For each category: merge the window of the last N days (ending at the newest partition),
    evaluate it, register it, publish it if the gate passes. Raises IndexGateError naming every
    category that failed, after the others are published."""
    # every window ends at the newest partition with a day index (of any category), so rerunning an
    # old date re-merges the current windows with the fixed day instead of publishing older ones, and
    # a category without images on the newest day still gets the window a first run gave it
    store = index_store(settings)
    days = [
        d
        for category in model_categories(settings, settings.model_version)  # of every build group
        for d, _ in _day_keys(store, settings.model_version, category, dt.date.min, dt.date.max)
    ]
    date_to = max([run_date, *days])
    windows = {
        category: (date_to - dt.timedelta(days=settings.index.window_days - 1), date_to) for category in categories
    }
    if not windows:
        return []
    horizon = dt.timedelta(days=max(settings.index.long_tail_days, settings.index.window_days) - 1)
    vectors = warehouse.query(
        "select_window_vectors",
        date_from=min(t for _, t in windows.values()) - horizon,
        date_to=max(t for _, t in windows.values()),
        model_version=settings.model_version,
        categories=sorted(windows),
    )
    delisted = set(warehouse.query("select_delisted")["image_id"])
    results, rows, failures, pointers = [], [], [], {}
    for category, (date_from, date_to) in windows.items():
        listed = vectors[vectors["category"] == category]
        # the pointer as it is before this run: publishing swaps it only if nobody has since
        pointers[category] = read_current(store, settings.model_version, category)
        built = _build_window(
            settings, store, category, date_from, date_to, listed, run_id, pointers[category], delisted
        )
        if built is None:
            continue
        result, row, problem = built
        results.append(result)
        rows.append(row)
        if problem:
            failures.append(f"{category}: {problem}")
    registry = pd.DataFrame(rows)
    warehouse.run(
        "register_window_index",
        rows=registry,
        names={"columns": list(registry.columns)},
        model_version=settings.model_version,
    )
    for result in results:
        if result["status"] == "published":
            category = result["category"]
            write_current(store, settings.model_version, category, result["version"], pointers[category])
    statuses = [{"category": r["category"], "path": r["path"], "status": r["status"]} for r in results]
    for category in windows:
        statuses += [
            {"category": category, "path": str(path), "status": "deleted"}
            for path in prune_versions(settings, store, category)
        ]
    warehouse.run("set_index_status", rows=pd.DataFrame(statuses), model_version=settings.model_version)
    log.info("window indexes of %s: %s", run_date, results)
    if failures:
        raise IndexGateError(
            f"window indexes of {run_date} not published (the previous ones keep serving): " + "; ".join(failures)
        )
    return results


def _build_window(
    settings,
    store: IndexStore,
    category: str,
    date_from: dt.date,
    date_to: dt.date,
    vectors: pd.DataFrame,
    run_id: str,
    published: Pointer | None,
    delisted: set[str],
):
    """Merges, evaluates and writes one category's window version: (result, registry row, gate problem).
    Delisted images leave the merged index physically (the day indexes keep them: they are immutable)."""
    import faiss

    built = merge_days(store, settings.model_version, category, date_from, date_to)
    if built is None:
        return None
    index, ids, counts = built
    dropped = ids[ids["image_id"].isin(delisted)]
    if len(dropped):
        index.remove_ids(faiss.IDSelectorBatch(dropped["id"].to_numpy(dtype=np.int64)))
        ids = ids[~ids["image_id"].isin(delisted)]
    counts["delisted_removed"] = int(dropped["image_id"].nunique())
    listed_on = pd.to_datetime(vectors["listed_date"]).dt.date
    in_window = vectors[(listed_on >= date_from) & (listed_on <= date_to)]
    tail_from = date_to - dt.timedelta(days=settings.index.long_tail_days - 1)
    tail = long_tail(
        in_window, vectors[(listed_on >= tail_from) & (listed_on < date_from)], settings.index.long_tail_similarity
    )
    if len(tail):
        tail_ids = np.array([stable_id(i) for i in tail["image_id"]], dtype=np.int64)
        index.add_with_ids(np.ascontiguousarray(np.stack(tail["embedding"].to_numpy()).astype(np.float32)), tail_ids)
        ids = pd.concat(
            [ids, pd.DataFrame({"id": tail_ids, "image_id": tail["image_id"].to_numpy()})], ignore_index=True
        )
    counts["long_tail_kept"] = len(tail)
    counts["long_tail_from"] = tail_from.isoformat()
    previous = None  # the published version's evaluation, which the gate compares with
    if published:
        previous = store.manifest(window_key(settings.model_version, category, published.payload["version"]))
    ids = window_metadata(ids, pd.concat([in_window, tail]))
    removed = hashlib.sha1(",".join(sorted(dropped["image_id"].unique())).encode()).hexdigest()
    version = version_name(
        date_to,
        counts.pop("content_key")
        + "|tail:"
        + ",".join(sorted(tail["image_id"]))
        + f"|delisted:{removed}|metadata:{METADATA_FORMAT}",
    )
    if published and published.payload["version"] == version:
        previous = None  # an unchanged rerun is not compared with itself
    # the smallest nprobe that meets the gate (autofaiss's way), not a fixed one: the gate then
    # blocks only a window no nprobe up to every list can make good (a broken index or model)
    previous_recall = (previous or {}).get("recall_at_10")
    target = max(settings.index.min_recall, (previous_recall or 0.0) - settings.index.max_recall_drop)
    quality = evaluate(
        index,
        pd.concat([in_window, tail]),
        nprobe_ladder(index, settings.index.nprobe),
        settings.index.eval_queries,
        target,
    )
    key = window_key(settings.model_version, category, version)
    manifest = store.manifest(key)
    if manifest is None:  # a version is immutable: the same content is written once
        manifest = store.write_version(
            key,
            {"index.faiss": index_bytes(index), "ids.parquet": ids_bytes(ids)},
            {
                "model_version": settings.model_version,
                "category": category,
                "kind": "window",
                "version": version,
                "date_from": date_from.isoformat(),
                "date_to": date_to.isoformat(),
                "window_days": settings.index.window_days,
                "vector_count": int(index.ntotal),
                "run_id": run_id,
                **counts,
                **quality,
            },
        )
    problem = gate_problem(quality, previous, settings)
    row = {
        "model_version": settings.model_version,
        "category": category,
        "kind": "window",
        "date_from": date_from,
        "date_to": date_to,
        "vector_count": manifest["vector_count"],
        "index_type": type(index).__name__,
        "path": store.uri(key),
        "file_md5": manifest["files"]["index.faiss"],
        "status": "candidate",
        "run_id": run_id,
        "created_at": pd.Timestamp.now(tz="UTC"),
        "recall_at_10": quality["recall_at_10"],
        "precision_at_10": quality["precision_at_10"],
        "gate_problem": problem,
    }
    result = {
        "category": category,
        "version": version,
        "path": store.uri(key),
        "status": "blocked" if problem else "published",
        **quality,
        "vector_count": manifest["vector_count"],
        "days_merged": counts["days_merged"],
        "days_added": counts["days_added"],
        "long_tail_kept": counts["long_tail_kept"],
        "delisted_removed": counts["delisted_removed"],
    }
    return result, row, problem


def prune_versions(settings, store: IndexStore, category: str) -> list[str]:
    """Deletes window versions beyond the newest `index_keep_versions` (by name, i.e. by end date),
    never the published one; returns the deleted versions' URIs."""
    current = read_current(store, settings.model_version, category)
    versions = sorted(
        (v for v in store.children(f"{category_key(settings.model_version, category)}/window") if v.startswith("v-")),
        reverse=True,
    )
    deleted = [v for v in versions[settings.index.keep_versions :] if not current or v != current.payload["version"]]
    for version in deleted:
        store.remove(window_key(settings.model_version, category, version))
    return [store.uri(window_key(settings.model_version, category, v)) for v in deleted]


def gate_problem(quality: dict, previous: dict | None, settings) -> str | None:
    """Why a window version must not publish (None: it may): recall@10 against exact search or
    same-category precision@10 below its floor, or dropped from the `previous` (published) version's
    by more than allowed."""
    problems = []
    for metric, name, floor, drop in (
        ("recall_at_10", "recall@10", settings.index.min_recall, settings.index.max_recall_drop),
        (
            "precision_at_10",
            "same-category precision@10",
            settings.index.min_precision,
            settings.index.max_precision_drop,
        ),
    ):
        value, before = quality.get(metric), (previous or {}).get(metric)
        if value is None:
            continue
        if value < floor:
            problems.append(f"{name} {value:.4f} below the minimum {floor}")
        elif before is not None and value < before - drop:
            problems.append(f"{name} {value:.4f} dropped more than {drop} from the published {before:.4f}")
    return "; ".join(problems) or None


def rollback(settings, warehouse, category: str) -> str:
    """Switches CURRENT back to the version published before the current one; returns its name."""
    registry = warehouse.table("index_registry")
    windows = registry[
        (registry["kind"] == "window")
        & (registry["model_version"] == settings.model_version)
        & (registry["category"] == category)
        & registry["published_at"].notna()
        & (registry["status"] != "deleted")
    ]
    store = index_store(settings)
    current = read_current(store, settings.model_version, category)
    if current is None:
        raise IndexIntegrityError(f"{settings.model_version}/{category} has no published index to roll back")
    version_of = windows["path"].map(lambda uri: uri.rstrip("/").rsplit("/", 1)[-1])
    is_current = version_of == current.payload["version"]
    if not is_current.any():
        raise IndexIntegrityError(
            f"{settings.model_version}/{category}: CURRENT {current.payload['version']} not in the registry"
        )
    earlier = windows[windows["published_at"] < windows.loc[is_current, "published_at"].iloc[0]]
    earlier = earlier.sort_values("published_at")
    if earlier.empty:
        raise IndexIntegrityError(f"{settings.model_version}/{category}: no earlier published version")
    target = earlier.iloc[-1]["path"]
    target_version = target.rstrip("/").rsplit("/", 1)[-1]
    load_version(store, window_key(settings.model_version, category, target_version))  # refuses a damaged version
    write_current(store, settings.model_version, category, target_version, expected=current)
    warehouse.run(
        "set_index_status",
        rows=pd.DataFrame([{"category": category, "path": target, "status": "published"}]),
        model_version=settings.model_version,
    )
    log.info(
        "%s/%s rolled back from %s to %s", settings.model_version, category, current.payload["version"], target_version
    )
    return target_version
