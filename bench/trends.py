"""Trends benchmark: compute_trends (tag_trends.sql per period and facet, then trend_movers.sql) over
1M, 3M and 10M image_tags rows on DuckDB, what each facet kind costs, bulk indexing docs/s into the
loopback Elasticsearch-compatible server (noida-db, a stand-in: not a real cluster) at two chunk
sizes, and the ES trend query (terms in a quarterly date_histogram) p50/p99 over 300k documents.
Prints ratios and writes bench/results/trends.json.

The synthetic catalog: 4 tag rows per image (category, color, pattern, style; style derived from
the category as in the taxonomy), 3 sources, listed over 181 days (2026-01-01 .. 06-30: two
quarters, six months). Two planted trends: pattern=striped rises across the whole catalog, and
color=blue rises within category=sneaker only (too little of the catalog to move blue overall). The
bench fails (exit 1) unless both come out `rising` in the latest month and quarter of their facet,
blue stays flat catalog-wide, and tag_trends has one row per period x facet x trended tag.

The taxonomy-scale case (--scale-rows, 10M by default): a taxonomy of 1,000 tags in 9 dimensions
built here (400 brands with a Zipf popularity, 300 materials, 120 colours, two multi-label
dimensions: occasion and trims), 10 tag rows per image, the default facets and a multi-label one
(occasion). Planted: a brand and an occasion rising catalog-wide, a trim within one category, a
material within one occasion (a multi-label facet); it fails (exit 1) unless each is `rising` in the
latest month and quarter of its facet, the last two stay flat catalog-wide, and tag_trends has its
rows. Goal: <= 30 s and <= 8 GiB on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_report import PeakMemory, write_report  # noqa: E402  (bench/ is the script's directory)

START = dt.date(2026, 1, 1)
DAYS = 181  # 2026-01-01 .. 2026-06-30: two quarters, six months, every period fully covered
SOURCES = {"shop_a": 0.5, "shop_b": 0.3, "shop_c": 0.2}
# planted: share of the tag within its facet, first day -> last day (linear in the day)
STRIPED = (0.15, 0.45)  # pattern=striped, every image
BLUE_IN_SNEAKER = (0.10, 0.50)  # color=blue, category=sneaker images only (1/8 elsewhere)
GOAL_10M_S = 10.0
TREND_DEFAULT_FACETS = (("category",), ("source",), ("category", "source"))
CATALOG_DIMENSIONS = ("category", "color", "pattern", "style")  # what synthetic_images tags


def synthetic_images(images: int, seed: int = 0):
    """One row per image (integer codes): day, source, category, color, pattern; the planted trends in it."""
    import numpy as np
    import pyarrow as pa

    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    categories, colors, patterns = (taxonomy.tags(d) for d in ("category", "color", "pattern"))
    rng = np.random.default_rng(seed)
    day = rng.integers(0, DAYS, images)
    progress = day / (DAYS - 1)
    source = rng.choice(len(SOURCES), images, p=list(SOURCES.values()))
    category = rng.integers(0, len(categories), images)
    # color: uniform, except blue's share among sneakers rises; the other colors share the rest
    blue, sneaker = colors.index("blue"), categories.index("sneaker")
    others = np.array([i for i in range(len(colors)) if i != blue])
    p_blue = BLUE_IN_SNEAKER[0] + (BLUE_IN_SNEAKER[1] - BLUE_IN_SNEAKER[0]) * progress
    color = rng.integers(0, len(colors), images)
    in_sneaker = category == sneaker
    color[in_sneaker] = np.where(
        rng.random(in_sneaker.sum()) < p_blue[in_sneaker], blue, others[rng.integers(0, len(others), in_sneaker.sum())]
    )
    striped = patterns.index("striped")
    rest = np.array([i for i in range(len(patterns)) if i != striped])
    p_striped = STRIPED[0] + (STRIPED[1] - STRIPED[0]) * progress
    pattern = np.where(rng.random(images) < p_striped, striped, rest[rng.integers(0, len(rest), images)])
    return pa.table(
        {
            "n": np.arange(images, dtype=np.int64),
            "day": day.astype(np.int32),
            "source": source.astype(np.int32),
            "category": category.astype(np.int32),
            "color": color.astype(np.int32),
            "pattern": pattern.astype(np.int32),
            "confidence": rng.uniform(0.5, 1.0, images),
        }
    )


def load_image_tags(warehouse, images) -> int:
    """Writes the images' tag rows (4 per image) into image_tags with DuckDB, in listing-date order
    as the daily partitions would append them; returns the row count. Not timed."""
    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    style_of = taxonomy.derived("style")

    categories = taxonomy.tags("category")
    lookups = {
        "source": sql_list(SOURCES),
        "category": sql_list(categories),
        "color": sql_list(taxonomy.tags("color")),
        "pattern": sql_list(taxonomy.tags("pattern")),
        "style": sql_list(style_of[c] for c in categories),
    }
    per_dimension = [
        f"SELECT n, day, source, '{dim}' AS dimension, {lookups[dim]}[{code} + 1] AS tag, confidence FROM images"
        for dim, code in (("category", "category"), ("color", "color"), ("pattern", "pattern"), ("style", "category"))
    ]
    return insert_tag_rows(warehouse, images, per_dimension, "confidence", "pixels")


def sql_list(values) -> str:
    """A DuckDB list literal of strings (tag lookups by code)."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def insert_tag_rows(warehouse, images, selects: list[str], confidence: str, tag_source: str) -> int:
    """Writes the union of `selects` (n, day, source, dimension, tag[, confidence] over the registered
    `images`) into image_tags in listing-date order; returns image_tags' row count."""
    with warehouse.connect() as con:
        con.register("images", images)
        con.execute(
            f"""INSERT INTO {warehouse.dataset}.image_tags
                  (image_id, listed_date, dimension, tag, confidence, tag_source, run_id, source)
                SELECT 'img' || lpad(CAST(n AS VARCHAR), 9, '0'), DATE '{START}' + CAST(day AS INTEGER), dimension, tag,
                       {confidence}, '{tag_source}', 'bench', {sql_list(SOURCES)}[source + 1]
                FROM ({" UNION ALL ".join(selects)})
                ORDER BY day, n, dimension"""
        )
        return con.execute(f"SELECT COUNT(*) FROM {warehouse.dataset}.image_tags").fetchone()[0]


