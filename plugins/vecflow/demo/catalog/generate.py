"""Generates the daily catalog partitions and the ground truth of what was planted.

Layout under <catalog_dir>:
  listed_date=YYYY-MM-DD/manifest.parquet   image_id, uri, source, listed_date, category, and a column
                            per catalog-sourced dimension (its `column`: brand, material, occasions, fit)
  listed_date=YYYY-MM-DD/images/<image_id>.jpg
  truth/images.parquet      every image with its true tag of every dimension (a column per dimension;
                            multi-label: its tags joined by `|` in taxonomy order; None where the catalog
                            value names no tag) and what it is (original, duplicate, corrupt)
  truth/labels.csv          image_id, dimension, tag: a merchandisers' sample (LABEL_SAMPLE_RATE of the
                            originals) of every head dimension, the input of `vecflow.cli tags train`
  truth/unknown_values.csv  image_id, dimension, value: catalog values that name no tag (unknown_tag rejects)
  truth/duplicates.csv      duplicate image_id -> canonical image_id, kind (exact | near), transform
  truth/corrupt.csv         corrupt image ids and how they were broken
  truth/tag_shares.csv      per quarter, dimension, tag: count and share among unique, decodable images
                            (of those with a tag of the dimension)
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
from vecflow.demo.catalog.spec import (
    OTHER_TAGS,
    SOURCES,
    TrendSpec,
    catalog_dimensions,
    daily_shares,
    drawn_dimensions,
    plan_groups,
    tag_plan,
    tag_weights,
)
from vecflow.demo.catalog.world import check_world, derived_dimensions
from vecflow.taxonomy import Dimension, Taxonomy

log = logging.getLogger(__name__)

# Bumped whenever the same parameters would give a different catalog, so a kept catalog is redone.
GENERATOR_VERSION = 5
IMAGE_SIZE = 256
JPEG_QUALITY = 90
# Fashion-MNIST holds near-identical pictures (many trousers differ by a few pixels). Two originals
# drawn from such a pair would be distinct in the truth yet look like copies of one product, so
# sources are picked at most this correlated with every source already picked for their label.
SOURCE_MAX_CORRELATION = 0.97
# share of the originals whose head dimensions merchandisers label (truth/labels.csv)
LABEL_SAMPLE_RATE = 0.05
# a multi-label dimension's tags in truth/images.parquet
TRUTH_SEPARATOR = "|"
# how a catalog writes a name in another case or spacing (spec catalog_values.variant_rate)
VARIANTS = (str.upper, str.lower, lambda name: f"  {name} ", lambda name: name.replace(" ", "_"))


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


def catalog_identity(params: CatalogParams, spec: TrendSpec, taxonomy: Taxonomy) -> dict:
    """What makes a generated catalog: the same identity, the same catalog (truth/params.json holds it).
    The taxonomy's version too: its dimensions and tags decide what is planted."""
    return {
        "generator_version": GENERATOR_VERSION,
        "taxonomy_version": taxonomy.version,
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


def distinct_sources(
    images: np.ndarray, candidates: np.ndarray, max_correlation: float, needed: int, block: int = 512
) -> list[int]:
    """Up to `needed` of the candidates, in order, skipping each one correlated above max_correlation
    with one kept. Candidates go in blocks: each block against every source kept so far in one matrix
    product, then greedily within the block (one vector product per kept source read the whole pool
    from memory each time: ~20 s of a 91-day catalog)."""
    pixels = images[candidates].reshape(len(candidates), -1).astype(np.float32)
    pixels -= pixels.mean(axis=1, keepdims=True)
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-6)
    kept: list[int] = []
    for start in range(0, len(candidates), block):
        if len(kept) == needed:
            break
        rows = pixels[start : start + block]
        blocked = (rows @ pixels[kept].T > max_correlation).any(axis=1) if kept else np.zeros(len(rows), bool)
        within = rows @ rows.T
        new: list[int] = []
        for j in np.flatnonzero(~blocked):
            if new and within[j, new].max() > max_correlation:
                continue
            new.append(int(j))
            if len(kept) + len(new) == needed:
                break
        kept += [start + j for j in new]
    return [int(candidates[i]) for i in kept]


