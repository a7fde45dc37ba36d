"""Retag benchmark: vecflow.tagging.retag over 1M stored 256-d vectors with a 1,000-tag taxonomy in 9
dimensions on DuckDB, 2 cores: seconds (wall and CPU), peak memory (RSS), where the time goes (the
SQL files, parsing, tagging per source, writing), and how the work scales from 100k. Writes
bench/results/retag.json; fails (exit 1) unless every image was retagged as planted.

The taxonomy (built here, like a marketplace's own): category (10, catalog, through synonyms),
brand (640, catalog attribute, Zipf popularity, misspelt synonyms), material (90, catalog, per
category), occasion (50, catalog, multi-label), fit (12 with a none tag, catalog, apparel only),
colour (72, pixels) and pattern (31, pixels), style (50, rules from the brand), silhouette (45, a
head trained here with vecflow.heads on a 2% labelled sample of the bench's own vectors). Pixel
analyses are what the embedding job measures of generated pictures: garments rendered with
vecflow.demo.catalog.render in the palette's colours and the patterns' layouts and periods, measured
with the embedding job's vecflow_model.measure, then resampled per image of the same category. Vectors
are a silhouette's direction plus its category's plus noise (a head learns them, not perfectly).

Two retags, both timed: v1 (999 tags) from an empty image_tags, then v2 (a new brand whose synonyms
are 1% of the catalog's brand values, rejects under v1) over the serving v1 tags: the switch
replaces 10M+ rows. The goal is the v2 retag of 1M vectors in <= 60 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_report import PeakMemory, write_report  # noqa: E402  (bench/ is the script's directory)

CORES = 2
MODEL = "bench-v1"
START = dt.date(2026, 1, 1)
DAYS = 90  # one quarter: three of retag's 31-day chunks
CHUNK = 200_000  # rows generated and inserted at a time
GOAL_S = 60.0
RENDERS_PER_CATEGORY = 60
LABELLED = 0.02  # of the images, labelled with their silhouette for `tags train`
NOISE = 0.3  # per vector component: the head is right most of the time, not always
UNKNOWN_BRAND = 0.005  # brand values no taxonomy version names (rejects under both)
ACME_BRAND = 0.01  # brand values v2 names (a new brand), rejects under v1
APPAREL = {"tshirt_top", "trouser", "pullover", "dress", "coat", "shirt"}  # the rest get fit's none tag
SYLLABLES = ["ba", "bi", "co", "da", "el", "fa", "ge", "hi", "jo", "ka", "lu", "ma"]
SYLLABLES += ["ne", "no", "pa", "qui", "ra", "se", "ta", "vo", "wu", "xa", "yo", "zu"]


class BenchmarkDidNothing(RuntimeError):
    """The retag did not tag what the benchmark planted."""


def _name(rng, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES, parts)).capitalize()


def bench_taxonomy(seed: int = 0) -> dict:
    """The v1 taxonomy file's content: 9 dimensions, 999 tags."""
    import colorsys

    import numpy as np

    from vecflow.taxonomy import load_taxonomy
    from vecflow_model.pixel_tags import PATTERN_LAYOUTS, PATTERN_PERIODS

    rng = np.random.default_rng(seed)
    shipped = load_taxonomy(REPO / "include" / "taxonomy.json")
    brands, seen = {}, set()
    while len(brands) < 639:
        name = _name(rng, int(rng.integers(2, 4)))
        typo = name[:-1] if len(name) > 4 else name + "e"  # a letter dropped or added
        names = {n.lower() for n in (name, typo, f"{name} Studio", f"b_{name}", f"b {name}")}
        if names & seen:  # a name or typo of another brand: synonyms must name one tag
            continue
        seen |= names
        brands[f"b_{name.lower()}"] = {"display": name, "synonyms": [typo, f"{name} Studio"]}
    styles = [f"style_{i:02d}" for i in range(50)]
    for i, key in enumerate(brands):
        brands[key]["_style"] = styles[i % len(styles)]
    colours = {}
    for i, (value, warmth) in enumerate(
        [(0.1, 0), (0.3, 0), (0.55, 0), (0.75, 0), (0.95, 0), (0.85, 0.12), (0.7, 0.1), (0.5, 0.08)]
    ):
        r = value
        b = max(0.0, value - warmth)
        g = (r + b) / 2
        colours[f"neutral_{i}"] = {"rgb": [round(c * 255) for c in (r, g, b)]}
    for i in range(64):
        hue, (s, v) = (i // 2) / 32, ((0.85, 0.8), (0.55, 0.95))[i % 2]
        colours[f"hue_{i // 2:02d}_{'deep' if i % 2 == 0 else 'soft'}"] = {
            "rgb": [round(c * 255) for c in colorsys.hsv_to_rgb(hue, s, v)]
        }
    patterns = {"plain": {"display": "Plain", "synonyms": ["solid"]}}
    for layout in PATTERN_LAYOUTS:
        for period in PATTERN_PERIODS:
            patterns[f"{layout}_{period}px"] = {"layout": layout, "period_px": period}
    categories = list(shipped.dimension("category").tags)
    silhouettes = [f"sil_{i:02d}" for i in range(45)]
    dimensions = {
        "category": {"display": "Category", "source": "catalog", "tags": shipped.dimension("category").tags},
        "brand": {
            "source": "catalog",
            "column": "brand",
            "tags": {k: {x: v for x, v in t.items() if x != "_style"} for k, t in brands.items()},
        },
        "material": {
            "source": "catalog",
            "tags": {f"m_{_name(rng, 2).lower()}_{i}": {"synonyms": [f"100% material {i}"]} for i in range(90)},
        },
        "occasion": {
            "source": "catalog",
            "column": "occasions",
            "multi_label": True,
            "tags": {f"occ_{i:02d}": {"synonyms": [f"Occasion {i}", f"occ {i} wear"]} for i in range(50)},
        },
        "fit": {
            "source": "catalog",
            "none_tag": "not_applicable",
            "tags": {
                **{f"fit_{i:02d}": {"synonyms": [f"Fit {i}"]} for i in range(11)},
                "not_applicable": {"synonyms": ["n/a"]},
            },
        },
        "color": {"source": "pixels", "analyser": "colour", "tags": colours},
        "pattern": {"source": "pixels", "analyser": "pattern", "tags": patterns},
        "style": {
            "source": "rules",
            "from": "brand",
            "tags": {s: {"from": [k for k, t in brands.items() if t["_style"] == s]} for s in styles},
        },
        "silhouette": {"source": "head", "tags": {s: {} for s in silhouettes}},
    }
    return {
        "version": 1,
        "description": "bench/retag.py",
        "dimensions": dimensions,
        "_categories": categories,
    }


def v2_taxonomy(raw: dict) -> dict:
    """v1 with one more brand, whose synonyms name 1% of the catalog's brand values."""
    out = json.loads(json.dumps(raw))
    out["dimensions"]["brand"]["tags"]["b_acme"] = {"display": "Acme", "synonyms": ["Acme Corp", "ACME Corporation"]}
    out["dimensions"]["style"]["tags"]["style_00"]["from"].append("b_acme")
    return out


def write_taxonomy(raw: dict, path: Path):
    from vecflow.taxonomy import load_taxonomy

    path.write_text(json.dumps({k: v for k, v in raw.items() if not k.startswith("_")}))
    taxonomy = load_taxonomy(str(path))
    os.environ["VECFLOW_TAXONOMY_URL"] = str(path)
    return taxonomy


def measured_pool(taxonomy, seed: int = 0) -> dict:
    """Per category, analyses JSON of rendered garments (colour drawn from a skewed popularity over the
    palette, pattern plain 60% and the rest spread) and the colour and pattern drawn."""
    import numpy as np
    import torch

    from vecflow.demo.catalog import fashion_mnist
    from vecflow.demo.catalog.render import jpeg_bytes, render_tagged
    from vecflow_model.imaging import analysis_planes, decode
    from vecflow_model.measure import measure
    from vecflow_model.preprocess import SILHOUETTE

    rng = np.random.default_rng(seed)
    images, labels = fashion_mnist.load("test")
    colours, patterns = taxonomy.tags("color"), taxonomy.tags("pattern")
    colour_p = 1.0 / np.arange(1, len(colours) + 1) ** 0.8
    colour_p = rng.permutation(colour_p / colour_p.sum())
    pattern_p = np.r_[0.6, np.full(len(patterns) - 1, 0.4 / (len(patterns) - 1))]
    by_label = {tag: info["label"] for tag, info in taxonomy.dimension("category").tags.items()}
    pool = {}
    for category, label in by_label.items():
        candidates = np.flatnonzero(labels == label)
        rows = []
        while len(rows) < RENDERS_PER_CATEGORY:
            colour = colours[rng.choice(len(colours), p=colour_p)]
            pattern = patterns[rng.choice(len(patterns), p=pattern_p)]
            picture = render_tagged(images[rng.choice(candidates)], taxonomy, colour, pattern, rng)
            planes = torch.from_numpy(analysis_planes(decode(jpeg_bytes(picture, 90)))[None])
            measured = measure(planes, SILHOUETTE).analyses[0]
            if measured is not None:
                rows.append((json.dumps(measured), colour, pattern))
        pool[category] = rows
    return pool


def synthetic_chunks(n: int, raw: dict, pool: dict, planted: dict, seed: int = 0):
    """The images as Arrow tables (vector_log and vectors_clean rows) of up to CHUNK rows; what is
    planted goes into `planted`: silhouette truth and labels, brand values that name no tag."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed + 1)
    dims = raw["dimensions"]
    categories = raw["_categories"]
    brands = [(info["display"], *info["synonyms"]) for info in dims["brand"]["tags"].values()]
    brand_p = 1.0 / np.arange(1, len(brands) + 1) ** 1.1  # Zipf popularity
    brand_p /= brand_p.sum()
    materials = [info["synonyms"][0] for info in dims["material"]["tags"].values()]
    occasions = [names["synonyms"][int(i % 2)] for i, names in enumerate(dims["occasion"]["tags"].values())]
    fits = [info["synonyms"][0] for k, info in dims["fit"]["tags"].items() if k != "not_applicable"]
    silhouettes = list(dims["silhouette"]["tags"])
    # per category: a share of the materials, the silhouettes it has, its catalog names
    material_of = {c: rng.dirichlet(np.full(len(materials), 0.08)) for c in categories}
    sil_of = {c: silhouettes[i :: len(categories)] for i, c in enumerate(categories)}
    names_of = {
        c: [c, info.get("display", c), *info.get("synonyms", [])] for c, info in dims["category"]["tags"].items()
    }
    dim = 256
    basis = (
        np.random.default_rng(seed + 2).standard_normal((len(silhouettes) + len(categories), dim)).astype(np.float32)
    )
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)

    def lists(matrix):
        flat = pa.array(matrix.astype(np.float64).ravel())
        return pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)), flat)

    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        ids = [f"img{i:08d}" for i in range(start, start + size)]
        day = np.sort(rng.integers(0, DAYS, size))
        cat = rng.integers(0, len(categories), size)
        attributes, analyses, catalog_names, sil_code = [], [], [], np.empty(size, np.int64)
        brand_idx = rng.choice(len(brands), size, p=brand_p)
        brand_kind = rng.random(size)
        for i in range(size):
            category = categories[cat[i]]
            sil = sil_of[category][rng.integers(len(sil_of[category]))]
            sil_code[i] = silhouettes.index(sil)
            if brand_kind[i] < UNKNOWN_BRAND:
                brand = f"House label {rng.integers(1000)}"
                planted["unknown_brand_values"] += 1
            elif brand_kind[i] < UNKNOWN_BRAND + ACME_BRAND:
                brand = ("Acme Corp", "ACME corporation")[i % 2]
                planted["acme_values"] += 1
            else:
                names = brands[brand_idx[i]]
                brand = names[rng.integers(len(names))]
                brand = brand.upper() if rng.random() < 0.05 else brand
            row = {
                "brand": brand,
                "material": materials[rng.choice(len(materials), p=material_of[category])],
                "occasions": "|".join(rng.choice(occasions, int(rng.integers(1, 4)), replace=False)),
            }
            if category in APPAREL:
                row["fit"] = fits[rng.integers(len(fits))]
            attributes.append(json.dumps(row))
            analyses.append(pool[category][rng.integers(len(pool[category]))][0])
            names = names_of[category]
            catalog_names.append(names[rng.integers(len(names))])
        vectors = basis[sil_code] + 0.5 * basis[len(silhouettes) + cat]
        vectors += rng.standard_normal((size, dim), dtype=np.float32) * NOISE
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        labelled = rng.random(size) < LABELLED
        planted["labels"] += [(ids[i], "silhouette", silhouettes[sil_code[i]]) for i in np.flatnonzero(labelled)]
        planted["silhouette_truth"].update(zip(ids, (silhouettes[c] for c in sil_code)))
        dates = [START + dt.timedelta(days=int(d)) for d in day]
        yield pa.table(
            {
                "image_id": ids,
                "content_md5": ids,
                "dhash": np.zeros(size, np.int64),
                "source": np.array(["shop_a", "shop_b", "shop_c"])[rng.integers(0, 3, size)],
                "listed_date": dates,
                "catalog_category": catalog_names,
                "category": [categories[c] for c in cat],
                "model_version": [MODEL] * size,
                "dim": np.full(size, dim, np.int64),
                "embedding": lists(vectors),
                "embedding_norm": np.ones(size),
                "embedding_finite": np.ones(size, bool),
                "analyses": analyses,
                "attributes": attributes,
                "run_id": ["bench"] * size,
                "shard_id": np.full(size, start // CHUNK, np.int64),
                "attempt": np.ones(size, np.int64),
                "embedded_at": pa.array([dt.datetime(2026, 4, 1, tzinfo=dt.UTC)] * size, pa.timestamp("us", tz="UTC")),
                "reused": np.zeros(size, bool),
            }
        )


LOG_COLUMNS = (
    "image_id, content_md5, dhash, source, listed_date, catalog_category, category, model_version, dim, "
    "embedding, embedding_norm, embedding_finite, analyses, run_id, shard_id, attempt, embedded_at, reused"
)
CLEAN_COLUMNS = (
    "image_id, content_md5, dhash, source, listed_date, catalog_category, category, model_version, analyses, "
    "attributes, run_id, vector_run_id, shard_id, attempt"
)


def load_warehouse(warehouse, n: int, raw: dict, pool: dict) -> dict:
    """vector_log and vectors_clean as the daily runs would leave them (not timed); returns what was planted."""
    planted = {"unknown_brand_values": 0, "acme_values": 0, "labels": [], "silhouette_truth": {}}
    with warehouse.connect() as con:
        for chunk in synthetic_chunks(n, raw, pool, planted):
            con.register("chunk", chunk)
            ds = warehouse.dataset
            con.execute(f"INSERT INTO {ds}.vector_log ({LOG_COLUMNS}) SELECT {LOG_COLUMNS} FROM chunk")
            con.execute(
                f"INSERT INTO {ds}.vectors_clean ({CLEAN_COLUMNS}) SELECT "
                + CLEAN_COLUMNS.replace("vector_run_id", "run_id AS vector_run_id")
                + " FROM chunk"
            )
            con.unregister("chunk")
            print(f"  {len(chunk) + chunk['shard_id'][0].as_py() * CHUNK} images stored", flush=True)
    return planted


class Timers:
    """Seconds spent in the tagging module's steps and in each SQL file while a retag runs (the
    steps are wrapped on entry and put back on exit; nested steps count in both)."""

    STEPS = ("tag_frame", "prepare", "dimension_tags", "long_rows", "reject_rows", "embedding_matrix", "head_set")

    def __init__(self, warehouse):
        self.warehouse = warehouse
        self.seconds: dict[str, float] = {}

    def __enter__(self):
        import vecflow.tagging as tagging

        self.originals = {name: getattr(tagging, name) for name in self.STEPS}
        for name, fn in self.originals.items():
            setattr(tagging, name, self._timed(name, fn))
        for method in ("run", "query", "query_arrow"):
            setattr(self.warehouse, method, self._timed_sql(getattr(self.warehouse, method)))
        return self

    def __exit__(self, *exc):
        import vecflow.tagging as tagging

        for name, fn in self.originals.items():
            setattr(tagging, name, fn)
        for method in ("run", "query", "query_arrow"):
            delattr(self.warehouse, method)

    def _add(self, key, started):
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

    def _timed(self, name, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(f"{name}:{args[1].source}" if name == "dimension_tags" else name, started)

        return timed

    def _timed_sql(self, fn):
        def timed(name, *args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(name, *args, **kwargs)
            finally:
                self._add(f"sql:{name}", started)

        return timed

    def report(self) -> dict:
        return {k: round(v, 2) for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_retag(settings, warehouse, run_id: str) -> dict:
    from vecflow.tagging import retag

    cpu = cpu_seconds()
    with Timers(warehouse) as timers, PeakMemory() as memory:
        started = time.perf_counter()
        done = retag(settings, warehouse, run_id, MODEL)
        seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds() - cpu, 2),
        **memory.gib,
        "steps": timers.report(),
        "result": done,
    }


def check_work(warehouse, n: int, planted: dict, taxonomy, run: dict, new_brand: bool) -> dict:
    """Raises unless the retag switched image_tags to `taxonomy` for every image as planted (the
    catalog's Acme values a brand under v2 and rejects under v1)."""
    done = run["result"]
    with warehouse.connect() as con:
        ds = warehouse.dataset
        per_dim = dict(
            con.execute(
                f"SELECT dimension, COUNT(DISTINCT image_id) FROM {ds}.image_tags GROUP BY dimension"
            ).fetchall()
        )
        versions = con.execute(f"SELECT DISTINCT taxonomy_version, head_version FROM {ds}.image_tags").fetchall()
        rejects = con.execute(f"SELECT COUNT(*) FROM {ds}.rejects WHERE stage = 'tags'").fetchone()[0]
        rows = con.execute(f"SELECT COUNT(*) FROM {ds}.image_tags").fetchone()[0]
        truth = con.execute(
            f"SELECT * FROM (SELECT image_id, tag FROM {ds}.image_tags WHERE dimension = 'silhouette') "
            "USING SAMPLE 20000 ROWS"
        ).fetchall()
        acme = con.execute(
            f"SELECT COUNT(*) FROM {ds}.image_tags WHERE dimension = 'brand' AND tag = 'b_acme'"
        ).fetchone()[0]
    problems = []
    if not done["switched"] or done["images"] != n:
        problems.append(f"switched {done['switched']}, {done['images']} images of {n}")
    if versions != [(taxonomy.version, done["head_version"])] or done["head_version"] is None:
        problems.append(f"image_tags holds versions {versions}, expected {taxonomy.version} with a head set")
    for dimension in ("category", "color", "pattern", "material", "occasion", "fit"):
        if per_dim.get(dimension) != n:
            problems.append(f"{per_dim.get(dimension)} images tagged {dimension}, expected all {n}")
    rejects_expected = planted["unknown_brand_values"] + (0 if new_brand else planted["acme_values"])
    expected_brands = n - rejects_expected
    if per_dim.get("brand") != expected_brands or per_dim.get("style") != expected_brands:
        problems.append(
            f"brand {per_dim.get('brand')}, style {per_dim.get('style')} images, expected {expected_brands}"
        )
    if rejects != rejects_expected or rows != done["tag_rows"]:
        problems.append(f"{rejects} tag rejects (expected {rejects_expected}), {rows} rows of {done['tag_rows']}")
    if acme != (planted["acme_values"] if new_brand else 0):
        problems.append(f"{acme} images of the new brand, {planted['acme_values']} planted")
    right = sum(planted["silhouette_truth"][i] == t for i, t in truth) / max(len(truth), 1)
    if right < 0.6 or per_dim.get("silhouette", 0) < n // 2:
        problems.append(f"silhouette head: {per_dim.get('silhouette')} images tagged, {right:.3f} right")
    if problems:
        raise BenchmarkDidNothing("; ".join(problems))
    return {
        "tag_rows": rows,
        "images_per_dimension": per_dim,
        "tag_rejects": rejects,
        "silhouette_right": round(right, 3),
    }


def retag_size(n: int, raw: dict, pool: dict, tmp: Path) -> dict:
    import pandas as pd

    from vecflow.config import settings
    from vecflow.heads import train_heads
    from vecflow.warehouse import bootstrap
    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    os.environ["VECFLOW_MODEL_REGISTRY"] = str(tmp / f"registry-{n}")
    v1 = write_taxonomy(raw, tmp / "taxonomy-v1.json")
    warehouse = DuckDBWarehouse(tmp / f"bench-{n}.duckdb")
    bootstrap(warehouse)
    started = time.perf_counter()
    planted = load_warehouse(warehouse, n, raw, pool)
    print(f"{n} images stored in {time.perf_counter() - started:.1f} s", flush=True)
    s = settings().with_model(MODEL)
    labels = pd.DataFrame(planted["labels"], columns=["image_id", "dimension", "tag"])
    started = time.perf_counter()
    heads, report = train_heads(s, warehouse, labels, v1, MODEL)
    if heads is None:
        raise BenchmarkDidNothing(f"no silhouette head trained: {report['untrained']}")
    f1 = [t["f1"] for t in report["tags"]]
    head = {
        "labels": len(labels),
        "train_seconds": round(time.perf_counter() - started, 1),
        "published_tags": sum(t["published"] for t in report["tags"]),
        "mean_heldout_f1": round(sum(f1) / len(f1), 3),
    }
    print(f"head set: {head}", flush=True)
    runs = {}
    for name, raw_version, new_brand in (("v1_from_empty", raw, False), ("v2_over_v1", v2_taxonomy(raw), True)):
        taxonomy = write_taxonomy(raw_version, tmp / f"taxonomy-{name}.json")
        run = timed_retag(s, warehouse, f"bench-{name}")
        run["checked"] = check_work(warehouse, n, planted, taxonomy, run, new_brand)
        run["tags_in_taxonomy"] = sum(len(d.tags) for d in taxonomy.dims.values())
        print(
            json.dumps({"images": n, "retag": name, **{k: v for k, v in run.items() if k != "checked"}}, default=str),
            flush=True,
        )
        runs[name] = run
    return {"images": n, "head": head, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VECFLOW_HOME"] = str(Path(tmp) / "home")
        raw = bench_taxonomy()
        v1 = write_taxonomy(raw, Path(tmp) / "taxonomy-v1.json")
        started = time.perf_counter()
        pool = measured_pool(v1)
        print(
            f"{sum(len(p) for p in pool.values())} pictures rendered and measured in {time.perf_counter() - started:.1f} s"
        )
        sizes = [retag_size(n, raw, pool, Path(tmp)) for n in args.sizes]
    summary = {}
    for size in sizes:
        run = size["runs"]["v2_over_v1"]
        summary[size["images"]] = run["seconds"]
        print(
            f"{size['images']} images: v2 retag {run['seconds']} s wall, {run['cpu_seconds']} s CPU, peak RSS {run['peak_rss_gib']} GiB"
        )
    ratios = {}
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        ratio = large["runs"]["v2_over_v1"]["seconds"] / small["runs"]["v2_over_v1"]["seconds"]
        ratios[f"{large['images']}/{small['images']}"] = round(ratio, 2)
        print(f"{large['images'] / small['images']:.0f}x images took {ratio:.2f}x time")
    if 1_000_000 in summary:
        print(f"1M images: {summary[1_000_000]} s (goal <= {GOAL_S} s on {CORES} cores)")
    write_report(
        "retag",
        {
            "cores": CORES,
            "goal_seconds_1m": GOAL_S,
            "load_average": os.getloadavg(),
            "sizes": sizes,
            "time_ratios": ratios,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
