"""Window index per category: the last N day indexes merged, evaluated, and published atomically.

Files under index/<model_version>/<category>/:
  window/v-<date>-<content>/{index.faiss, ids.parquet, manifest.json}   a version
  CURRENT                                                          JSON naming the published version
Day indexes built on the category's trained IVF are merged with merge_from (no retraining, no
re-adding); exact day indexes from before the IVF was trained are added from their stored vectors.
Expiry: days older than the window leave it, except their long-tail items: those up to
`index_long_tail_days` old whose nearest neighbour in the window has cosine below
`index_long_tail_similarity` (nothing like them is listed any more, so they stay searchable; seed
001 5.4). A version is published only when its recall@10 against exact search reaches the configured
minimum and has not dropped beyond the tolerance from the published one; publishing (and rollback)
rewrites CURRENT through a temporary file and a rename, so a reader sees one version or the other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vecflow.index.build import IndexIntegrityError, file_md5, load_trained, stable_id, verify_files, write_atomically
from vecflow.index.pointers import write_json_atomically

log = logging.getLogger(__name__)
K = 10


class IndexGateError(RuntimeError):
    """A window index failed its evaluation gate and was not published."""


def category_dir(index_dir: Path, model_version: str, category: str) -> Path:
    return index_dir / model_version / category


def model_categories(index_dir: Path, model_version: str) -> list[str]:
    """The categories a model has indexes for (a directory each)."""
    base = index_dir / model_version
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def read_current(index_dir: Path, model_version: str, category: str) -> dict | None:
    path = category_dir(index_dir, model_version, category) / "CURRENT"
    return json.loads(path.read_text()) if path.exists() else None


def write_current(index_dir: Path, model_version: str, category: str, version: str) -> None:
    write_json_atomically(
        category_dir(index_dir, model_version, category) / "CURRENT",
        {"version": version, "switched_at": pd.Timestamp.now(tz="UTC").isoformat()},
    )


def load_version(directory: Path):
    """(index, ids frame, manifest) of a version directory, after checking every file's md5."""
    import faiss

    manifest = json.loads((directory / "manifest.json").read_text())
    verify_files(directory, manifest)
    return faiss.read_index(str(directory / "index.faiss")), pd.read_parquet(directory / "ids.parquet"), manifest


def load_published(index_dir: Path, model_version: str, category: str):
    """The published window index of a category, md5-checked: (index, ids, manifest)."""
    current = read_current(index_dir, model_version, category)
    if current is None:
        raise FileNotFoundError(f"no published index for {model_version}/{category} under {index_dir}")
    return load_version(category_dir(index_dir, model_version, category) / "window" / current["version"])


def _day_dirs(index_dir: Path, model_version: str, category: str, date_from: dt.date, date_to: dt.date):
    base = category_dir(index_dir, model_version, category)
    for path in sorted(base.glob("day=*")):
        day = dt.date.fromisoformat(path.name.removeprefix("day="))
        if date_from <= day <= date_to:
            yield day, path


def merge_days(index_dir: Path, model_version: str, category: str, date_from: dt.date, date_to: dt.date):
    """The window's index and id map from its day indexes; counts of days merged and added."""
    import faiss

    trained, trained_md5 = load_trained(index_dir, model_version, category)
    window = faiss.clone_index(trained) if trained is not None else None
    exact_vectors, exact_ids, id_frames, sources, contents = [], [], [], [], [str(trained_md5)]
    merged = added = 0
    for day, path in _day_dirs(index_dir, model_version, category, date_from, date_to):
        index, ids, manifest = load_version(path)
        id_frames.append(ids)
        sources.append(day.isoformat())
        contents.append(f"{day}:{manifest['files']['index.faiss']}:{manifest['files']['ids.parquet']}")
        if window is not None and manifest.get("trained_md5") == trained_md5:
            window.merge_from(index, 0)
            merged += 1
        else:  # an exact day index from before the IVF was trained
            exact_vectors.append(
                index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), dtype=np.float32)
            )
            exact_ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
            added += 1
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


