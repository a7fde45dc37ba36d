"""Generates the daily catalog partitions and the ground truth of what was planted.

Layout under <catalog_dir>:
  listed_date=YYYY-MM-DD/manifest.parquet   image_id, uri, source, listed_date, category
  listed_date=YYYY-MM-DD/images/<image_id>.jpg
  truth/images.parquet      every image with its true tags and what it is (original, duplicate, corrupt)
  truth/duplicates.csv      duplicate image_id -> canonical image_id, kind (exact | near), transform
  truth/corrupt.csv         corrupt image ids and how they were broken
  truth/tag_shares.csv      per quarter, dimension, tag: count and share among unique, decodable images
  truth/params.json         seed, dates, sizes and the trend spec used
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vecflow.catalog import partition_dir
from vecflow.demo.catalog import fashion_mnist
from vecflow.demo.catalog.render import jpeg_bytes, near_duplicate, pattern_modulation, render
from vecflow.demo.catalog.spec import GENERATED_DIMENSIONS, SOURCES, TrendSpec, daily_shares, within_groups
from vecflow.taxonomy import Taxonomy

log = logging.getLogger(__name__)

# Bumped whenever the same parameters would give a different catalog, so a kept catalog is redone.
GENERATOR_VERSION = 4
IMAGE_SIZE = 256
JPEG_QUALITY = 90
# Fashion-MNIST holds near-identical pictures (many trousers differ by a few pixels). Two originals
# drawn from such a pair would be distinct in the truth yet look like copies of one product, so
# sources are picked at most this correlated with every source already picked for their label.
SOURCE_MAX_CORRELATION = 0.97


@dataclass(frozen=True)
class CatalogParams:
    seed: int
    start_date: dt.date
    days: int
    images_per_day: int

    @property
    def dates(self) -> list[dt.date]:
        return [self.start_date + dt.timedelta(days=i) for i in range(self.days)]


def quarter_label(day: dt.date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def catalog_identity(params: CatalogParams, spec: TrendSpec) -> dict:
    """What makes a generated catalog: the same identity, the same catalog (truth/params.json holds it)."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": params.seed,
        "start_date": params.start_date.isoformat(),
        "days": params.days,
        "images_per_day": params.images_per_day,
        "spec": spec.to_json(),
    }


def cumulative_counts(expected_per_day: np.ndarray) -> np.ndarray:
    """Integer counts per day whose running total tracks the running expected total (no drift)."""
    totals = np.floor(np.cumsum(expected_per_day, axis=0) + 0.5).astype(int)
    return np.diff(np.vstack([np.zeros_like(totals[:1]), totals]), axis=0)