def plan_original_tags(
    spec: TrendSpec, taxonomy: Taxonomy, originals_per_day: np.ndarray, rng: np.random.Generator
) -> dict[str, list[list]]:
    """Per day, the source and the tags of every drawn dimension of each original, in listing order (a
    tag; multi-label: a list in taxonomy order). Sources are drawn first and dimensions in order, so
    that a trend planted within a source or a category is apportioned among that group's images (and
    the dimension's catalog-wide plan among the rest), category by category where its tags depend on it."""
    days = len(originals_per_day)
    plan = {"source": [[str(x) for x in rng.choice(SOURCES, size=int(k))] for k in originals_per_day]}
    for dim in drawn_dimensions(taxonomy):
        multi = taxonomy.dimension(dim).multi_label
        plan[dim] = [[None] * int(k) for k in originals_per_day]
        for within, category, key, values in plan_groups(spec, taxonomy, dim):
            members = [
                [
                    i
                    for i in range(int(originals_per_day[d]))
                    if (not key or (plan[key][d][i] == within[1] if within else plan[key][d][i] not in values))
                    and (category is None or plan["category"][d][i] == category)
                ]
                for d in range(days)
            ]
            tags, shares = daily_shares(spec, taxonomy, dim, days, within, category)
            if multi:
                planted, others = tag_plan(spec, taxonomy, dim, within, category)
                for d, carried in enumerate(_multi_label_tags(members, tags, shares, planted, list(others), rng)):
                    for i, mine in carried.items():
                        plan[dim][d][i] = sorted(mine, key=tags.index)
                continue
            sizes = np.array([len(m) for m in members])
            counts = apportion(shares * sizes[:, None], sizes)
            for d in range(days):
                for i, tag in zip(members[d], _quota_tags(counts[d], tags, rng)):
                    plan[dim][d][i] = tag
    return plan


def _multi_label_tags(
    members: list[list[int]], tags: list[str], shares: np.ndarray, planted, others: list[str], rng
) -> list[dict[int, set[str]]]:
    """Per day, member -> its tags of a multi-label dimension: each planted tag on its apportioned count
    of members; besides, every member one of OTHER_TAGS other tags (the count of each apportioned
    evenly), the slots of each other tag apportioned evenly and dealt round by round, so that a tag's
    run of slots (never longer than a round) gives no member that tag twice."""
    sizes = np.array([len(m) for m in members])
    out = [{i: set() for i in m} for m in members]
    for j, tag in enumerate(tags):
        if tag in planted:
            carried = apportion(np.stack([shares[:, j], 1.0 - shares[:, j]], axis=1) * sizes[:, None], sizes)[:, 0]
            for d, n in enumerate(carried):
                for i in rng.choice(members[d], size=int(n), replace=False):
                    out[d][int(i)].add(tag)
    ks = np.array(OTHER_TAGS)
    per_k = apportion(np.full((len(sizes), len(ks)), 1.0 / len(ks)) * sizes[:, None], sizes)
    slots = per_k @ ks
    per_tag = apportion(np.full((len(sizes), len(others)), 1.0 / len(others)) * slots[:, None], slots)
    for d, m in enumerate(members):
        order = [m[int(i)] for i in rng.permutation(len(m))]
        count = np.repeat(ks, per_k[d])[::-1]  # the members first in order take the most
        seats = [order[i] for r in range(int(ks.max())) for i in range(len(order)) if count[i] > r]
        dealt = [tag for j in rng.permutation(len(others)) for tag in [others[j]] * int(per_tag[d, j])]
        for i, tag in zip(seats, dealt):
            out[d][i].add(tag)
    return out


def _quota_tags(counts: np.ndarray, tags: list[str], rng: np.random.Generator) -> list[str]:
    out = [tag for tag, n in zip(tags, counts) for _ in range(int(n))]
    rng.shuffle(out)
    return out


def _unknown_value(dim: Dimension, tag: str) -> str:
    """A value that names no tag of the dimension: the tag's display name backwards."""
    value = dim.tags[tag].get("display", tag)[::-1].title()
    while dim.map_value(value) is not None:
        value += "o"
    return value


