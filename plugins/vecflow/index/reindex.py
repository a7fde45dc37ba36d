"""Model change (seed 001 2.2.2): re-embed every partition the serving model covers with a new
model, build the new model's day and window indexes beside the old ones, and switch the serving
model only when the new indexes pass their gate. Until then the old model keeps serving searches
and the daily run keeps embedding with it.

Side by side: a reindex run appends the new model's vectors to vector_log under its own run_id
(the latest-run view is kept per model), writes its rejects under the stages 'reindex_embed' and
'reindex_validate', and writes vectors_clean rows with the new model_version. Duplicates are found
from image content, not from the model, so it re-embeds only the serving model's canonical images
and keeps dedup_map as it is. Indexes go under index/<new model>/; index/SERVING names the serving
model and is switched atomically last.
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

log = logging.getLogger(__name__)
FIRST_DATE, LAST_DATE = dt.date(1, 1, 1), dt.date(9999, 12, 31)


class ReindexError(RuntimeError):
    """The reindex cannot go on: nothing to reindex, or a partition's counts do not balance."""


class ModelSwitchError(RuntimeError):
    """The new model's indexes do not meet the switch gate; the serving model stays."""


def plan_reindex(
    settings,
    warehouse,
    model_version: str,
    run_id: str,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    max_shards: int = 1024,
) -> list[dict]:
    """Shards of every partition in the range that the serving model covers, to embed with
    `model_version`; at most `max_shards` in all (the shard size grows to fit)."""
    from vecflow.catalog import MANIFEST_COLUMNS
    from vecflow.embed import model_card
    from vecflow.embed.plan import write_shards
    from vecflow.embed.staging import staging

    if model_version == settings.model_version:
        raise ReindexError(f"{model_version} is already the serving model")
    model_card(settings, model_version)
    images = warehouse.query(
        "select_reindex_images",
        serving_model_version=settings.model_version,
        date_from=date_from or FIRST_DATE,
        date_to=date_to or LAST_DATE,
    )
    if images.empty:
        raise ReindexError(
            f"no partition of {settings.model_version} between {date_from or 'the first'} and "
            f"{date_to or 'the last'} date: nothing to reindex"
        )
    images["listed_date"] = pd.to_datetime(images["listed_date"]).dt.date
    partitions = images.groupby("listed_date")
    if partitions.ngroups > max_shards:
        raise ReindexError(
            f"{partitions.ngroups} partitions need more than core.max_map_length={max_shards} "
            "shards: reindex in date ranges (date_from, date_to)"
        )
    size = settings.embed.shard_size
    while sum(-(-len(g) // size) for _, g in partitions) > max_shards:
        size *= 2
    shards = [
        shard
        for day, group in partitions
        for shard in write_shards(
            staging(settings), group[MANIFEST_COLUMNS].reset_index(drop=True), day, run_id, size, model_version
        )
    ]
    log.info(
        "reindex with %s: %d images in %d partitions (%s to %s), %d shards of up to %d",
        model_version,
        len(images),
        partitions.ngroups,
        min(partitions.groups),
        max(partitions.groups),
        len(shards),
        size,
    )
    return shards


def load_and_clean(settings, warehouse, model_version: str, run_id: str, shards: list[dict]) -> dict:
    """Loads the new model's shard outputs per partition, validates them against its card's
    dimension, writes its vectors_clean rows, and checks that every planned image is either kept
    or rejected with a reason."""
    from vecflow.clean import validate_and_keep
    from vecflow.embed import card_embedding_dim
    from vecflow.embed.load import load_shards
    from vecflow.embed.staging import staging
    from vecflow.tagging import category_resolver

    dim = card_embedding_dim(settings, model_version)
    categorise = category_resolver(settings, warehouse, model_version)  # the new model's head, if any
    by_date: dict[str, list[dict]] = {}
    for shard in shards:
        by_date.setdefault(shard["run_date"], []).append(shard)
    for day, group in sorted(by_date.items()):
        run_date = dt.date.fromisoformat(day)
        load_shards(staging(settings), warehouse, run_date, run_id, group, categorise, reject_stage="reindex_embed")
        validate_and_keep(warehouse, run_date, run_id, model_version, "reindex_validate", dim)
    counts = warehouse.query("reindex_counts", run_id=run_id, model_version=model_version)
    counts["listed_date"] = pd.to_datetime(counts["listed_date"]).dt.date.astype(str)
    measured = counts.pivot_table(index="listed_date", columns="measure", values="n", aggfunc="sum").fillna(0)
    problems, totals = [], {"planned": 0, "embedded": 0, "reindex_embed": 0, "reindex_validate": 0, "clean": 0}
    for day, group in sorted(by_date.items()):
        row = {
            m: int(measured.loc[day, m]) if day in measured.index and m in measured.columns else 0
            for m in ("embedded", "reindex_embed", "reindex_validate", "clean")
        }
        row["planned"] = sum(s["images"] for s in group)
        for key, value in row.items():
            totals[key] += value
        if (
            row["planned"] != row["embedded"] + row["reindex_embed"]
            or row["embedded"] != row["clean"] + row["reindex_validate"]
        ):
            problems.append(
                f"{day}: planned {row['planned']}, embedded {row['embedded']}, rejected on load "
                f"{row['reindex_embed']}, rejected by validate {row['reindex_validate']}, kept {row['clean']}"
            )
    if problems:
        raise ReindexError("reindex lost or invented rows:\n  " + "\n  ".join(problems))
    log.info("reindex with %s: %s", model_version, totals)
    return {"partitions": len(by_date), **totals}


def build_indexes(settings, warehouse, model_version: str, run_id: str, dates: list[dt.date]) -> list[dict]:
    """The new model's day indexes, oldest partition first (its IVF is trained where the daily run
    would have trained it), then each category's window index through the evaluation gate; the
    window's CURRENT is the new model's own, nothing is served from it before the switch.
    Raises IndexGateError when a category fails."""
    from vecflow.index.build import build_day_indexes
    from vecflow.index.window import build_and_publish, model_categories

    new = settings.with_model(model_version)
    for run_date in sorted(dates):
        for group in range(settings.index.build_groups):  # one task builds every group here
            build_day_indexes(new, warehouse, run_date, run_id, group)
    return build_and_publish(new, warehouse, max(dates), run_id, model_categories(new, model_version))


def switch_problems(settings, warehouse, model_version: str) -> list[str]:
    """Why `model_version` may not become the serving model (empty when it may): it must cover every
    partition and every category the serving model does, with a published window index whose
    same-category precision@10 is no more than VECFLOW_REINDEX_MAX_PRECISION_DROP below the served one,
    and, where both have a category head, agree with the images' categories as well (head_agreement_problems)."""
    serving = settings.model_version
    problems = []
    partitions = warehouse.query("select_model_partitions", model_versions=[serving, model_version])
    dates = {m: set(pd.to_datetime(g["listed_date"]).dt.date) for m, g in partitions.groupby("model_version")}
    missing = sorted(dates.get(serving, set()) - dates.get(model_version, set()))
    if missing:
        problems.append(
            f"{len(missing)} partition(s) without {model_version} vectors ({missing[0]} .. {missing[-1]}): "
            "reindex them (date_from/date_to) first"
        )
    registry = warehouse.table("index_registry")
    published = registry[(registry["kind"] == "window") & (registry["status"] == "published")]
    served = published[published["model_version"] == serving].set_index("category")
    candidate = published[published["model_version"] == model_version].set_index("category")
    if candidate.empty:  # also when nothing is served yet: a model with no index serves nothing
        problems.append(f"{model_version} has no published window index (reindex with it first)")
    for category, old in served.iterrows():
        if category not in candidate.index:
            problems.append(f"{category}: no published {model_version} window index")
            continue
        new_precision, old_precision = candidate.loc[category, "precision_at_10"], old["precision_at_10"]
        if pd.notna(old_precision) and (
            pd.isna(new_precision) or new_precision < old_precision - settings.index.reindex_max_precision_drop
        ):
            problems.append(
                f"{category}: precision@10 {new_precision:.4f} of {model_version} is more than "
                f"{settings.index.reindex_max_precision_drop} below {old_precision:.4f} of {serving}"
            )
    problems += head_agreement_problems(settings, warehouse, serving, model_version)
    return problems


def head_agreement_problems(settings, warehouse, serving: str, model_version: str) -> list[str]:
    """When both models have a category head: the new model's agreement with the images' categories
    may not fall more than VECFLOW_REINDEX_MAX_PRECISION_DROP below the serving model's."""
    counts = warehouse.query("select_model_agreement", model_versions=[serving, model_version])
    counts = counts[counts["with_head"] > 0].set_index("model_version")
    if not {serving, model_version} <= set(counts.index):
        return []
    old, new = (float(counts.loc[m, "agreeing"]) / float(counts.loc[m, "with_head"]) for m in (serving, model_version))
    if new < old - settings.index.reindex_max_precision_drop:
        return [
            f"category agreement of {model_version}'s head with the images' categories {new:.4f} is more than "
            f"{settings.index.reindex_max_precision_drop} below {old:.4f} of {serving}"
        ]
    return []


def switch_model(settings, warehouse, model_version: str, run_id: str) -> dict:
    """Makes `model_version` the serving model (SERVING in the index store, swapped with a precondition) if it passes
    `switch_problems`; raises ModelSwitchError naming every problem otherwise."""
    problems = switch_problems(settings, warehouse, model_version)
    if problems:
        raise ModelSwitchError(
            f"{model_version} does not replace {settings.model_version} (it keeps serving):\n  " + "\n  ".join(problems)
        )
    from vecflow.index.pointers import SERVING
    from vecflow.index.store import index_store

    store = index_store(settings)
    current = store.read_pointer(SERVING)  # the switch fails (PointerConflict) if another one lands first
    pointer = {
        "model_version": model_version,
        "previous_model_version": settings.model_version,
        "switched_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "run_id": run_id,
    }
    store.swap_pointer(SERVING, pointer, expected=current)
    log.info("serving model switched from %s to %s", settings.model_version, model_version)
    return pointer
