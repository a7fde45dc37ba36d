"""Clean stage: validate vectors, remove exact and near duplicates, write vectors_clean (all SQL files)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecflow.near_duplicates import Pool, first_matches, quantize

MIN_NORM = 0.5  # vectors are L2-normalised; far from 1 means a broken model or a zero vector
MAX_NORM = 1.5


def near_duplicate_matches(warehouse, run_date: dt.date, model_version: str, clean_settings) -> pa.Table:
    """Each of today's images with a near duplicate and its first one (image_id, match_id), for
    dedup_near.sql: the fingerprints of select_near_dup_pool.sql compared by vecflow.near_duplicates.
    The pool is read batch by batch, each row written at its position in (listed_date, image_id)
    order (numbered by the warehouse) of one int8 matrix (near_duplicates.quantize): no sort here, no
    second copy."""
    pool = None
    for batch in warehouse.query_batches(
        "select_near_dup_pool",
        run_date=run_date,
        model_version=model_version,
        reject_stage="validate",
        lookback_days=clean_settings.near_dup_lookback_days,
    ):
        if not batch.num_rows:  # BigQuery may page an empty batch
            continue
        pool = pool or _PoolBuilder(int(batch.column("pool_rows")[0].as_py()))
        pool.add(batch, run_date)
    if pool is None:
        return pa.table({"image_id": pa.array([], pa.string()), "match_id": pa.array([], pa.string())})
    fingerprints, image_ids = pool.build()
    found = first_matches(
        fingerprints, clean_settings.near_dup_max_hamming, clean_settings.near_dup_min_edge_similarity
    )
    today = np.flatnonzero(found >= 0)
    return pa.table(
        {
            "image_id": image_ids.take(pa.array(today + fingerprints.first_today)),
            "match_id": image_ids.take(pa.array(found[today])),
        }
    )


class _PoolBuilder:
    """The near-dedup pool filled batch by batch at the rows' positions."""

    def __init__(self, rows: int):
        self.rows = rows
        self.edges: np.ndarray | None = None
        self.scales = np.zeros(rows, dtype=np.float32)
        self.dhashes = np.zeros(rows, dtype=np.uint64)
        self.images = np.zeros(rows, dtype=np.int64)
        self.earlier = 0
        self.ids: list[pa.Array] = []
        self.positions: list[np.ndarray] = []

    def add(self, batch: pa.RecordBatch, run_date: dt.date) -> None:
        # copies: a view of one column keeps the whole batch (its signatures) alive
        position = batch.column("position").to_numpy().copy()
        signatures = _unit_rows(batch.column("edge_signature"))
        if self.edges is None:
            self.edges = np.empty((self.rows, signatures.shape[1]), dtype=np.int8)
        _one_length({self.edges.shape[1], signatures.shape[1]})
        self.edges[position], self.scales[position] = quantize(signatures)
        self.dhashes[position] = batch.column("dhash").to_numpy().view(np.uint64)
        self.images[position] = batch.column("image_code").to_numpy()
        self.earlier += int(pc.sum(pc.less(batch.column("listed_date"), pa.scalar(run_date))).as_py() or 0)
        self.ids.append(batch.column("image_id").take(pa.array(np.arange(batch.num_rows))))
        self.positions.append(position)

    def build(self) -> tuple[Pool, pa.Array]:
        """The pool and its image_ids in order. Rows numbered without a signature (an image embedded
        before edge signatures existed) are left out."""
        arrival = np.full(self.rows, -1, dtype=np.int64)  # each position's row among the batches' rows
        arrival[np.concatenate(self.positions)] = np.arange(sum(len(p) for p in self.positions))
        edges, scales, dhashes, images = self.edges, self.scales, self.dhashes, self.images
        if (arrival < 0).any():
            keep = np.flatnonzero(arrival >= 0)
            edges, scales, dhashes, images, arrival = (
                edges[keep],
                scales[keep],
                dhashes[keep],
                images[keep],
                arrival[keep],
            )
        image_ids = pa.concat_arrays(self.ids).take(pa.array(arrival))
        return Pool(edges, dhashes, self.earlier, images, scales), image_ids


def _unit_rows(signatures: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The list column as an (n, d) float32 matrix of unit rows."""
    lengths = _one_length(pc.unique(pc.list_value_length(signatures)).to_pylist())
    chunks = signatures.chunks if isinstance(signatures, pa.ChunkedArray) else [signatures]
    dim = lengths[0] if lengths else 0
    matrix = np.concatenate(
        [chunk.flatten().to_numpy().astype(np.float32).reshape(-1, dim) for chunk in chunks]
        or [np.empty((0, dim), np.float32)]
    )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=matrix, where=norms > 0)


def _one_length(lengths) -> list[int]:
    """The signatures' one length (or none); several cannot be compared and are an error naming them."""
    lengths = sorted(lengths)
    if len(lengths) > 1:
        raise ValueError(
            f"edge signatures of lengths {lengths} in one near-dedup pool: the images were "
            "fingerprinted by different embedding jobs; reindex the older partitions"
        )
    return lengths


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
        matches = near_duplicate_matches(warehouse, run_date, model_version, settings.clean)
        warehouse.run(
            "dedup_near",
            rows=matches,
            run_date=run_date,
            run_id=run_id,
            model_version=model_version,
            reject_stage="validate",
        )

    validate_and_keep(warehouse, run_date, run_id, model_version, "validate", expected_dim, deduplicate)
    counts = warehouse.query("clean_counts", run_date=run_date, model_version=model_version).iloc[0]
    return {name: int(value) for name, value in counts.items()}