def expected_trend_rows(trend_settings, taxonomy, tagged) -> tuple[int, int]:
    """(tag_trends rows, facets) the synthetic catalog must give: per period, every facet value times
    every taxonomy tag of each `tagged` dimension trended within it (not the facet's keys nor what
    derives from them)."""
    from vecflow.tags import facet_kinds

    derived = {d: {r for r in tagged if taxonomy.dimension(r).derived_from == d} for d in tagged}
    values = {"source": len(SOURCES), **{d: len(taxonomy.tags(d)) for d in taxonomy.dimensions}}
    periods = {"month": 6, "quarter": 2}
    rows = facets = 0
    for keys in facet_kinds(trend_settings, taxonomy):
        excluded = set(keys).union(*(derived.get(k, set()) for k in keys))
        n_facets = 1
        for key in keys:
            n_facets *= values[key]
        tags = sum(len(taxonomy.tags(d)) for d in tagged if d not in excluded)
        facets += n_facets
        rows += n_facets * tags * sum(periods[p] for p in trend_settings.periods)
    return rows, facets


def check_work(warehouse, trend_settings, taxonomy, movers, tagged=CATALOG_DIMENSIONS, wanted=None) -> dict:
    """Raises unless tag_trends has the expected rows (`tagged`: the dimensions the synthetic catalog
    tags) and the planted trends came out right: `wanted`, (facet kind it needs, facet, dimension,
    tag, directions allowed) in the latest month and quarter; the shipped-taxonomy catalog's by default."""
    if wanted is None:
        wanted = [
            (("category",), "category=sneaker", "color", "blue", {"rising"}),
            ((), "", "pattern", "striped", {"rising"}),
        ]
        if trend_settings.facets == TREND_DEFAULT_FACETS:
            wanted.append(((), "", "color", "blue", {"flat"}))
    import pandas as pd

    expected_rows, expected_facets = expected_trend_rows(trend_settings, taxonomy, tagged)
    with warehouse.connect() as con:
        con.register("wanted", pd.DataFrame([w[1:4] for w in wanted], columns=["facet", "dimension", "tag"]))
        rows, facets = con.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT facet) FROM {warehouse.dataset}.tag_trends"
        ).fetchall()[0]
        latest = con.execute(
            f"""SELECT period_kind, facet, dimension, tag, previous_share, share, direction
                FROM {warehouse.dataset}.v_tag_trends_latest JOIN wanted USING (facet, dimension, tag)"""
        ).df()
    problems = []
    if rows != expected_rows or facets != expected_facets:
        problems.append(f"tag_trends has {rows} rows in {facets} facets, expected {expected_rows} in {expected_facets}")
    planted = {}
    for period in trend_settings.periods:
        for kind, facet, dimension, tag, directions in wanted:
            if kind and kind not in trend_settings.facets:
                continue
            found = latest[
                (latest.period_kind == period)
                & (latest.facet == facet)
                & (latest.dimension == dimension)
                & (latest.tag == tag)
            ]
            name = f"{period} {facet or '(catalog)'} {dimension}={tag}"
            if len(found) != 1 or found.direction.iloc[0] not in directions:
                problems.append(f"{name}: {found.to_dict('records')}, expected {sorted(directions)}")
                continue
            row = found.iloc[0]
            planted[name] = f"{row.previous_share:.3f} -> {row.share:.3f} {row.direction}"
    if problems:
        raise SystemExit("trends benchmark: the work did not happen:\n  " + "\n  ".join(problems))
    return {"tag_trends_rows": rows, "facets": facets, "movers": len(movers), "planted": planted}