def written_value(
    dim: Dimension, tags: list[str], spec: TrendSpec, rng: np.random.Generator
) -> tuple[str | None, str | None]:
    """How the catalog writes an image's tags of a catalog-sourced dimension, and the value in it that
    names no tag (None: none). Each tag by its display name, in another case or spacing
    (variant_rate), or by one of its synonyms, misspellings included (synonym_rate); the none tag by no
    value. At unknown_rate a value naming no tag replaces it (multi-label: joins them)."""
    real = [tag for tag in tags if tag != dim.none_tag]
    names = []
    for tag in real:
        display, synonyms = dim.tags[tag].get("display", tag), dim.tags[tag].get("synonyms", [])
        u = rng.random()
        if u < spec.value_rate("synonym_rate") and synonyms:
            names.append(str(rng.choice(synonyms)))
        elif u < spec.value_rate("synonym_rate") + spec.value_rate("variant_rate"):
            names.append(VARIANTS[int(rng.integers(len(VARIANTS)))](display))
        else:
            names.append(display)
    unknown = None
    if real and rng.random() < spec.value_rate("unknown_rate"):
        unknown = _unknown_value(dim, real[0])
        names = [*names, unknown] if dim.multi_label else [unknown]
    return (dim.separator.join(names) if names else None), unknown


def catalog_row(
    tags: dict, taxonomy: Taxonomy, spec: TrendSpec, rng: np.random.Generator
) -> tuple[dict, dict, list[tuple[str, str]]]:
    """An image's drawn tags as the truth holds them, its catalog-sourced columns as the catalog writes
    them, and the (dimension, value) of those values that name no tag (a single-label tag the catalog
    does not name is None in the truth)."""
    truth = {dim: TRUTH_SEPARATOR.join(t) if isinstance(t, list) else t for dim, t in tags.items()}
    columns, unknown = {}, []
    for dim in catalog_dimensions(taxonomy):
        value, bad = written_value(dim, tags[dim.name] if dim.multi_label else [tags[dim.name]], spec, rng)
        columns[dim.column] = value
        if bad:
            unknown.append((dim.name, bad))
            if not dim.multi_label:
                truth[dim.name] = None
    return truth, columns, unknown


