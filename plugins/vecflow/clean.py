"""Clean stage: validate vectors, remove exact and near duplicates, write vectors_clean (all SQL files)."""

from __future__ import annotations

import datetime as dt

MIN_NORM = 0.5  # vectors are L2-normalised; far from 1 means a broken model or a zero vector
MAX_NORM = 1.5


def dhash_bands(max_hamming: int) -> int:
    """LSH bands of the 64-bit dHash for near dedup: each differing bit spoils at most one band, so
    two hashes within max_hamming bits agree on at least 2 of max_hamming + 2 bands, and joining on
    every pair of bands finds every such pair of hashes. A pair of bands is a key of ~25 bits (for
    max_hamming 3), so buckets stay near empty and the join grows with the rows, not with their
    square (max_hamming + 1 single 16-bit bands put ~15 hashes in a bucket at 1M rows)."""
    return max_hamming + 2


def validate_and_keep(
    warehouse,
    run_date: dt.date,
    run_id: str,
    model_version: str,
    reject_stage: str,
    expected_dim: int,
    deduplicate=None,
) -> None:
    """validate.sql then vectors_clean.sql for the partition's latest run of `model_version`; rejects go
    to `reject_stage`. `deduplicate` runs between them (the daily run's dedup; a reindex keeps the
    serving model's dedup_map, since duplicates are found from content, not from the model)."""
    warehouse.run(
        "validate",
        run_date=run_date,
        run_id=run_id,
        model_version=model_version,
        reject_stage=reject_stage,
        expected_dim=expected_dim,
        min_norm=MIN_NORM,
        max_norm=MAX_NORM,
    )
    if deduplicate:
        deduplicate()
    warehouse.run(
        "vectors_clean", run_date=run_date, run_id=run_id, model_version=model_version, reject_stage=reject_stage
    )


def clean_partition(settings, warehouse, run_date: dt.date, run_id: str) -> dict:
    """Runs the clean stage's SQL for one partition; returns what it kept and dropped. A vector whose
    length is not the serving model card's embedding_dim is a wrong_dim reject naming both."""
    from vecflow.embed import card_embedding_dim

    model_version = settings.model_version
    expected_dim = card_embedding_dim(settings, model_version)

    def deduplicate() -> None:
        warehouse.run(
            "dedup_exact", run_date=run_date, run_id=run_id, model_version=model_version, reject_stage="validate"
        )
        warehouse.run(
            "dedup_near",
            run_date=run_date,
            run_id=run_id,
            model_version=model_version,
            reject_stage="validate",
            lookback_days=settings.clean.near_dup_lookback_days,
            max_hamming=settings.clean.near_dup_max_hamming,
            bands=dhash_bands(settings.clean.near_dup_max_hamming),
            band_bits=64 // dhash_bands(settings.clean.near_dup_max_hamming),
            min_edge_similarity=settings.clean.near_dup_min_edge_similarity,
        )

    validate_and_keep(warehouse, run_date, run_id, model_version, "validate", expected_dim, deduplicate)
    counts = warehouse.query("clean_counts", run_date=run_date, model_version=model_version).iloc[0]
    return {name: int(value) for name, value in counts.items()}