def bench_size(rows: int, settings_by_name: dict, repeats: int) -> dict:
    """image_tags of `rows` rows in a fresh warehouse; compute_trends timed under each named setting."""
    from vecflow.tagging import publish_taxonomy
    from vecflow.tags import compute_trends
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import migrate
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    taxonomy = load_taxonomy()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "bench.duckdb")
        migrate(warehouse)
        publish_taxonomy(warehouse, taxonomy)  # what the tagging step does first
        started = time.perf_counter()
        loaded = load_image_tags(warehouse, synthetic_images(rows // 4))
        print(f"{loaded:,} image_tags rows generated and loaded in {time.perf_counter() - started:.1f} s (not timed)")
        for name, trend_settings in settings_by_name.items():
            times, cpu, load = [], [], os.getloadavg()[0]  # load before: other jobs on the machine
            with PeakMemory() as memory:
                for _ in range(repeats):
                    started, cpu_started = time.perf_counter(), time.process_time()
                    movers = compute_trends(warehouse, trend_settings, taxonomy)
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - cpu_started)
            work = check_work(warehouse, trend_settings, taxonomy, movers)
            out[name] = {
                "image_tags_rows": loaded,
                "best_s": round(min(times), 2),
                "all_s": [round(t, 2) for t in times],
                # CPU seconds of the process (DuckDB's threads included): what the work costs when
                # other jobs share the 2 cores and stretch the wall time
                "cpu_s": [round(t, 2) for t in cpu],
                "load_average_before": round(load, 2),
                **work,
                **memory.gib,
            }
            print(json.dumps({"rows": loaded, "settings": name, **out[name]}), flush=True)
    return out


# --- a taxonomy at scale: 1,000 tags in 9 dimensions, two of them multi-label ----------------------------

# dimension -> (tags, multi-label); style (rules) is derived from category
SCALE_DIMENSIONS = {
    "category": (40, False),
    "style": (8, False),
    "brand": (400, False),
    "material": (300, False),
    "colour": (120, False),
    "pattern": (40, False),
    "fit": (12, False),
    "occasion": (30, True),
    "trims": (50, True),
}
# planted, as a share of images (first day -> last day): (facet, dimension, tag, from, to); a
# multi-label dimension's share is the share of images carrying the tag
SCALE_PLANTED = [
    ("", "brand", "brand_020", 0.02, 0.38),  # a catalog-sourced dimension of 400 tags, Zipf popularity
    ("", "occasion", "occasion_05", 0.05, 0.41),  # a multi-label dimension
    ("category=category_03", "trims", "trims_07", 0.05, 0.45),  # multi-label, within one category
    ("occasion=occasion_11", "material", "material_042", 0.02, 0.40),  # within a multi-label facet
]
SCALE_FACETS = (("category",), ("source",), ("category", "source"), ("occasion",))
GOAL_SCALE_S, GOAL_SCALE_GIB = 30.0, 8.0


def scale_taxonomy() -> dict:
    """The taxonomy file of the scale case (every dimension catalog-sourced but style)."""
    names = {
        dim: [f"{dim}_{i:03d}" if n > 99 else f"{dim}_{i:02d}" for i in range(n)]
        for dim, (n, _) in SCALE_DIMENSIONS.items()
    }
    dimensions = {}
    for dim, (_, multi) in SCALE_DIMENSIONS.items():
        if dim == "style":
            tags = {tag: {"from": names["category"][j :: len(names["style"])]} for j, tag in enumerate(names["style"])}
            dimensions[dim] = {"source": "rules", "from": "category", "tags": tags}
        else:
            dimensions[dim] = {"source": "catalog", "multi_label": multi, "tags": {tag: {} for tag in names[dim]}}
    return {
        "version": "bench-1000",
        "description": "bench/trends.py: 1,000 tags in 9 dimensions",
        "dimensions": dimensions,
    }


def _planted_or_other(rng, n_tags: int, planted: int, p, others_p=None):
    """A tag per image: `planted` with probability p (per image), else one of the others (by others_p,
    uniform by default)."""
    import numpy as np

    others = np.array([i for i in range(n_tags) if i != planted])
    weights = None if others_p is None else others_p[others] / others_p[others].sum()
    pick = others[rng.choice(len(others), size=len(p), p=weights)]
    return np.where(rng.random(len(p)) < p, planted, pick)


def _second_label(rng, first, n_tags: int, planted: int, share: float = 0.5):
    """A second tag for `share` of the images (-1 for the rest), never the first nor the planted one,
    so the planted tag's share of images stays what was planned."""
    import numpy as np

    others = np.array([i for i in range(n_tags) if i != planted])
    position = np.searchsorted(others, first)  # first's place among the others (where first != planted)
    r = rng.integers(0, len(others) - 1, len(first))
    second = others[np.where((first != planted) & (r >= position), r + 1, r)]
    return np.where(rng.random(len(first)) < share, second, -1)


def scale_images(images: int, seed: int = 0):
    """One row per image (integer codes, -1 for no second label) with SCALE_PLANTED in it: 7 single-label
    tags and 1-2 tags of each multi-label dimension, 10 tag rows an image on average."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n = lambda dim: SCALE_DIMENSIONS[dim][0]  # noqa: E731
    day = rng.integers(0, DAYS, images)
    progress = day / (DAYS - 1)

    def planned(index: int):
        return SCALE_PLANTED[index][3] + (SCALE_PLANTED[index][4] - SCALE_PLANTED[index][3]) * progress

    columns = {
        "n": np.arange(images, dtype=np.int64),
        "day": day,
        "source": rng.choice(len(SOURCES), images, p=list(SOURCES.values())),
        "category": rng.integers(0, n("category"), images),
        "colour": rng.integers(0, n("colour"), images),
        "pattern": rng.integers(0, n("pattern"), images),
        "fit": rng.integers(0, n("fit"), images),
    }
    zipf = 1 / np.arange(1, n("brand") + 1)
    columns["brand"] = _planted_or_other(rng, n("brand"), 20, planned(0), zipf)
    columns["occasion1"] = _planted_or_other(rng, n("occasion"), 5, planned(1))
    columns["occasion2"] = _second_label(rng, columns["occasion1"], n("occasion"), 5)
    in_category = columns["category"] == 3
    columns["trims1"] = _planted_or_other(rng, n("trims"), 7, np.where(in_category, planned(2), 1 / n("trims")))
    columns["trims2"] = _second_label(rng, columns["trims1"], n("trims"), 7)
    for_occasion = (columns["occasion1"] == 11) | (columns["occasion2"] == 11)
    columns["material"] = _planted_or_other(
        rng, n("material"), 42, np.where(for_occasion, planned(3), 1 / n("material"))
    )
    return pa.table({name: values.astype(np.int64 if name == "n" else np.int32) for name, values in columns.items()})


def load_scale_tags(warehouse, images, taxonomy) -> int:
    """Writes the scale images' tag rows into image_tags (listing-date order); returns the row count."""

    style_of = taxonomy.derived("style")
    categories = taxonomy.tags("category")
    lookups = {dim: sql_list(taxonomy.tags(dim)) for dim in SCALE_DIMENSIONS}
    lookups["style"] = sql_list(style_of[c] for c in categories)
    selects = [
        f"SELECT n, day, source, '{dim}' AS dimension, {lookups[dim]}[{code} + 1] AS tag FROM images{where}"
        for dim, code, where in [
            ("style", "category", ""),
            *((dim, dim, "") for dim, (_, multi) in SCALE_DIMENSIONS.items() if dim != "style" and not multi),
            *((dim, f"{dim}1", "") for dim, (_, multi) in SCALE_DIMENSIONS.items() if multi),
            *((dim, f"{dim}2", f" WHERE {dim}2 >= 0") for dim, (_, multi) in SCALE_DIMENSIONS.items() if multi),
        ]
    ]
    return insert_tag_rows(warehouse, images, selects, "1.0", "catalog")


def bench_scale(rows: int, repeats: int) -> dict:
    """compute_trends over `rows` image_tags rows of the 1,000-tag taxonomy, default settings but the
    facets (SCALE_FACETS: the defaults and a multi-label one)."""
    from vecflow.config import TrendSettings
    from vecflow.tagging import publish_taxonomy
    from vecflow.tags import compute_trends
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import migrate
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    trend_settings = dataclasses.replace(TrendSettings(), facets=SCALE_FACETS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "taxonomy.json"
        path.write_text(json.dumps(scale_taxonomy()))
        taxonomy = load_taxonomy(str(path))
        tags = sum(len(taxonomy.tags(d)) for d in taxonomy.dimensions)
        assert len(taxonomy.dimensions) == 9 and tags == 1000, (taxonomy.dimensions, tags)
        warehouse = DuckDBWarehouse(Path(tmp) / "scale.duckdb")
        migrate(warehouse)
        publish_taxonomy(warehouse, taxonomy)  # what the tagging step does first
        started = time.perf_counter()
        loaded = load_scale_tags(warehouse, scale_images(rows // 10), taxonomy)
        print(f"{loaded:,} image_tags rows of 1,000 tags generated and loaded in {time.perf_counter() - started:.1f} s")
        times, cpu, load = [], [], os.getloadavg()[0]
        with PeakMemory() as memory:
            for _ in range(repeats):
                started, cpu_started = time.perf_counter(), time.process_time()
                movers = compute_trends(warehouse, trend_settings, taxonomy)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
        wanted = [((), facet, dim, tag, {"rising"}) for facet, dim, tag, _, _ in SCALE_PLANTED]
        # too little of the catalog to move these overall
        wanted += [((), "", "trims", "trims_07", {"flat"}), ((), "", "material", "material_042", {"flat"})]
        work = check_work(warehouse, trend_settings, taxonomy, movers, taxonomy.dimensions, wanted)
        return {
            "image_tags_rows": loaded,
            "tags": tags,
            "dimensions": {d: len(taxonomy.tags(d)) for d in taxonomy.dimensions},
            "multi_label": [d for d in taxonomy.dimensions if taxonomy.dimension(d).multi_label],
            "facets_setting": ["+".join(f) for f in SCALE_FACETS],
            "correction": trend_settings.correction,
            "best_s": round(min(times), 2),
            "all_s": [round(t, 2) for t in times],
            "cpu_s": [round(t, 2) for t in cpu],
            "load_average_before": round(load, 2),
            **work,
            **memory.gib,
        }


def trend_settings_by_facets() -> dict:
    from vecflow.config import TrendSettings

    default = TrendSettings()
    assert default.facets == TREND_DEFAULT_FACETS and default.periods == ("month", "quarter"), default
    return {
        "catalog only": dataclasses.replace(default, facets=()),
        "category": dataclasses.replace(default, facets=(("category",),)),
        "source": dataclasses.replace(default, facets=(("source",),)),
        "category+source": dataclasses.replace(default, facets=(("category", "source"),)),
    }


# --- the search sink (the stand-in server) ------------------------------------------------------------


def synthetic_tags(images: int, seed: int = 0):
    """The same catalog as image_tags rows in a pandas frame, for the search documents."""
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        from vecflow.warehouse import bootstrap
        from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

        warehouse = DuckDBWarehouse(Path(tmp) / "tags.duckdb")
        bootstrap(warehouse)
        load_image_tags(warehouse, synthetic_images(images, seed))
        with duckdb.connect(str(warehouse.path)) as con:
            return con.execute(f"SELECT * FROM {warehouse.dataset}.image_tags").df()


def docs_from_arrays(tags):
    """Documents built column-wise (groupby per image is too slow at 1M)."""
    wide = tags.pivot(index="image_id", columns="dimension", values="tag")
    first = tags.drop_duplicates("image_id").set_index("image_id").reindex(wide.index)
    for image_id, day, source, row in zip(
        wide.index, first["listed_date"], first["source"], wide.itertuples(index=False)
    ):
        values = dict(zip(wide.columns, row))
        day = day.date() if hasattr(day, "date") else day
        yield {
            "image_id": image_id,
            "listed_date": day.isoformat(),
            "quarter": f"{day.year}-Q{(day.month - 1) // 3 + 1}",
            "source": source,
            "model_version": "bench-v1",
            "run_id": "bench",
            "tags": {d: [t] for d, t in values.items()},
            "confidence": {d: 0.9 for d in values},
            "tag_source": {d: "pixels" for d in values},
        }


def bench_search(tags, sample: int, query_runs: int) -> dict:
    from elasticsearch import Elasticsearch

    from vecflow.demo.search_server import LocalSearchServer
    from vecflow.search.queries import tag_shares
    from vecflow.search.sink import SearchIndexes, bulk_write, ensure_templates

    dimensions = ["category", "color", "pattern", "style"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp, LocalSearchServer(Path(tmp) / "es") as server:
        es = Elasticsearch(server.url, request_timeout=120)
        docs = list(docs_from_arrays(tags))
        for chunk in (500, 2000):
            indexes = SearchIndexes(f"bench{chunk}")
            ensure_templates(es, indexes, dimensions, None)
            started = time.perf_counter()
            failed = bulk_write(
                es,
                lambda d, ix=indexes: ix.image_tags_of(dt.date.fromisoformat(d["listed_date"])),
                docs[:sample],
                lambda d: d["image_id"],
                chunk,
            )
            seconds = time.perf_counter() - started
            out[f"bulk_chunk_{chunk}"] = {
                "docs": sample,
                "seconds": round(seconds, 2),
                "docs_per_s": round(sample / seconds),
                "refused": len(failed),
            }
            print(json.dumps(out[f"bulk_chunk_{chunk}"]), flush=True)
        best = max((500, 2000), key=lambda c: out[f"bulk_chunk_{c}"]["docs_per_s"])
        indexes = SearchIndexes(f"bench{best}")
        started = time.perf_counter()
        bulk_write(
            es,
            lambda d: indexes.image_tags_of(dt.date.fromisoformat(d["listed_date"])),
            docs[sample:],
            lambda d: d["image_id"],
            best,
        )
        es.indices.refresh(index=indexes.image_tags)
        total = es.count(index=indexes.image_tags)["count"]
        out["bulk_all"] = {"docs": total, "chunk_size": best, "seconds_rest": round(time.perf_counter() - started, 2)}
        latencies = []
        for i in range(query_runs):
            started = time.perf_counter()
            shares = tag_shares(es, indexes.prefix, dimensions[i % len(dimensions)], "quarter")
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        out["trend_query"] = {
            "docs": total,
            "runs": query_runs,
            "rows_last": len(shares),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="compute_trends runs per size (best is reported)")
    parser.add_argument(
        "--facet-size", type=int, default=10_000_000, help="image_tags rows at which each facet kind is timed alone"
    )
    # 1M is the goal; the loopback stand-in slows as its index grows (see docs/PERFORMANCE.md)
    parser.add_argument("--es-docs", type=int, default=300_000, help="0 skips the search sink")
    parser.add_argument("--bulk-sample", type=int, default=50_000)
    parser.add_argument("--query-runs", type=int, default=40)
    parser.add_argument(
        "--scale-rows", type=int, default=10_000_000, help="image_tags rows of the 1,000-tag case (0 skips it)"
    )
    parser.add_argument("--scale-repeats", type=int, default=2)
    args = parser.parse_args()

    from vecflow.config import TrendSettings

    default = TrendSettings()
    per_facet = trend_settings_by_facets()
    runs = []
    facet_costs = {}
    for rows in sorted(set(args.sizes) | {args.facet_size}):
        settings_by_name = {}
        if rows in args.sizes:
            settings_by_name["default"] = default
        if rows == args.facet_size:
            settings_by_name.update(per_facet)
        result = bench_size(rows, settings_by_name, args.repeats)
        if "default" in result:
            runs.append({"rows": rows, **result.pop("default")})
        if result:
            facet_costs = {"image_tags_rows": rows, **result}

    by_rows = {r["rows"]: r["best_s"] for r in runs}
    ratios = {}
    smallest = min(by_rows)
    for rows in sorted(by_rows):
        if rows != smallest:
            ratio = by_rows[rows] / by_rows[smallest]
            ratios[f"{rows // 1_000_000}M/{smallest // 1_000_000}M"] = round(ratio, 2)
            print(f"{rows / smallest:.0f}x rows ({smallest:,} -> {rows:,}) took {ratio:.2f}x time")
    if facet_costs:
        alone = facet_costs["catalog only"]["best_s"]
        for name in ("category", "source", "category+source"):
            cost = facet_costs[name]
            cost["over_catalog_only_s"] = round(cost["best_s"] - alone, 2)
        print(
            f"at {facet_costs['image_tags_rows']:,} rows, alone: catalog {alone} s; "
            + "; ".join(
                f"{n} {facet_costs[n]['best_s']} s (+{facet_costs[n]['over_catalog_only_s']})"
                for n in per_facet
                if n != "catalog only"
            )
        )

    scale = None
    if args.scale_rows:
        scale = bench_scale(args.scale_rows, args.scale_repeats)
        print(json.dumps({"taxonomy_scale": scale}), flush=True)
        same_rows = by_rows.get(args.scale_rows)
        if same_rows:
            ratios[f"1000 tags/{len(CATALOG_DIMENSIONS)} dims at {args.scale_rows // 1_000_000}M"] = round(
                scale["best_s"] / same_rows, 2
            )
            print(
                f"1,000 tags in 9 dimensions took {scale['best_s'] / same_rows:.2f}x the time of the shipped "
                f"taxonomy's 4 tagged dimensions at {args.scale_rows:,} rows"
            )

    search = None
    if args.es_docs:
        search = bench_search(synthetic_tags(args.es_docs, seed=1), args.bulk_sample, args.query_runs)
        print(json.dumps(search["trend_query"]))
    write_report(
        "trends",
        {
            "settings": {
                "periods": list(default.periods),
                "facets": ["+".join(f) for f in default.facets],
                "min_effect": default.min_effect,
                "alpha": default.alpha,
                "min_coverage": default.min_coverage,
            },
            "catalog": {"days": DAYS, "sources": SOURCES, "striped": STRIPED, "blue_in_sneaker": BLUE_IN_SNEAKER},
            "compute_trends": runs,
            "time_ratios": ratios,
            "facet_kinds_alone": facet_costs,
            **(
                {"taxonomy_scale": scale, "taxonomy_scale_goal": {"s": GOAL_SCALE_S, "gib": GOAL_SCALE_GIB}}
                if scale
                else {}
            ),
            **(
                {"search_server": "noida-db (loopback stand-in for Elasticsearch 8)", "search": search}
                if search
                else {}
            ),
        },
    )
    if 10_000_000 in by_rows:
        print(f"compute_trends over 10M image_tags rows: {by_rows[10_000_000]} s (goal <= {GOAL_10M_S} s on 2 cores)")
    if scale:
        print(
            f"compute_trends, 1,000 tags in 9 dimensions, {scale['image_tags_rows']:,} image_tags rows: "
            f"{scale['best_s']} s (goal <= {GOAL_SCALE_S} s), peak RSS {scale['peak_rss_gib']} GiB "
            f"(goal <= {GOAL_SCALE_GIB} GiB) on {len(os.sched_getaffinity(0))} cores"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