def _corrupt(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        keep = int(len(data) * rng.uniform(0.2, 0.6))
        return data[:keep], f"truncated to {keep} of {len(data)} bytes"
    return rng.bytes(len(data) // 2), "random bytes"


def generate(catalog_dir: Path, params: CatalogParams, spec: TrendSpec, taxonomy: Taxonomy) -> dict:
    if params.days < 1 or params.images_per_day < 4:
        raise ValueError("need days >= 1 and images_per_day >= 4")
    check_world(taxonomy)
    rng = np.random.default_rng(params.seed)
    images, labels = fashion_mnist.load("all")
    category_by_label = taxonomy.category_by_label()
    label_by_category = {c: label for label, c in category_by_label.items()}
    drawn = drawn_dimensions(taxonomy)
    # the pixels dimensions the renderer draws: one tinted (colour analyser), one patterned
    color, pattern = ({d.analyser: d.name for d in taxonomy.by_source("pixels")}[a] for a in ("colour", "pattern"))
    colors = {tag: tuple(taxonomy.tag_info(color, tag)["rgb"]) for tag in taxonomy.tags(color)}
    modulations = {
        tag: pattern_modulation(
            taxonomy.tag_info(pattern, tag).get("layout"), taxonomy.tag_info(pattern, tag).get("period_px"), IMAGE_SIZE
        )
        for tag in taxonomy.tags(pattern)
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
    unknown_rows: list[dict] = []
    originals: list[dict] = []  # sources for duplicates: rendered, decodable images

    for d, day in enumerate(tqdm(params.dates, desc="catalog days", unit="day", mininterval=10)):
        part = partition_dir(catalog_dir, day)
        (part / "images").mkdir(parents=True)
        seq = 0
        manifest = []

        def emit(data: bytes, row: dict, columns: dict, unknown: list) -> str:
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
                    **columns,
                }
            )
            truth_rows.append(row)
            unknown_rows.extend({"image_id": image_id, "dimension": dim, "value": v} for dim, v in unknown)
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
                    tags = {dim: plan[dim][d][next_original] for dim in ("source", *drawn)}
                    next_original += 1
                else:  # corrupt images carry random tags (ones their category can have); they never reach the warehouse
                    tags = {"category": str(rng.choice(taxonomy.tags("category")))}
                    for dim in drawn[1:]:
                        tag = str(rng.choice(list(tag_weights(taxonomy, dim, spec.zipf, tags["category"]))))
                        tags[dim] = [tag] if taxonomy.dimension(dim).multi_label else tag
                label = label_by_category[tags["category"]]
                mnist_index = pools[label][pool_pos[label] % len(pools[label])]
                pool_pos[label] += 1
                render_seed = int(rng.integers(2**31))
                picture = render(
                    images[mnist_index],
                    colors[tags[color]],
                    modulations[tags[pattern]],
                    np.random.default_rng(render_seed),
                )
                data = jpeg_bytes(picture, JPEG_QUALITY)
                how = None
                if kind == "corrupt":
                    data, how = _corrupt(data, rng)
                truth, columns, unknown = catalog_row(tags, taxonomy, spec, rng)
                row = {
                    "kind": kind,
                    **truth,  # an original's source too
                    "canonical_image_id": None,
                    "mnist_index": int(mnist_index),
                    "transform": how,
                }
                image_id = emit(data, row, columns, unknown)
                if kind == "original":
                    truth.pop("source")  # a duplicate is listed again, by any source
                    originals.append(
                        {
                            "image_id": image_id,
                            "data": data,
                            "mnist_index": int(mnist_index),
                            "render_seed": render_seed,
                            "truth": truth,
                            "columns": columns,
                            "unknown": unknown,
                            "render": (tags[color], tags[pattern]),
                        }
                    )
            else:
                src = originals[int(rng.integers(len(originals)))]
                if kind == "exact_duplicate":
                    data, transform = src["data"], "same bytes"
                else:
                    picture = render(
                        images[src["mnist_index"]],
                        colors[src["render"][0]],
                        modulations[src["render"][1]],
                        np.random.default_rng(src["render_seed"]),
                    )
                    data, transform = near_duplicate(picture, rng)
                emit(  # the same listing copied: its catalog columns too
                    data,
                    {
                        "kind": kind,
                        **src["truth"],
                        "canonical_image_id": src["image_id"],
                        "mnist_index": src["mnist_index"],
                        "transform": transform,
                    },
                    src["columns"],
                    src["unknown"],
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
    for dim, (base, mapping) in derived_dimensions(taxonomy).items():
        truth[dim] = truth[base].map(mapping)
    truth.to_parquet(catalog_dir / "truth" / "images.parquet", index=False)
    write_labels(truth, taxonomy, rng).to_csv(catalog_dir / "truth" / "labels.csv", index=False)
    pd.DataFrame(unknown_rows, columns=["image_id", "dimension", "value"]).to_csv(
        catalog_dir / "truth" / "unknown_values.csv", index=False
    )
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
        **catalog_identity(params, spec, taxonomy),
        "images": int(len(truth)),
        **{f"{k}_images": int(v) for k, v in truth["kind"].value_counts().items()},
    }
    (catalog_dir / "truth" / "params.json").write_text(json.dumps(summary, indent=2))
    log.info("catalog: %d images over %d days in %s", len(truth), params.days, catalog_dir)
    return summary


def write_labels(truth: pd.DataFrame, taxonomy: Taxonomy, rng: np.random.Generator) -> pd.DataFrame:
    """A merchandisers' labelled sample: LABEL_SAMPLE_RATE of the originals, drawn at random, with
    their true tag of every head dimension (image_id, dimension, tag)."""
    originals = truth[truth["kind"] == "original"]
    sample = originals.sample(n=round(LABEL_SAMPLE_RATE * len(originals)), random_state=int(rng.integers(2**31)))
    sample = sample.sort_values("image_id")
    frames = [
        pd.DataFrame({"image_id": sample["image_id"], "dimension": d.name, "tag": sample[d.name]})
        for d in taxonomy.by_source("head")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image_id", "dimension", "tag"])


def tag_shares(unique_images: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Count and share of every tag per quarter and dimension (the truth that tag_trends must find):
    among the images with a tag of the dimension; an image counts under each of a multi-label
    dimension's tags."""
    rows = []
    for dim in taxonomy.dimensions:
        tagged = unique_images[["quarter", dim]].dropna()
        if taxonomy.dimension(dim).multi_label:
            tagged = tagged.assign(**{dim: tagged[dim].str.split(TRUTH_SEPARATOR)}).explode(dim)
        counts = tagged.groupby(["quarter", dim]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=taxonomy.tags(dim), fill_value=0)
        share = counts.div(unique_images[["quarter", dim]].dropna().groupby("quarter").size(), axis=0)
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
