"""Warehouse benchmark: the clean stage (vecflow.clean.clean_partition: validate.sql, dedup_exact.sql,
near dedup, vectors_clean.sql on DuckDB, 2 cores) on a day of 100k, 1M and 3M staged rows with 256-d
vectors, with 90 earlier partitions holding as many rows again, already cleaned (near dedup's
lookback); seconds per step (near_duplicate_matches includes its select_near_dup_pool.sql and
first_matches), peak memory (overall and per step), rows/s at each size, the scaling ratios, and the
near duplicates' precision and recall on what was planted, printed beside the goals (reported, not
asserted). Fails (BenchmarkDidNothing) unless every planted exact duplicate is found, at least 90% of
the planted near duplicates the rule admits are found, and the clean rows are the day's rows less
the duplicates found. Each size runs in a process of its own, stopped when it passes --max-rss-gib
(12) or its timed run --max-minutes (15); a stopped size is reported as such. Writes
bench/results/warehouse.json.

Synthetic rows from real fingerprints: a day of the demo generator's catalog (FINGERPRINT_IMAGES
images, made once and cached in the system's temporary folder) is fingerprinted with the embedding
job's own functions (vecflow_model.imaging.decode, vecflow_model.measure); its distinct garments
(neither planted duplicates nor corrupt files) are the prototypes. A row is a random prototype: its
dHash with 0 or 1 bits flipped (so a 1M-row day shares each dHash among hundreds of rows; real
catalogs cluster too, if less) and its edge signature plus Gaussian noise of sigma sqrt(0.33/128) a
dimension, renormalised: two rows of one prototype are at cosine ~0.75, no two different rows near
the 0.96 threshold (the report's `data` has the measured nearest-neighbour medians: the prototypes'
and the synthetic rows'). Each partition plants 3% exact duplicates (a copy of an earlier original of
the day: same md5 and fingerprints) and 3% near duplicates: a copy of an earlier original (of the day
or, for a third of today's, of a lookback partition) at a (dHash Hamming distance, edge cosine) drawn
from those the generator's planted near duplicates have against their canonicals, measured in the
same catalog (that many bits flipped at random, the signature rotated to that cosine). A few drawn
pairs lie outside the rule (Hamming > max): recall is reported over all planted and over those the
rule admits. The 256-d embeddings are random unit vectors (the clean stage reads their norms and
checks only). Catalog ids and scalars are constant (one source, one analyses JSON).

Setup, before the clock starts: the earlier partitions are appended a few days at a time and
cleaned by clean_partition a day at a time, with a near-dedup lookback of --setup-lookback-days (0:
their planted duplicates are all within their day, so nothing is missed and the setup stays linear);
then clean_partition of today alone is timed, with the configured lookback (90 days).

The pandas baseline of earlier versions (it implemented the old banded dHash join) is gone: near
dedup is no longer a join, so there is no like-for-like naive version to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from bench_report import PeakMemory, RssTimeline, write_report  # noqa: E402  (bench/ is the script's directory)

from vecflow_model.contract import vector_checks  # noqa: E402

DAY = dt.date(2026, 3, 2)
DUP_RATE = 0.03  # exact duplicates, and as many near duplicates, of each partition's rows
LOOKBACK_SHARE = 1 / 3  # of today's near duplicates, those copying a row of an earlier partition
LOOKBACK_DAYS = 90
CHUNK = 250_000  # rows generated and appended at a time (a shard each)
CORES = 2
EDGE_DIM = 128
EDGE_NOISE = (0.33 / EDGE_DIM) ** 0.5  # per dimension, before renormalising: rows of a prototype at ~0.75
FINGERPRINT_IMAGES = 4000
FINGERPRINT_SEED = 11
# the rows' model: the shipped one, whose card's embedding_dim (256) the clean stage expects of them;
# the clean stage runs as that model (Settings.with_model)
MODEL = "garment-arcface-v1"
# what the job measures of a red, plain garment (the clean stage reads no analyses; the tagging step does)
ANALYSES = '{"colour":{"hue":0.0,"saturation":0.85,"value":0.78,"warmth":0.65}}'
GOALS = {"seconds_1m": 10, "ratio_3m_1m": 3.3, "peak_rss_gib": 4, "precision": 0.99, "recall": 0.97}

ORIGINAL, EXACT, NEAR = 0, 1, 2


class BenchmarkDidNothing(RuntimeError):
    """The timed stage did not do the work the benchmark planted (rows out, duplicates found)."""


# --- real fingerprints ---------------------------------------------------------------------------


def real_fingerprints(images: int = FINGERPRINT_IMAGES, seed: int = FINGERPRINT_SEED) -> dict:
    """The fingerprints of a generated catalog day's distinct garments (dhash uint64, edges (P, 128)
    float32, category) and, of its planted near duplicates, the (Hamming, cosine) each has against
    its canonical. Cached as an .npz in the system's temporary folder, keyed by generator version,
    seed and image count."""
    from vecflow.demo.catalog.generate import GENERATOR_VERSION

    cache = Path(tempfile.gettempdir()) / f"vecflow-bench-fingerprints-g{GENERATOR_VERSION}-s{seed}-n{images}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}

    from unittest import mock

    import pandas as pd
    import torch

    from vecflow.config import settings
    from vecflow.demo.runner import generate_catalog
    from vecflow.resources import DEFAULT_TREND_SPEC
    from vecflow_model.imaging import analysis_planes, decode
    from vecflow_model.measure import measure
    from vecflow_model.preprocess import SILHOUETTE

    home = Path(tempfile.mkdtemp(prefix="vecflow-bench-fingerprints-"))
    started = time.perf_counter()
    try:
        with mock.patch.dict(os.environ, {"VECFLOW_HOME": str(home)}):  # the caller's home restored after
            generate_catalog(
                argparse.Namespace(seed=seed, start_date=DAY, days=1, images_per_day=images, trends=DEFAULT_TREND_SPEC)
            )
            catalog = settings().paths.catalog_dir
        truth = pd.read_parquet(catalog / "truth" / "images.parquet")
        duplicates = pd.read_csv(catalog / "truth" / "duplicates.csv")
        corrupt = set(pd.read_csv(catalog / "truth" / "corrupt.csv")["image_id"])
        near = duplicates[duplicates["kind"] == "near"]
        originals = truth[~truth["image_id"].isin(set(duplicates["image_id"]) | corrupt)].sort_values("image_id")
        wanted = set(originals["image_id"]) | set(near["image_id"]) | set(near["canonical_image_id"])
        manifest = pd.read_parquet(catalog / f"listed_date={DAY.isoformat()}" / "manifest.parquet")
        dhash, edges = {}, {}
        for image_id, uri in zip(manifest["image_id"], manifest["uri"]):
            if image_id in wanted:
                planes = torch.from_numpy(analysis_planes(decode((catalog / uri).read_bytes()))[None])
                measured = measure(planes, SILHOUETTE)
                dhash[image_id] = measured.dhash[0] & (2**64 - 1)
                edges[image_id] = measured.edge_signature[0]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    ids = list(originals["image_id"])
    pair_hamming = [bin(dhash[a] ^ dhash[b]).count("1") for a, b in zip(near["image_id"], near["canonical_image_id"])]
    pair_cosine = [float(edges[a] @ edges[b]) for a, b in zip(near["image_id"], near["canonical_image_id"])]
    found = {
        "dhash": np.array([dhash[i] for i in ids], dtype=np.uint64),
        "edges": np.stack([edges[i] for i in ids]),
        "category": originals["category"].to_numpy().astype(str),
        "pair_hamming": np.array(pair_hamming, dtype=np.int64),
        "pair_cosine": np.array(pair_cosine, dtype=np.float64),
    }
    np.savez(cache, **found)
    print(
        f"fingerprints: {len(ids)} garments and {len(pair_hamming)} near-duplicate pairs of a {images}-image "
        f"catalog in {time.perf_counter() - started:.0f} s, cached in {cache}",
        flush=True,
    )
    return found


def fingerprint_stats(fp: dict, max_hamming: int, min_similarity: float, seed: int = 0) -> dict:
    """What the prototypes and the measured pairs look like, and the same nearest-neighbour cosine of
    synthetic rows (1,000 rows against 200,000 drawn from the prototypes)."""
    edges = fp["edges"]
    similarity = edges @ edges.T
    np.fill_diagonal(similarity, -np.inf)
    rng = np.random.default_rng(seed)
    rows = edges[rng.integers(len(edges), size=200_000)] + rng.standard_normal((200_000, EDGE_DIM), np.float32) * (
        np.float32(EDGE_NOISE)
    )
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    nearest = []
    for start in range(0, 1000, 100):  # 100 rows at a time: (100, 200,000) similarities
        block = rows[start : start + 100] @ rows.T
        block[np.arange(100), np.arange(start, start + 100)] = -np.inf
        nearest.append(block.max(axis=1))
    hamming, cosine = fp["pair_hamming"], fp["pair_cosine"]
    admitted = (hamming <= max_hamming) & (cosine >= min_similarity)
    return {
        "fingerprint_images": FINGERPRINT_IMAGES,
        "prototypes": len(edges),
        "prototype_distinct_dhashes": len(np.unique(fp["dhash"])),
        "prototype_nn_cosine_median": round(float(np.median(similarity.max(axis=1))), 3),
        "synthetic_nn_cosine_median": round(float(np.median(np.concatenate(nearest))), 3),
        "measured_near_pairs": len(hamming),
        "measured_pair_hamming_counts": {int(h): int((hamming == h).sum()) for h in np.unique(hamming)},
        "measured_pair_cosine_quantiles": {
            q: round(float(np.quantile(cosine, float(q))), 4) for q in ("0.0", "0.05", "0.5", "0.95", "1.0")
        },
        "measured_pairs_admitted_share": round(float(admitted.mean()), 4),
    }


# --- synthetic partitions ------------------------------------------------------------------------


def synthetic_plan(n: int, fp: dict, lookback_days: int = LOOKBACK_DAYS, seed: int = 0) -> dict:
    """Every row of the lookback partitions (as many rows as today's, spread over `lookback_days`
    days) and of today's, in listing order: its prototype, dHash, md5 (an int: the row whose bytes it
    has) and, for a duplicate, its kind, its source row and (near) the drawn edge cosine."""
    rng = np.random.default_rng(seed)
    lookback_rows = n if lookback_days else 0
    total = lookback_rows + n
    bounds = np.linspace(0, lookback_rows, lookback_days + 1).astype(np.int64)
    partitions = [
        (DAY - dt.timedelta(days=lookback_days - k), int(bounds[k]), int(bounds[k + 1])) for k in range(lookback_days)
    ]
    partitions.append((DAY, lookback_rows, total))
    prototypes = len(fp["dhash"])
    proto = rng.integers(prototypes, size=total).astype(np.int32)
    flip = np.where(rng.random(total) < 0.5, np.uint64(1) << rng.integers(64, size=total).astype(np.uint64), 0)
    dhash = fp["dhash"][proto] ^ flip.astype(np.uint64)
    md5_of = np.arange(total, dtype=np.int64)
    kind = np.zeros(total, dtype=np.int8)
    source = np.full(total, -1, dtype=np.int64)
    cosine = np.full(total, np.nan, dtype=np.float64)
    hamming = np.zeros(total, dtype=np.int64)
    for date, start, stop in partitions:
        size, k = stop - start, int((stop - start) * DUP_RATE)
        if k == 0:
            continue
        dups = start + 1 + rng.choice(size - 1, 2 * k, replace=False)  # the day's first row is an original
        exact, near = np.sort(dups[:k]), np.sort(dups[k:])
        kind[exact], kind[near] = EXACT, NEAR
        originals = np.flatnonzero(kind[start:stop] == ORIGINAL) + start

        def earlier(rows, originals=originals):
            """A random original listed before each row (of its own partition)."""
            before = np.searchsorted(originals, rows)
            return originals[(rng.random(len(rows)) * before).astype(np.int64)]

        source[exact] = earlier(exact)
        source[near] = earlier(near)
        if date == DAY and start > 0:
            lookback_originals = np.flatnonzero(kind[:start] == ORIGINAL)
            far = near[rng.random(len(near)) < LOOKBACK_SHARE]
            source[far] = lookback_originals[rng.integers(len(lookback_originals), size=len(far))]
        md5_of[exact], dhash[exact], proto[exact] = md5_of[source[exact]], dhash[source[exact]], proto[source[exact]]
        pair = rng.integers(len(fp["pair_hamming"]), size=len(near))
        hamming[near], cosine[near] = fp["pair_hamming"][pair], fp["pair_cosine"][pair]
        # flip that many distinct random bits of the source's dHash
        bits = np.argsort(rng.random((len(near), 64)), axis=1).astype(np.uint64)
        chosen = np.arange(64)[None, :] < hamming[near][:, None]
        masks = np.bitwise_or.reduce(np.where(chosen, np.uint64(1) << bits, np.uint64(0)), axis=1)
        dhash[near], proto[near] = dhash[source[near]] ^ masks, proto[source[near]]
    return {
        "n": n,
        "seed": seed,
        "partitions": partitions,
        "today": (lookback_rows, total),
        "proto": proto,
        "dhash": dhash.view(np.int64),
        "md5_of": md5_of,
        "kind": kind,
        "source": source,
        "cosine": cosine,
        "hamming": hamming,
        "achieved_cosine": {},  # today's near duplicates: filled as the rows are made
        "fingerprints": fp,
    }


def image_ids(plan: dict, rows: np.ndarray) -> list[str]:
    """The image_id of each (global) row: its partition's date and its place in the partition."""
    starts = np.array([start for _, start, _ in plan["partitions"]])
    prefixes = [f"{date:%Y%m%d}" for date, _, _ in plan["partitions"]]
    parts = np.searchsorted(starts, rows, side="right") - 1
    return [f"{prefixes[p]}-{i:08d}" for p, i in zip(parts.tolist(), (rows - starts[parts]).tolist())]


