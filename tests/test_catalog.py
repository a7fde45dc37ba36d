"""Catalog generator: deterministic for a seed, plants what it says, validates its trend spec."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from vecflow.config import ConfigError
from vecflow.demo.catalog.generate import CatalogParams, apportion, generate
from vecflow.demo.catalog.spec import load_trend_spec, parse_trend_spec
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
    for _, group in shares.groupby(["quarter", "dimension"]):
        assert group["share"].sum() == pytest.approx(1.0)


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
    }
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