def evaluate(index, vectors: pd.DataFrame, nprobe: int, queries: int) -> dict:
    """recall@10 of the index against exact search, and same-category precision@10 (the catalog's
    label) of its results, on up to `queries` vectors of the window drawn evenly."""
    import faiss

    if index.ntotal == 0 or vectors.empty:
        return {"recall_at_10": None, "precision_at_10": None, "queries": 0}
    matrix = np.ascontiguousarray(np.stack(vectors["embedding"].to_numpy()).astype(np.float32))
    ids = np.array([stable_id(i) for i in vectors["image_id"]], dtype=np.int64)
    labels = dict(zip(ids, vectors["catalog_category"]))
    picks = np.unique(np.linspace(0, len(matrix) - 1, min(queries, len(matrix))).astype(int))
    k = min(K, len(matrix))
    exact = faiss.IndexFlatIP(matrix.shape[1])
    exact.add(matrix)
    _, exact_rows = exact.search(matrix[picks], k)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe
    _, found = index.search(matrix[picks], k)
    recall = np.mean([len(set(ids[e]) & set(f)) / k for e, f in zip(exact_rows, found)])
    precision = np.mean(
        [np.mean([labels.get(i) == labels[ids[q]] for i in f if i != -1]) for q, f in zip(picks, found)]
    )
    return {
        "recall_at_10": round(float(recall), 4),
        "precision_at_10": round(float(precision), 4),
        "queries": int(len(picks)),
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


def version_name(date_to: dt.date, content_key: str) -> str:
    """Named by content (the day indexes merged and the trained IVF): a rerun that changes nothing
    gives the same version, a fixed day gives a new one."""
    return f"v-{date_to:%Y%m%d}-{hashlib.sha1(content_key.encode()).hexdigest()[:10]}"


def build_and_publish(settings, warehouse, run_date: dt.date, run_id: str, categories: list[str]) -> list[dict]:
    """For each category: merge the window of the last N days (ending at the newest partition),
    evaluate it, register it, publish it if the gate passes. Raises IndexGateError naming every
    category that failed, after the others are published."""
    # every window ends at the newest partition with a day index (of any category), so rerunning an
    # old date re-merges the current windows with the fixed day instead of publishing older ones, and
    # a category without images on the newest day still gets the window a first run gave it
    days = [
        d
        for category in categories
        for d, _ in _day_dirs(settings.paths.index_dir, settings.model_version, category, dt.date.min, dt.date.max)
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
    )
    results, rows, failures = [], [], []
    for category, (date_from, date_to) in windows.items():
        listed = vectors[vectors["category"] == category]
        built = _build_window(settings, category, date_from, date_to, listed, run_id)
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
            write_current(settings.paths.index_dir, settings.model_version, result["category"], result["version"])
    statuses = [{"category": r["category"], "path": r["path"], "status": r["status"]} for r in results]
    for category in windows:
        statuses += [
            {"category": category, "path": str(path), "status": "deleted"}
            for path in prune_versions(settings, category)
        ]
    warehouse.run("set_index_status", rows=pd.DataFrame(statuses), model_version=settings.model_version)
    log.info("window indexes of %s: %s", run_date, results)
    if failures:
        raise IndexGateError(
            f"window indexes of {run_date} not published (the previous ones keep serving): " + "; ".join(failures)
        )
    return results


def _build_window(settings, category: str, date_from: dt.date, date_to: dt.date, vectors: pd.DataFrame, run_id: str):
    """Merges, evaluates and writes one category's window version: (result, registry row, gate problem)."""
    import faiss

    built = merge_days(settings.paths.index_dir, settings.model_version, category, date_from, date_to)
    if built is None:
        return None
    index, ids, counts = built
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
    quality = evaluate(index, pd.concat([in_window, tail]), settings.index.nprobe, settings.index.eval_queries)
    version = version_name(date_to, counts.pop("content_key") + "|tail:" + ",".join(sorted(tail["image_id"])))
    final_dir = category_dir(settings.paths.index_dir, settings.model_version, category) / "window" / version

    def write(directory: Path) -> None:
        faiss.write_index(index, str(directory / "index.faiss"))
        ids.to_parquet(directory / "ids.parquet", index=False)
        manifest = {
            "model_version": settings.model_version,
            "category": category,
            "kind": "window",
            "version": version,
            "date_from": date_from.isoformat(),
            "date_to": date_to.isoformat(),
            "window_days": settings.index.window_days,
            "vector_count": int(index.ntotal),
            "nprobe": settings.index.nprobe,
            "run_id": run_id,
            **counts,
            **quality,
            "files": {n: file_md5(directory / n) for n in ("index.faiss", "ids.parquet")},
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))

    write_atomically(final_dir, write)
    manifest = json.loads((final_dir / "manifest.json").read_text())
    published = read_current(settings.paths.index_dir, settings.model_version, category)
    previous_recall = None
    if published and published["version"] != version:
        previous = final_dir.parent / published["version"] / "manifest.json"
        previous_recall = json.loads(previous.read_text()).get("recall_at_10") if previous.exists() else None
    problem = gate_problem(quality["recall_at_10"], previous_recall, settings)
    row = {
        "model_version": settings.model_version,
        "category": category,
        "kind": "window",
        "date_from": date_from,
        "date_to": date_to,
        "vector_count": manifest["vector_count"],
        "index_type": type(index).__name__,
        "path": str(final_dir),
        "file_md5": manifest["files"]["index.faiss"],
        "status": "candidate",
        "run_id": run_id,
        "created_at": pd.Timestamp.now(tz="UTC"),
        "recall_at_10": quality["recall_at_10"],
        "precision_at_10": quality["precision_at_10"],
    }
    result = {
        "category": category,
        "version": version,
        "path": str(final_dir),
        "status": "blocked" if problem else "published",
        **quality,
        "vector_count": manifest["vector_count"],
        "days_merged": counts["days_merged"],
        "days_added": counts["days_added"],
        "long_tail_kept": counts["long_tail_kept"],
    }
    return result, row, problem