def synthetic_chunks(plan: dict):
    """Each partition's rows as (listed_date, Arrow table of up to CHUNK rows: one shard), lookback
    partitions first, so 3M rows of 256-d vectors are never in memory at once. A duplicate's source
    is always in an earlier or the same chunk; the edges of every source are kept until used."""
    import pyarrow as pa

    fp, rng = plan["fingerprints"], np.random.default_rng(plan["seed"] + 1)
    sources = np.unique(plan["source"][plan["source"] >= 0])
    saved = np.zeros((len(sources), EDGE_DIM), dtype=np.float32)
    md5_of, kind, source, cosine = plan["md5_of"], plan["kind"], plan["source"], plan["cosine"]

    def lists(matrix):
        flat = pa.array(matrix.astype(np.float64).ravel())
        return pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)), flat)

    for date, first, last in plan["partitions"]:
        for start in range(first, last, CHUNK):
            rows = np.arange(start, min(last, start + CHUNK))
            size = len(rows)
            edges = fp["edges"][plan["proto"][rows]] + rng.standard_normal((size, EDGE_DIM), np.float32) * np.float32(
                EDGE_NOISE
            )
            edges /= np.linalg.norm(edges, axis=1, keepdims=True)
            at = np.searchsorted(sources, rows).clip(max=max(len(sources) - 1, 0))
            is_source = (sources[at] == rows) if len(sources) else np.zeros(size, bool)
            saved[at[is_source]] = edges[is_source]
            exact = np.flatnonzero(kind[rows] == EXACT)
            edges[exact] = saved[np.searchsorted(sources, source[rows[exact]])]
            near = np.flatnonzero(kind[rows] == NEAR)
            if len(near):
                x = saved[np.searchsorted(sources, source[rows[near]])].astype(np.float64)
                c = cosine[rows[near]][:, None]
                u = rng.standard_normal(x.shape)
                u -= np.einsum("ij,ij->i", u, x)[:, None] * x
                u /= np.linalg.norm(u, axis=1, keepdims=True)
                rotated = (c * x + np.sqrt(1 - c**2) * u).astype(np.float32)
                edges[near] = rotated
                if date == DAY:
                    achieved = np.einsum("ij,ij->i", rotated.astype(np.float64), x)
                    plan["achieved_cosine"].update(zip(rows[near].tolist(), achieved.tolist()))
            vectors = rng.standard_normal((size, 256), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            norms, finite = vector_checks(vectors)
            categories = fp["category"][plan["proto"][rows]]
            yield (
                date,
                pa.table(
                    {
                        "image_id": image_ids(plan, rows),
                        "content_md5": [f"{m:032x}" for m in md5_of[rows].tolist()],
                        "dhash": plan["dhash"][rows],
                        "edge_signature": lists(edges),
                        "source": ["shop_a"] * size,
                        "listed_date": [date] * size,
                        "catalog_category": categories,
                        "category": categories,
                        "model_version": [MODEL] * size,
                        "dim": np.full(size, 256, dtype=np.int64),
                        "embedding": lists(vectors),
                        "embedding_norm": norms,
                        "embedding_finite": finite,
                        "analyses": [ANALYSES] * size,
                        "run_id": ["bench"] * size,
                        "shard_id": np.full(size, (start - first) // CHUNK, dtype=np.int64),
                        "attempt": np.ones(size, dtype=np.int64),
                        "embedded_at": pa.array(
                            [dt.datetime(2026, 3, 3, tzinfo=dt.UTC)] * size, pa.timestamp("us", tz="UTC")
                        ),
                        "reused": np.zeros(size, dtype=bool),
                    }
                ),
            )


def synthetic_rows(n: int, seed: int = 0):
    """Today's partition alone (no lookback) as one table (bench/quality.py), and what was planted."""
    import pyarrow as pa

    plan = synthetic_plan(n, real_fingerprints(), lookback_days=0, seed=seed)
    table = pa.concat_tables(chunk for _, chunk in synthetic_chunks(plan))
    return table, {"exact": int((plan["kind"] == EXACT).sum()), "near": int((plan["kind"] == NEAR).sum())}


def planted_today(plan: dict, max_hamming: int, min_similarity: float) -> dict:
    """Today's planted duplicates by image_id: exact ones, near ones (with their source) and the
    near ones the rule admits (drawn Hamming and achieved cosine within it)."""
    first, last = plan["today"]
    rows = np.arange(first, last)
    near = rows[plan["kind"][rows] == NEAR]
    achieved = np.array([plan["achieved_cosine"][row] for row in near.tolist()])
    admitted = near[(plan["hamming"][near] <= max_hamming) & (achieved >= min_similarity)]
    return {
        "exact": set(image_ids(plan, rows[plan["kind"][rows] == EXACT])),
        "near": dict(zip(image_ids(plan, near), image_ids(plan, plan["source"][near]))),
        "near_admitted": set(image_ids(plan, admitted)),
        "near_from_lookback": int((plan["source"][near] < first).sum()),
    }


# --- the timed run -------------------------------------------------------------------------------


class StepTimer:
    """Wraps a warehouse's run(), query(), query_arrow() and query_batches() (the time its batches
    take to come, not what the caller does between them) to time each SQL file, and any function of
    a module (`wrap`), to time it by name; with the resident memory sampled every 20 ms, the peak
    of each step too."""

    def __init__(self, warehouse, progress=None):
        self.raw_seconds: dict[str, float] = {}
        self.progress = progress or (lambda phase: None)
        self.intervals: list[tuple[str, float, float]] = []
        self.memory = RssTimeline()
        for method in ("run", "query", "query_arrow"):
            setattr(warehouse, method, self._timed(getattr(warehouse, method)))
        if hasattr(warehouse, "query_batches"):
            warehouse.query_batches = self._timed_batches(warehouse.query_batches)

    @property
    def seconds(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.raw_seconds.items()}

    def __enter__(self):
        self.memory.__enter__()
        return self

    def __exit__(self, *exc):
        self.memory.__exit__(*exc)

    def _timed(self, original, label=None):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            self.progress(label or args[0])
            try:
                return original(*args, **kwargs)
            finally:
                name, ended = label or args[0], time.perf_counter()
                self.progress(f"after {name}")
                self.raw_seconds[name] = self.raw_seconds.get(name, 0) + ended - started
                self.intervals.append((name, started, ended))

        return timed

    def _timed_batches(self, original):
        def timed(name, *args, **kwargs):
            self.progress(name)
            batches = original(name, *args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                finally:
                    ended = time.perf_counter()
                    self.raw_seconds[name] = self.raw_seconds.get(name, 0) + ended - started
                    self.intervals.append((name, started, ended))
                yield batch

        return timed

    @contextlib.contextmanager
    def wrap(self, module, name: str):
        original = getattr(module, name)
        setattr(module, name, self._timed(original, name))
        try:
            yield
        finally:
            setattr(module, name, original)

    def peak_gib(self) -> dict[str, float]:
        """Each step's peak resident memory (GiB) while it ran."""
        peaks: dict[str, float] = {}
        for name, started, ended in self.intervals:
            peaks[name] = max(peaks.get(name, 0), round(self.memory.peak(started, ended) / 2**30, 2))
        return peaks


class LastLog(logging.Handler):
    """The last message of a logger (near_duplicates' leaves and comparisons a row)."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.message, self.logger = None, logging.getLogger(name)

    def emit(self, record):
        self.message = record.getMessage()

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def warehouse_clean(plan: dict, settings, setup_settings, directory: Path, progress=None) -> tuple[float, dict]:
    """Loads every partition into a warehouse file under `directory`, cleans the lookback ones
    (untimed, `setup_settings`), then times clean_partition of today. Returns the seconds and what
    the run did; `progress` hears each phase and step as it starts."""
    progress = progress or (lambda phase: None)
    import faiss  # noqa: F401  (near dedup's, imported before the clock starts, as bench/daily.py does)
    import pyarrow as pa

    import vecflow.clean
    import vecflow.near_duplicates
    from vecflow.clean import clean_partition
    from vecflow.embed.load import append_vectors
    from vecflow.tagging import publish_taxonomy
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        # as get_warehouse() makes it, in the bench's own file
        warehouse = DuckDBWarehouse(Path(tmp) / "bench.duckdb", memory_limit=settings.warehouse.duckdb_memory_limit)
        bootstrap(warehouse)
        publish_taxonomy(warehouse, load_taxonomy())  # as loading a shard does: validation reads the categories
        progress("setup: load")
        started = time.perf_counter()
        # the earlier partitions go in a few days at a time (about CHUNK rows: each row carries its
        # listed_date): an append costs ~0.4 s of DuckDB checkpointing however few its rows, which
        # made 90 appends a day's size the slowest part of the setup; today's go in a shard at a time
        batch: list = []
        for date, chunk in synthetic_chunks(plan):
            if date != DAY:
                batch.append((date, chunk))
                if sum(c.num_rows for _, c in batch) < CHUNK and date != DAY - dt.timedelta(days=1):
                    continue
                date, chunk = batch[0][0], pa.concat_tables(c for _, c in batch)
                batch = []
            append_vectors(warehouse, chunk, date, "bench", shard_id=chunk["shard_id"][0].as_py(), attempt=1)
            del chunk
        load_seconds = time.perf_counter() - started
        progress("setup: clean earlier partitions")
        started = time.perf_counter()
        for date, _, _ in plan["partitions"][:-1]:
            clean_partition(setup_settings, warehouse, date, "bench")
        lookback_clean_seconds = time.perf_counter() - started
        with warehouse.connect() as con:
            lookback_rows = con.execute(
                f"SELECT COUNT(*) FROM {warehouse.dataset}.vectors_clean WHERE listed_date < ? AND listed_date >= ?",
                [DAY, DAY - dt.timedelta(days=settings.clean.near_dup_lookback_days)],
            ).fetchone()[0]
            database_bytes = Path(warehouse.path).stat().st_size
        print(
            f"  setup: {plan['n']} + {plan['today'][0]} rows loaded in {load_seconds:.0f} s, "
            f"{len(plan['partitions']) - 1} earlier partitions cleaned in {lookback_clean_seconds:.0f} s "
            f"({lookback_rows} clean rows in the lookback), database {database_bytes / 2**30:.1f} GiB",
            flush=True,
        )
        steps = StepTimer(warehouse, progress)
        progress("timed")
        # near_duplicate_matches: select_near_dup_pool.sql, its rows as matrices, then first_matches
        timed_near = steps.wrap(vecflow.clean, "near_duplicate_matches")
        timed_first = steps.wrap(vecflow.near_duplicates, "first_matches")
        with steps, timed_near, timed_first, LastLog("vecflow.near_duplicates") as log, PeakMemory() as memory:
            started = time.perf_counter()
            clean_partition(settings, warehouse, DAY, "bench")
            seconds = time.perf_counter() - started
        step_seconds, step_peaks = dict(steps.seconds), steps.peak_gib()
        with warehouse.connect() as con:
            dedup = con.execute(
                f"SELECT image_id, canonical_image_id, reason FROM {warehouse.dataset}.dedup_map WHERE listed_date = ?",
                [DAY],
            ).df()
        counts = warehouse.query("clean_counts", run_date=DAY, model_version=MODEL).iloc[0]
    return seconds, {
        "vectors_clean": int(counts["vectors_clean"]),
        "rejected": int(counts["rejected"]),
        "dedup": dedup,
        "steps": step_seconds,
        "step_peak_rss_gib": step_peaks,
        "near_duplicates_log": log.message,
        **memory.gib,
        "setup": {
            "load_seconds": round(load_seconds, 1),
            "lookback_clean_seconds": round(lookback_clean_seconds, 1),
            "lookback_partitions": len(plan["partitions"]) - 1,
            "lookback_clean_rows": int(lookback_rows),
            "database_gib": round(database_bytes / 2**30, 2),
        },
    }


def check_work(n: int, planted: dict, result: dict) -> dict:
    """Precision and recall of the near duplicates found against those planted; fails loudly unless
    every planted exact duplicate was found, >= 90% of the planted near duplicates the rule admits
    were, and the clean rows are today's rows less the duplicates found."""
    dedup = result.pop("dedup")
    exact = set(dedup.loc[dedup["reason"] == "md5", "image_id"])
    near = dedup[dedup["reason"] == "dhash"]
    found = set(near["image_id"])
    hits = found & planted["near"].keys()
    canonical = dict(zip(near["image_id"], near["canonical_image_id"]))
    check = {
        "exact_planted": len(planted["exact"]),
        "exact_found": len(exact),
        "exact_correct": len(exact & planted["exact"]),
        "near_planted": len(planted["near"]),
        "near_planted_from_lookback": planted["near_from_lookback"],
        "near_planted_admitted": len(planted["near_admitted"]),
        "near_found": len(found),
        "near_correct": len(hits),
        "near_canonical_is_source": sum(canonical[i] == planted["near"][i] for i in hits),
        "precision": round(len(hits) / len(found), 4) if found else None,
        "recall": round(len(hits) / len(planted["near"]), 4) if planted["near"] else None,
        "recall_admitted": round(len(found & planted["near_admitted"]) / len(planted["near_admitted"]), 4)
        if planted["near_admitted"]
        else None,
    }
    problems = []
    if exact != planted["exact"]:
        problems.append(
            f"{len(exact)} exact duplicates found ({len(exact & planted['exact'])} planted ones), "
            f"{len(planted['exact'])} planted"
        )
    if check["recall_admitted"] is None or check["recall_admitted"] < 0.9:
        problems.append(f"near-duplicate recall over the planted the rule admits {check['recall_admitted']} < 0.9")
    expected_clean = n - result["rejected"] - len(exact) - len(found)
    if result["vectors_clean"] != expected_clean or result["vectors_clean"] == 0:
        problems.append(f"{result['vectors_clean']} rows in vectors_clean, {expected_clean} expected")
    if problems:
        raise BenchmarkDidNothing(f"{n} rows: " + "; ".join(problems))
    return check


def run_size(n: int, environ: tuple, lookback_days: int, setup_lookback_days: int, directory: Path, messages) -> None:
    """One size, in a process of its own (its memory is its own, and it can be stopped), its
    warehouse under `directory`: the run's summary, or the error, onto `messages`, with each phase
    as it starts."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    from vecflow.config import Settings

    s = Settings(environ, model_override=MODEL)
    setup = Settings((*environ, ("VECFLOW_NEAR_DUP_LOOKBACK_DAYS", str(setup_lookback_days))), model_override=MODEL)
    h, c = s.clean.near_dup_max_hamming, s.clean.near_dup_min_edge_similarity
    try:
        plan = synthetic_plan(n, real_fingerprints(), lookback_days=lookback_days)
        progress = lambda phase: messages.put(("phase", phase))  # noqa: E731
        seconds, result = warehouse_clean(plan, s, setup, directory, progress)
        planted = planted_today(plan, h, c)
        del plan
        check = check_work(n, planted, result)
    except Exception as exc:
        messages.put(("error", (type(exc).__name__, str(exc))))
        raise
    messages.put(
        ("run", {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds), **result, "near": check})
    )


def watched_run(n: int, args, environ: tuple) -> dict:
    """run_size in a child process, stopped when its resident memory passes --max-rss-gib or the
    timed run (from the clock's start) passes --max-minutes: then what it was doing and why it stopped."""
    import multiprocessing
    import queue

    import psutil

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    # the child's warehouse file goes here, removed whether the child ends or is stopped
    directory = Path(tempfile.mkdtemp(prefix="vecflow-bench-warehouse-"))
    child = context.Process(
        target=run_size, args=(n, environ, args.lookback_days, args.setup_lookback_days, directory, messages)
    )
    started = time.perf_counter()
    child.start()
    phase, clock, peak, outcome = "start", None, 0, None
    try:
        while outcome is None:
            try:
                kind, value = messages.get(timeout=0.1)
                if kind == "phase":
                    phase = value
                    clock = time.perf_counter() if value == "timed" else clock
                elif kind == "run":
                    outcome = value
                else:
                    raise (BenchmarkDidNothing if value[0] == "BenchmarkDidNothing" else RuntimeError)(
                        f"{n} rows: {value[0]}: {value[1]}"
                    )
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"{n} rows: the run's process ended ({child.exitcode}) with no result") from None
            try:
                rss = psutil.Process(child.pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
            peak = max(peak, rss)
            over_time = clock is not None and time.perf_counter() - clock > 60 * args.max_minutes
            if rss > args.max_rss_gib * 2**30 or over_time:
                child.kill()
                why = f"timed run past {args.max_minutes} min" if over_time else f"RSS past {args.max_rss_gib} GiB"
                outcome = {
                    "rows": n,
                    "stopped": why,
                    "phase_when_stopped": phase,
                    "rss_gib_when_stopped": round(rss / 2**30, 2),
                    "seconds_into_timed_run": round(time.perf_counter() - clock, 1) if clock else None,
                    "seconds_since_start": round(time.perf_counter() - started, 1),
                }
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            child.join()
        shutil.rmtree(directory, ignore_errors=True)
        # where DuckDB spills (vecflow.warehouse.duckdb_backend): left behind by a stopped child
        shutil.rmtree(Path(tempfile.gettempdir()) / f"vecflow-duckdb-{child.pid}", ignore_errors=True)
    outcome["process_peak_rss_gib"] = round(peak / 2**30, 2)  # setup included, sampled every 0.1 s
    print(json.dumps(outcome), flush=True)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--lookback-days", type=int, default=LOOKBACK_DAYS, help="earlier partitions (0: none)")
    parser.add_argument(
        "--setup-lookback-days",
        type=int,
        default=0,
        help="near-dedup lookback when cleaning the earlier partitions before the clock starts (their "
        "planted duplicates are all within their own day, so 0 finds them; the setting's own value "
        "makes the setup quadratic in the days)",
    )
    parser.add_argument("--max-rss-gib", type=float, default=12, help="stop a size whose process passes this")
    parser.add_argument("--max-minutes", type=float, default=15, help="stop a size whose timed run passes this")
    args = parser.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    from vecflow.config import settings

    s = settings().with_model(MODEL)
    h, c = s.clean.near_dup_max_hamming, s.clean.near_dup_min_edge_similarity
    data = fingerprint_stats(real_fingerprints(), h, c)
    print(json.dumps(data), flush=True)
    outcomes = [watched_run(n, args, s.environ) for n in args.sizes]
    runs = [r for r in outcomes if "stopped" not in r]
    ratios = {}
    for small, large in itertools.pairwise(runs):
        ratio = large["seconds"] / small["seconds"]
        ratios[f"{large['rows']}/{small['rows']}"] = round(ratio, 2)
        print(f"{large['rows'] / small['rows']:.0f}x rows ({small['rows']} -> {large['rows']}) took {ratio:.2f}x time")
    print(
        f"{'rows':>9}{'lookback':>10}{'seconds':>9}{'rows/s':>9}{'peak GiB':>10}{'precision':>11}{'recall':>8}"
        f"{'admitted':>10}  slowest steps"
    )
    for r in outcomes:
        if "stopped" in r:
            print(f"{r['rows']:>9}  stopped: {r['stopped']} in {r['phase_when_stopped']}")
            continue
        slowest = ", ".join(f"{k} {v}" for k, v in sorted(r["steps"].items(), key=lambda kv: -kv[1])[:3])
        print(
            f"{r['rows']:>9}{r['setup']['lookback_clean_rows']:>10}{r['seconds']:>9}{r['rows_per_s']:>9}"
            f"{r['peak_rss_gib']:>10}{r['near']['precision']!s:>11}{r['near']['recall']!s:>8}"
            f"{r['near']['recall_admitted']!s:>10}  {slowest}"
        )
    by_rows = {r["rows"]: r for r in runs}
    if 1_000_000 in by_rows:
        print(
            f"1M rows with lookback: {by_rows[1_000_000]['seconds']} s (goal <= {GOALS['seconds_1m']} s on {CORES} cores)"
        )
    if {1_000_000, 3_000_000} <= by_rows.keys():
        ratio = by_rows[3_000_000]["seconds"] / by_rows[1_000_000]["seconds"]
        print(f"3M / 1M: {ratio:.2f}x (goal <= {GOALS['ratio_3m_1m']}x)")
    if runs:
        print(f"peak RSS: {max(r['peak_rss_gib'] for r in runs)} GiB at most (goal <= {GOALS['peak_rss_gib']} GiB)")
        print(
            f"near duplicates: precision {min(r['near']['precision'] or 0 for r in runs)} at least "
            f"(goal >= {GOALS['precision']}), recall {min(r['near']['recall'] or 0 for r in runs)} at least over "
            f"all planted, {min(r['near']['recall_admitted'] or 0 for r in runs)} over those the rule admits "
            f"(goal >= {GOALS['recall']})"
        )
    write_report(
        "warehouse",
        {
            "settings": {
                "near_dup_max_hamming": h,
                "near_dup_min_edge_similarity": c,
                "near_dup_lookback_days": s.clean.near_dup_lookback_days,
                "setup_lookback_days": args.setup_lookback_days,
                "max_rss_gib": args.max_rss_gib,
                "max_minutes": args.max_minutes,
            },
            "cores": CORES,
            "goals": GOALS,
            "data": data,
            "runs": runs,
            "stopped": [r for r in outcomes if "stopped" in r],
            "time_ratios": ratios,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