def apportion(expected: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Integer counts[day, tag] summing to totals[day], carrying rounding residue to the next day,
    so that realised shares track the expected shares with no drift."""
    counts = np.zeros(expected.shape, dtype=int)
    carry = np.zeros(expected.shape[1])
    for d in range(expected.shape[0]):
        target = expected[d] + carry
        base = np.floor(np.clip(target, 0, None)).astype(int)
        remaining = int(totals[d]) - int(base.sum())
        fraction = target - base
        if remaining > 0:
            base[np.argsort(-fraction, kind="stable")[:remaining]] += 1
        while remaining < 0:
            candidates = np.flatnonzero(base > 0)
            base[candidates[np.argmin(fraction[candidates])]] -= 1
            remaining += 1
        counts[d] = base
        carry = target - base
    return counts


def distinct_sources(images: np.ndarray, candidates: np.ndarray, max_correlation: float, needed: int) -> list[int]:
    """Up to `needed` of the candidates, in order, skipping each one correlated above max_correlation
    with one kept."""
    pixels = images[candidates].reshape(len(candidates), -1).astype(np.float32)
    pixels -= pixels.mean(axis=1, keepdims=True)
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-6)
    blocked = np.zeros(len(candidates), dtype=bool)
    kept = []
    for i in range(len(candidates)):
        if blocked[i]:
            continue
        kept.append(int(candidates[i]))
        if len(kept) == needed:
            break
        blocked[i + 1 :] |= pixels[i + 1 :] @ pixels[i] > max_correlation
    return kept


def plan_original_tags(
    spec: TrendSpec, taxonomy: Taxonomy, originals_per_day: np.ndarray, rng: np.random.Generator
) -> dict[str, list[list[str]]]:
    """Per day, the source and the tag of every dimension of each original, in listing order. Sources
    are drawn first and dimensions in order, so that a trend planted within a source or a category is
    apportioned among that group's images (and the dimension's catalog-wide plan among the rest)."""
    days = len(originals_per_day)
    plan = {"source": [[str(x) for x in rng.choice(SOURCES, size=int(k))] for k in originals_per_day]}
    for dim in GENERATED_DIMENSIONS:
        key, values = within_groups(spec, dim)
        plan[dim] = [[""] * int(k) for k in originals_per_day]
        for value in [*values, None]:
            members = [
                [i for i, v in enumerate(plan[key][d]) if (v == value if value else v not in values)]
                if key
                else list(range(int(originals_per_day[d])))
                for d in range(days)
            ]
            sizes = np.array([len(m) for m in members])
            tags, shares = daily_shares(spec, taxonomy, dim, days, (key, value) if value else None)
            counts = apportion(shares * sizes[:, None], sizes)
            for d in range(days):
                for i, tag in zip(members[d], _quota_tags(counts[d], tags, rng)):
                    plan[dim][d][i] = tag
    return plan


def _quota_tags(counts: np.ndarray, tags: list[str], rng: np.random.Generator) -> list[str]:
    out = [tag for tag, n in zip(tags, counts) for _ in range(int(n))]
    rng.shuffle(out)
    return out


def _corrupt(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        keep = int(len(data) * rng.uniform(0.2, 0.6))
        return data[:keep], f"truncated to {keep} of {len(data)} bytes"
    return rng.bytes(len(data) // 2), "random bytes"


def generate(catalog_dir: Path, params: CatalogParams, spec: TrendSpec, taxonomy: Taxonomy) -> dict:
    if params.days < 1 or params.images_per_day < 4:
        raise ValueError("need days >= 1 and images_per_day >= 4")
    rng = np.random.default_rng(params.seed)
    images, labels = fashion_mnist.load("all")
    category_by_label = taxonomy.category_by_label()
    label_by_category = {c: label for label, c in category_by_label.items()}
    colors = {tag: tuple(taxonomy.tag_info("color", tag)["rgb"]) for tag in taxonomy.tags("color")}
    modulations = {
        tag: pattern_modulation(tag, taxonomy.tag_info("pattern", tag).get("period_px"), IMAGE_SIZE)
        for tag in taxonomy.tags("pattern")
    }

    # Planted counts per day (rates of images_per_day) and the rest are originals.
    n = params.images_per_day
    planted = cumulative_counts(
        np.tile([n * spec.exact_duplicate_rate, n * spec.near_duplicate_rate, n * spec.corrupt_rate], (params.days, 1))
    )
    originals_per_day = n - planted.sum(axis=1)
    plan = plan_original_tags(spec, taxonomy, originals_per_day, rng)
    # every original of a category and any corrupt image may need its own source
    needed = {c: sum(day.count(c) for day in plan["category"]) + planted[:, 2].sum() for c in taxonomy.tags("category")}
    pools = {
        label: distinct_sources(
            images, rng.permutation(np.flatnonzero(labels == label)), SOURCE_MAX_CORRELATION, int(needed[category])
        )
        for label, category in category_by_label.items()
    }
    pool_pos = dict.fromkeys(pools, 0)

    if catalog_dir.exists():
        shutil.rmtree(catalog_dir)
    (catalog_dir / "truth").mkdir(parents=True)
    truth_rows: list[dict] = []
    originals: list[dict] = []  # sources for duplicates: rendered, decodable images

    for d, day in enumerate(tqdm(params.dates, desc="catalog days", unit="day", mininterval=10)):
        part = partition_dir(catalog_dir, day)
        (part / "images").mkdir(parents=True)
        seq = 0
        manifest = []

        def emit(data: bytes, row: dict) -> str:
            nonlocal seq
            seq += 1
            image_id = f"{day:%Y%m%d}-{seq:05d}"
            rel = f"{part.name}/images/{image_id}.jpg"
            (catalog_dir / rel).write_bytes(data)
            row = {
                "image_id": image_id,
                "listed_date": day,
                "source": row.pop("source", None) or str(rng.choice(SOURCES)),
                **row,
            }
            manifest.append(
                {
                    "image_id": image_id,
                    "uri": rel,
                    "source": row["source"],
                    "listed_date": day,
                    "category": row["category"],
                }
            )
            truth_rows.append(row)
            return image_id

        n_exact, n_near, n_corrupt = planted[d]
        kinds = ["original"] * int(originals_per_day[d]) + ["corrupt"] * int(n_corrupt)
        kinds += ["exact_duplicate"] * int(n_exact) + ["near_duplicate"] * int(n_near)
        # Duplicates come after at least one original of the day so that the canonical is listed first.
        order = ["original"] + list(rng.permutation(kinds[1:]))
        next_original = 0
        for kind in order:
            if kind in ("original", "corrupt"):
                if kind == "original":
                    tags = {dim: plan[dim][d][next_original] for dim in ("source", *GENERATED_DIMENSIONS)}
                    next_original += 1
                else:  # corrupt images carry random tags; they never reach the warehouse
                    tags = {dim: str(rng.choice(taxonomy.tags(dim))) for dim in GENERATED_DIMENSIONS}
                label = label_by_category[tags["category"]]
                mnist_index = pools[label][pool_pos[label] % len(pools[label])]
                pool_pos[label] += 1
                render_seed = int(rng.integers(2**31))
                picture = render(
                    images[mnist_index],
                    colors[tags["color"]],
                    modulations[tags["pattern"]],
                    np.random.default_rng(render_seed),
                )
                data = jpeg_bytes(picture, JPEG_QUALITY)
                how = None
                if kind == "corrupt":
                    data, how = _corrupt(data, rng)
                row = {
                    "kind": kind,
                    **tags,  # an original's source too
                    "canonical_image_id": None,
                    "mnist_index": int(mnist_index),
                    "transform": how,
                }
                image_id = emit(data, row)
                if kind == "original":
                    originals.append(
                        {
                            "image_id": image_id,
                            "data": data,
                            "mnist_index": int(mnist_index),
                            "render_seed": render_seed,
                            **{dim: tags[dim] for dim in GENERATED_DIMENSIONS},
                        }
                    )
            else:
                src = originals[int(rng.integers(len(originals)))]
                if kind == "exact_duplicate":
                    data, transform = src["data"], "same bytes"
                else:
                    picture = render(
                        images[src["mnist_index"]],
                        colors[src["color"]],
                        modulations[src["pattern"]],
                        np.random.default_rng(src["render_seed"]),
                    )
                    data, transform = near_duplicate(picture, rng)
                emit(
                    data,
                    {
                        "kind": kind,
                        **{dim: src[dim] for dim in GENERATED_DIMENSIONS},
                        "canonical_image_id": src["image_id"],
                        "mnist_index": src["mnist_index"],
                        "transform": transform,
                    },
                )
        pd.DataFrame(manifest).sample(frac=1.0, random_state=int(rng.integers(2**31))).to_parquet(
            part / "manifest.parquet", index=False
        )
        # originals keep their bytes only for exact duplicates: bound memory to a recent window
        for o in originals[:-2000]:
            o.pop("data", None)
        originals = originals[-2000:]

    truth = pd.DataFrame(truth_rows)
    truth["quarter"] = truth["listed_date"].map(quarter_label)
    truth["style"] = truth["category"].map(taxonomy.style_of_category())
    truth.to_parquet(catalog_dir / "truth" / "images.parquet", index=False)
    dups = truth[truth["kind"].isin(["exact_duplicate", "near_duplicate"])]
    dups = dups.assign(kind=dups["kind"].str.replace("_duplicate", ""))
    dups[["image_id", "canonical_image_id", "kind", "transform"]].to_csv(
        catalog_dir / "truth" / "duplicates.csv", index=False
    )
    truth[truth["kind"] == "corrupt"][["image_id", "listed_date", "transform"]].rename(
        columns={"transform": "how"}
    ).to_csv(catalog_dir / "truth" / "corrupt.csv", index=False)
    shares = tag_shares(truth[truth["kind"] == "original"], taxonomy)
    shares.to_csv(catalog_dir / "truth" / "tag_shares.csv", index=False)
    summary = {
        **catalog_identity(params, spec),
        "images": int(len(truth)),
        **{f"{k}_images": int(v) for k, v in truth["kind"].value_counts().items()},
    }
    (catalog_dir / "truth" / "params.json").write_text(json.dumps(summary, indent=2))
    log.info("catalog: %d images over %d days in %s", len(truth), params.days, catalog_dir)
    return summary


def tag_shares(unique_images: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Count and share of every tag per quarter and dimension (the truth that tag_trends must find)."""
    rows = []
    for dim in (*GENERATED_DIMENSIONS, "style"):
        counts = unique_images.groupby(["quarter", dim]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=taxonomy.tags(dim), fill_value=0)
        share = counts.div(counts.sum(axis=1), axis=0)
        for quarter in counts.index:
            for tag in counts.columns:
                rows.append(
                    {
                        "quarter": quarter,
                        "dimension": dim,
                        "tag": tag,
                        "count": int(counts.loc[quarter, tag]),
                        "share": float(share.loc[quarter, tag]),
                    }
                )
    out = pd.DataFrame(rows).sort_values(["dimension", "tag", "quarter"])
    out["change"] = out.groupby(["dimension", "tag"])["share"].diff()
    return out.reset_index(drop=True)
