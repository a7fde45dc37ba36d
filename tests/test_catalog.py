"""Catalog generator: deterministic for a seed, plants what it says, validates its trend spec."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from vecflow.config import ConfigError
from vecflow.demo.catalog.generate import LABEL_SAMPLE_RATE, CatalogParams, apportion, generate
from vecflow.demo.catalog.spec import catalog_dimensions, load_trend_spec, parse_trend_spec
from vecflow.demo.catalog.world import CATEGORY_WEIGHTS, HEAD_MAPS
from vecflow.resources import DEFAULT_TREND_SPEC
from vecflow.taxonomy import load_taxonomy

PARAMS = CatalogParams(seed=3, start_date=dt.date(2026, 3, 25), days=10, images_per_day=50)


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, taxonomy):
    root = tmp_path_factory.mktemp("catalog")
    summary = generate(root, PARAMS, load_trend_spec(DEFAULT_TREND_SPEC, taxonomy), taxonomy)
    return root, summary


def _tree_digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        if path.suffix != ".parquet":  # parquet embeds writer metadata; compare its rows instead
            digest.update(path.read_bytes())
        else:
            digest.update(pd.read_parquet(path).to_csv(index=False).encode())
    return digest.hexdigest()


def test_same_seed_same_catalog(catalog, tmp_path, taxonomy):
    root, _ = catalog
    again = tmp_path / "again"
    generate(again, PARAMS, load_trend_spec(DEFAULT_TREND_SPEC, taxonomy), taxonomy)
    assert _tree_digest(root) == _tree_digest(again)


def test_other_seed_other_catalog(catalog, tmp_path, taxonomy):
    root, _ = catalog
    other = tmp_path / "other"
    generate(
        other,
        CatalogParams(4, PARAMS.start_date, PARAMS.days, PARAMS.images_per_day),
        load_trend_spec(DEFAULT_TREND_SPEC, taxonomy),
        taxonomy,
    )
    assert _tree_digest(root) != _tree_digest(other)


def test_partitions_and_planted_counts(catalog):
    root, summary = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet")
    assert len(truth) == PARAMS.days * PARAMS.images_per_day == summary["images"]
    for day in PARAMS.dates:
        manifest = pd.read_parquet(root / f"listed_date={day}" / "manifest.parquet")
        assert len(manifest) == PARAMS.images_per_day
        assert manifest["image_id"].is_unique
        assert all((root / uri).exists() for uri in manifest["uri"])
    n = PARAMS.days * PARAMS.images_per_day
    counts = truth["kind"].value_counts()
    assert counts["exact_duplicate"] == round(n * 0.03)
    assert counts["near_duplicate"] == round(n * 0.03)
    assert counts["corrupt"] == round(n * 0.01)


def test_exact_duplicates_share_bytes_and_point_to_earlier_images(catalog):
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet").set_index("image_id")
    dups = pd.read_csv(root / "truth" / "duplicates.csv")

    def data(image_id):
        return (root / f"listed_date={truth.loc[image_id, 'listed_date']}" / "images" / f"{image_id}.jpg").read_bytes()

    for row in dups.itertuples():
        assert (truth.loc[row.canonical_image_id, "listed_date"], row.canonical_image_id) < (
            truth.loc[row.image_id, "listed_date"],
            row.image_id,
        )
        same = data(row.image_id) == data(row.canonical_image_id)
        assert same == (row.kind == "exact")


def test_corrupt_files_do_not_decode(catalog):
    from PIL import Image

    root, _ = catalog
    corrupt = pd.read_csv(root / "truth" / "corrupt.csv")
    assert len(corrupt) > 0
    for row in corrupt.itertuples():
        with pytest.raises(Exception):
            Image.open(root / f"listed_date={row.listed_date}" / "images" / f"{row.image_id}.jpg").load()


def test_truth_shares_follow_the_spec(catalog):
    root, _ = catalog
    shares = pd.read_csv(root / "truth" / "tag_shares.csv")
    striped = shares[(shares["dimension"] == "pattern") & (shares["tag"] == "striped")].set_index("quarter")
    red = shares[(shares["dimension"] == "color") & (shares["tag"] == "red")].set_index("quarter")
    assert striped.loc["2026-Q2", "share"] > striped.loc["2026-Q1", "share"]
    assert red.loc["2026-Q2", "share"] < red.loc["2026-Q1", "share"]
    for (_, dimension), group in shares.groupby(["quarter", "dimension"]):
        if dimension == "occasion":  # multi-label: an image counts under each of its 1 to 3 tags
            assert 1.0 < group["share"].sum() < 3.0
        else:
            assert group["share"].sum() == pytest.approx(1.0)
    assert set(shares["dimension"]) == set(load_taxonomy().dimensions)


def _manifests(root) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted(root.glob("listed_date=*/manifest.parquet")))


def _values(dim, value) -> list[str]:
    return [] if value is None else value.split(dim.separator) if dim.multi_label else [value]


def test_catalog_columns_name_the_true_tags(catalog, taxonomy):
    """Every catalog-sourced column maps through the taxonomy's synonyms to the truth; no value is the
    none tag; a value that maps to nothing is listed in unknown_values.csv and leaves a single-label
    truth empty."""
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet").set_index("image_id")
    manifest = _manifests(root).set_index("image_id").loc[truth.index]
    unknown = pd.read_csv(root / "truth" / "unknown_values.csv")
    listed = set(zip(unknown["image_id"], unknown["dimension"], unknown["value"]))
    dims = catalog_dimensions(taxonomy)
    assert {d.column for d in dims} == {"brand", "material", "occasions", "fit"} <= set(manifest.columns)
    found_unknown = set()
    for dim in dims:
        for image_id, value, true in zip(truth.index, manifest[dim.column], truth[dim.name]):
            value, true = (None if pd.isna(v) else v for v in (value, true))
            tags = [dim.map_value(v) for v in _values(dim, value)]
            found_unknown |= {(image_id, dim.name, v) for v, t in zip(_values(dim, value), tags) if t is None}
            mapped = [t for t in tags if t is not None]
            if dim.multi_label:
                assert "|".join(sorted(mapped, key=list(dim.tags).index)) == true
                assert 1 <= len(mapped) <= 3
            elif true is None:
                assert len(tags) == 1 and tags[0] is None
            elif value is None:
                assert true == dim.none_tag
            else:
                assert mapped == [true] and true != dim.none_tag
    assert found_unknown == listed
    assert set(unknown["dimension"]) >= {"brand"}
    # the rate is 0.5%; at least one, never many
    assert 0 < (unknown["dimension"] == "brand").sum() < 0.02 * len(truth)


def test_brand_values_use_names_variants_and_misspelled_synonyms(catalog, taxonomy):
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet").set_index("image_id")
    brand = taxonomy.dimension("brand")
    written = _manifests(root).set_index("image_id").loc[truth.index, "brand"].dropna()
    true = truth.loc[written.index, "brand"]
    known = true.notna()
    display = [brand.tags[t]["display"] for t in true[known]]
    exact = written[known] == display
    variant = ~exact & np.array(
        [w.strip().replace("_", " ").casefold() == d.casefold() for w, d in zip(written[known], display)]
    )
    synonym = ~exact & ~variant
    for w, t in zip(written[known][synonym], true[known][synonym]):
        assert w in brand.tags[t]["synonyms"] and brand.map_value(w) == t
    misspelled = [w for w, t in zip(written[known][synonym], true[known][synonym]) if "Studio" not in w]
    assert misspelled  # the shipped synonyms are the brand's name with " Studio" or misspelt
    # catalog_values in the default spec: variant_rate 0.2, synonym_rate 0.1 (a variant may equal the name)
    assert 0.05 < synonym.mean() < 0.16 and 0.08 < variant.mean() < 0.25


def test_brand_popularity_is_zipf(catalog, taxonomy):
    """Brands in taxonomy order are ranks of a Zipf popularity (exponent 1 in the default spec)."""
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet")
    originals = truth[truth["kind"] == "original"]
    counts = originals["brand"].value_counts().reindex(taxonomy.tags("brand"), fill_value=0).to_numpy()
    ranks = np.arange(1, len(counts) + 1)
    expected = originals["brand"].notna().sum() / ranks / (1.0 / ranks).sum()
    assert np.abs(counts[:10] - expected[:10]).max() <= 2.5  # apportioned: tracks the plan
    slope = np.polyfit(np.log(ranks[:40]), np.log(np.maximum(counts[:40], 0.5)), 1)[0]
    assert -1.3 < slope < -0.7


def test_category_decides_fit_material_and_the_derived_truth(catalog, taxonomy):
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet")
    for category, group in truth.groupby("category"):
        assert set(group["silhouette"]) == {HEAD_MAPS["silhouette"][category]}
        assert set(group["style"]) == {taxonomy.derived("style")[category]}
        assert set(group["material"].dropna()) <= set(CATEGORY_WEIGHTS["material"][category])
        apparel = HEAD_MAPS["silhouette"][category] in ("top", "bottom", "one_piece")
        assert (group["fit"] == "not_applicable").sum() == (0 if apparel else len(group)), category
    bags = truth[truth["category"] == "bag"]["material"]
    assert (bags == "leather").mean() > 0.25


def test_labels_are_a_sample_of_originals_with_their_head_tags(catalog, taxonomy):
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet").set_index("image_id")
    labels = pd.read_csv(root / "truth" / "labels.csv")
    originals = truth[truth["kind"] == "original"]
    assert set(labels["dimension"]) == {d.name for d in taxonomy.by_source("head")} == {"silhouette"}
    assert len(labels) == round(LABEL_SAMPLE_RATE * len(originals)) and labels["image_id"].is_unique
    assert labels["image_id"].isin(originals.index).all()
    assert (labels["tag"].to_numpy() == originals.loc[labels["image_id"], "silhouette"].to_numpy()).all()
    assert labels["tag"].nunique() >= 3  # a random sample, not one category's


def test_apportion_sums_per_day_and_tracks_expected_totals():
    rng = np.random.default_rng(0)
    shares = rng.dirichlet(np.ones(5), size=30)
    totals = rng.integers(5, 40, size=30)
    counts = apportion(shares * totals[:, None], totals)
    assert (counts.sum(axis=1) == totals).all()
    assert (counts >= 0).all()
    assert np.abs(counts.cumsum(axis=0) - (shares * totals[:, None]).cumsum(axis=0)).max() < 1.0 + 1e-9


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"trends": [{"dimension": "pattern", "tag": "plaid", "from_share": 0.1, "to_share": 0.2}]}, "tag"),
        ({"trends": [{"dimension": "fabric", "tag": "x", "from_share": 0.1, "to_share": 0.2}]}, "dimension"),
        ({"trends": [{"dimension": "color", "tag": "red", "from_share": 1.5, "to_share": 0.2}]}, "from_share"),
        ({"trends": [{"dimension": "color", "tag": "red", "to_share": 0.2}]}, "from_share"),
        ({"corrupt_rate": "lots"}, "corrupt_rate"),
        ({"trend": []}, "unknown field"),
        ({"trends": [{"dimension": "color", "tag": "red", "from_share": 0.1, "to_share": 0.2, "in": 1}]}, "unknown"),
        (
            {
                "trends": [
                    {"dimension": "color", "tag": "red", "from_share": 0.1, "to_share": 0.2, "within": {"brand": "x"}}
                ]
            },
            "within",
        ),
        (
            {
                "trends": [
                    {
                        "dimension": "color",
                        "tag": "red",
                        "from_share": 0.1,
                        "to_share": 0.2,
                        "within": {"category": "hat"},
                    }
                ]
            },
            "within.category",
        ),
        (
            {
                "trends": [
                    {
                        "dimension": "category",
                        "tag": "bag",
                        "from_share": 0.1,
                        "to_share": 0.2,
                        "within": {"category": "bag"},
                    }
                ]
            },
            "cannot be planted within",
        ),
        (
            {
                "trends": [
                    {
                        "dimension": "color",
                        "tag": "red",
                        "from_share": 0.1,
                        "to_share": 0.2,
                        "within": {"source": "shop_a"},
                    },
                    {
                        "dimension": "color",
                        "tag": "blue",
                        "from_share": 0.1,
                        "to_share": 0.2,
                        "within": {"category": "bag"},
                    },
                ]
            },
            "one key per dimension",
        ),
        (
            {"trends": [{"dimension": "silhouette", "tag": "top", "from_share": 0.1, "to_share": 0.2}]},
            "dimension='silhouette' must be one of",
        ),
        (
            {
                "trends": [
                    {
                        "dimension": "material",
                        "tag": "linen",
                        "from_share": 0.1,
                        "to_share": 0.2,
                        "within": {"category": "bag"},
                    }
                ]
            },
            "never occur",
        ),
        (
            {
                "trends": [
                    {"dimension": "occasion", "tag": t, "from_share": 0.1, "to_share": 0.2}
                    for t in ["work", "casual", "party", "sport", "travel", "wedding", "beach"]
                ]
            },
            "unplanted tags",
        ),
        ({"zipf": {"material": 1.0}}, "zipf.material"),
        ({"zipf": {"brand": -1}}, "zipf.brand"),
        ({"catalog_values": {"typo_rate": 0.1}}, "catalog_values"),
        ({"catalog_values": {"synonym_rate": 0.7, "variant_rate": 0.7}}, "catalog_values rates sum"),
    ],
)
def test_malformed_trend_spec_names_the_field(raw, field, taxonomy):
    with pytest.raises(ConfigError, match=field):
        parse_trend_spec(raw, taxonomy)


def test_unreadable_trend_spec_is_a_clear_error(tmp_path, taxonomy):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_trend_spec(bad, taxonomy)
    with pytest.raises(ConfigError, match="does not exist"):
        load_trend_spec(tmp_path / "missing.json", taxonomy)


def test_default_spec_is_valid(taxonomy):
    spec = load_trend_spec(DEFAULT_TREND_SPEC, taxonomy)
    assert {(t.dimension, t.tag, t.facet) for t in spec.trends} == {
        ("pattern", "striped", ""),
        ("color", "red", ""),
        ("color", "blue", "category=dress"),
        ("category", "bag", "source=shop_b"),
        ("material", "linen", ""),
        ("occasion", "party", ""),
    }
    assert taxonomy.dimension("material").source == "catalog" and taxonomy.dimension("occasion").multi_label
    assert spec.zipf == {"brand": 1.0}
    assert json.loads(DEFAULT_TREND_SPEC.read_text())["corrupt_rate"] == spec.corrupt_rate


def test_a_trend_planted_within_a_facet_moves_there_and_barely_in_the_catalog(tmp_path, taxonomy):
    spec = parse_trend_spec(
        {
            "trends": [
                {
                    "dimension": "pattern",
                    "tag": "dotted",
                    "within": {"source": "shop_b"},
                    "from_share": 0.05,
                    "to_share": 0.8,
                }
            ]
        },
        taxonomy,
    )
    generate(tmp_path, CatalogParams(5, dt.date(2026, 1, 1), 40, 40), spec, taxonomy)
    truth = pd.read_parquet(tmp_path / "truth" / "images.parquet")
    originals = truth[truth["kind"] == "original"]
    first, last = (
        originals[originals["listed_date"] < dt.date(2026, 1, 11)],
        originals[originals["listed_date"] >= dt.date(2026, 1, 31)],
    )

    def dotted(frame):
        return (frame["pattern"] == "dotted").mean()

    at_b = [dotted(f[f["source"] == "shop_b"]) for f in (first, last)]
    elsewhere = [dotted(f[f["source"] != "shop_b"]) for f in (first, last)]
    assert at_b[0] < 0.2 and at_b[1] > 0.6  # planted: 0.05 -> 0.8 over the range at shop_b
    assert abs(elsewhere[1] - elsewhere[0]) < 0.1  # the other sources keep an even split (0.25)
    assert json.loads((tmp_path / "truth" / "params.json").read_text())["spec"]["trends"][0]["within"] == {
        "source": "shop_b"
    }


def test_planted_material_and_occasion_trends_are_realised(catalog, taxonomy):
    """linen rises among the categories that have it (0.05 -> 0.35), `party` among all images (0.15 ->
    0.45, multi-label: the other occasions keep their share), both apportioned day by day."""
    root, _ = catalog
    truth = pd.read_parquet(root / "truth" / "images.parquet")
    originals = truth[truth["kind"] == "original"]
    days = pd.to_datetime(originals["listed_date"])
    first, last = (
        originals[days < days.min() + pd.Timedelta(days=3)],
        originals[days > days.max() - pd.Timedelta(days=3)],
    )
    linen_categories = [c for c, weights in CATEGORY_WEIGHTS["material"].items() if "linen" in weights]

    def linen(frame):
        return (frame[frame["category"].isin(linen_categories)]["material"] == "linen").mean()

    def occasion(frame, tag):
        return frame["occasion"].str.split("|").apply(lambda tags: tag in tags).mean()

    # progress over the 10 days: the first 3 average 1/9, the last 3 average 8/9
    assert linen(first) == pytest.approx(0.05 + 0.30 / 9, abs=0.04)
    assert linen(last) == pytest.approx(0.05 + 0.30 * 8 / 9, abs=0.04)
    assert (originals[~originals["category"].isin(linen_categories)]["material"] != "linen").all()
    assert occasion(first, "party") == pytest.approx(0.15 + 0.30 / 9, abs=0.04)
    assert occasion(last, "party") == pytest.approx(0.15 + 0.30 * 8 / 9, abs=0.04)
    for tag in set(taxonomy.tags("occasion")) - {"party"}:  # each of 1.5 others drawn from 7
        assert occasion(first, tag) == pytest.approx(1.5 / 7, abs=0.06)
        assert occasion(last, tag) == pytest.approx(1.5 / 7, abs=0.06)


def test_the_taxonomy_is_part_of_the_catalog_identity(taxonomy):
    from vecflow.demo.catalog.generate import catalog_identity
    from vecflow.taxonomy import parse_taxonomy

    spec = load_trend_spec(DEFAULT_TREND_SPEC, taxonomy)
    other = parse_taxonomy(taxonomy.raw, version="another")
    assert catalog_identity(PARAMS, spec, taxonomy) != catalog_identity(PARAMS, spec, other)


def test_a_dimension_the_generator_cannot_plant_is_named(tmp_path, taxonomy):
    import copy

    from vecflow.taxonomy import parse_taxonomy

    raw = copy.deepcopy(taxonomy.raw)
    raw["dimensions"]["collar"] = {"source": "head", "tags": {"round": {}, "v_neck": {}}}
    with pytest.raises(ConfigError, match="cannot plant dimension 'collar'"):
        generate(tmp_path, PARAMS, load_trend_spec(DEFAULT_TREND_SPEC, taxonomy), parse_taxonomy(raw))
    raw = copy.deepcopy(taxonomy.raw)
    del raw["dimensions"]["material"]["tags"]["leather"]
    with pytest.raises(ConfigError, match="material tags \\['leather'\\]"):
        generate(tmp_path, PARAMS, load_trend_spec(DEFAULT_TREND_SPEC, taxonomy), parse_taxonomy(raw))