def prune_versions(settings, category: str) -> list[Path]:
    """Deletes window versions beyond the newest `index_keep_versions` (by name, i.e. by end date),
    never the published one; returns the deleted paths."""
    import shutil

    base = category_dir(settings.paths.index_dir, settings.model_version, category)
    current = (read_current(settings.paths.index_dir, settings.model_version, category) or {}).get("version")
    versions = sorted((p for p in (base / "window").glob("v-*") if p.is_dir()), key=lambda p: p.name, reverse=True)
    deleted = [p for p in versions[settings.index.keep_versions :] if p.name != current]
    for path in deleted:
        shutil.rmtree(path)
    return deleted


def gate_problem(recall: float | None, previous_recall: float | None, settings) -> str | None:
    if recall is None:
        return None
    if recall < settings.index.min_recall:
        return f"recall@10 {recall:.4f} below the minimum {settings.index.min_recall}"
    if previous_recall is not None and recall < previous_recall - settings.index.max_recall_drop:
        return (
            f"recall@10 {recall:.4f} dropped more than {settings.index.max_recall_drop} from the "
            f"published {previous_recall:.4f}"
        )
    return None


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
    current = read_current(settings.paths.index_dir, settings.model_version, category)
    if current is None:
        raise IndexIntegrityError(f"{settings.model_version}/{category} has no published index to roll back")
    is_current = windows["path"].map(lambda p: Path(p).name) == current["version"]
    if not is_current.any():
        raise IndexIntegrityError(
            f"{settings.model_version}/{category}: CURRENT {current['version']} not in the registry"
        )
    earlier = windows[windows["published_at"] < windows.loc[is_current, "published_at"].iloc[0]]
    earlier = earlier.sort_values("published_at")
    if earlier.empty:
        raise IndexIntegrityError(f"{settings.model_version}/{category}: no earlier published version")
    target = Path(earlier.iloc[-1]["path"])
    load_version(target)  # refuses a damaged version before switching to it
    write_current(settings.paths.index_dir, settings.model_version, category, target.name)
    warehouse.run(
        "set_index_status",
        rows=pd.DataFrame([{"category": category, "path": str(target), "status": "published"}]),
        model_version=settings.model_version,
    )
    log.info("%s/%s rolled back from %s to %s", settings.model_version, category, current["version"], target.name)
    return target.name
