"""Every warehouse SQL step on small hand-made tables, with exact expected outputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from warehouse_rows import D1, D2, analyses, catalog, load, row, tag_partition, unit

from vecflow.clean import clean_partition
from vecflow.config import ConfigError, settings
from vecflow.demo.truth import adjusted_p_values
from vecflow.funnel import record_sql_funnel, replace_rejects, replace_stage_funnel, stage_counts
from vecflow.index.build import build_day_indexes
from vecflow.tags import compute_trends
from vecflow.taxonomy import load_taxonomy

pytestmark = pytest.mark.usefixtures("model_m1")


def by_id(frame: pd.DataFrame, column: str) -> dict:
    return dict(zip(frame["image_id"], frame[column]))


def test_validate_rejects_each_bad_vector_with_its_reason(warehouse):
    load(
        warehouse,
        [
            row("ok", D1),
            row("short", D1, embedding=unit(1, 128)),
            row("nan", D1, embedding=[math.nan] + unit(2)[1:]),
            row("zero", D1, embedding=[0.0] * 256),
            row("big", D1, embedding=[x * 3 for x in unit(3)]),
            row("alien", D1, category="spaceship"),
            row("nomodel", D1, model_version=None),
        ],
        D1,
    )
    clean_partition(settings(), warehouse, D1, "run-1")
    rejects = warehouse.table("rejects")
    assert by_id(rejects, "reason") == {
        "short": "wrong_dim",
        "nan": "non_finite",
        "zero": "zero_norm",
        "big": "bad_norm",
        "alien": "unknown_category",
        "nomodel": "missing_model_version",
    }
    assert set(rejects["stage"]) == {"validate"}
    assert warehouse.table("vectors_clean")["image_id"].tolist() == ["ok"]


def test_exact_dedup_within_day_and_against_earlier_days(warehouse):
    load(warehouse, [row("a1", D1, md5="A"), row("b1", D1, md5="B"), row("a2", D1, md5="A")], D1)
    clean_partition(settings(), warehouse, D1, "run-1")
    load(
        warehouse, [row("a3", D2, md5="A"), row("c1", D2, md5="C"), row("b2", D2, md5="B"), row("c0", D2, md5="C")], D2
    )
    clean_partition(settings(), warehouse, D2, "run-1")
    dedup = warehouse.table("dedup_map")
    assert by_id(dedup, "canonical_image_id") == {"a2": "a1", "a3": "a1", "b2": "b1", "c1": "c0"}
    assert set(dedup["reason"]) == {"md5"}
    clean = warehouse.table("vectors_clean")
    assert sorted(clean["image_id"]) == ["a1", "b1", "c0"]


def flip(value: int, *bits: int) -> int:
    """value (a signed INT64) with the given bit positions flipped."""
    flipped = (value & (2**64 - 1)) ^ sum(1 << b for b in bits)
    return flipped - 2**64 if flipped >= 2**63 else flipped


def near(signature: list[float], cosine: float, seed: int) -> list[float]:
    """A unit vector with the given cosine to `signature`."""
    base = np.asarray(signature)
    other = np.random.default_rng(seed).normal(size=base.size)
    other -= other @ base * base
    other /= np.linalg.norm(other)
    return (cosine * base + math.sqrt(1 - cosine**2) * other).tolist()


H0 = -0x2F3A_5C7E_91B4_D608  # negative: band extraction must not depend on the sign bit
S0 = unit(99, 128)


def test_near_dedup_by_dhash_and_edge_signature(warehouse):
    # default settings: Hamming <= 5 bits and edge cosine >= 0.96, lookback 90 days
    load(
        warehouse,
        [
            row("n0", D1, dhash=H0, edge_signature=S0),
            row("n1", D1, dhash=flip(H0, 0, 17, 63), edge_signature=near(S0, 0.99, 1)),  # 3 bits
            row(
                "n3", D1, dhash=flip(H0, 0, 17, 63, 30, 44, 51), edge_signature=near(S0, 0.98, 2)
            ),  # 6 from n0, 3 from n1
            row("far", D1, dhash=flip(H0, *range(0, 64, 9)), edge_signature=S0),  # 8 bits
            row("lookalike", D1, dhash=flip(H0, 5), edge_signature=near(S0, 0.9, 3)),  # other garment, same hash
            row("z-copy", D1, md5="md5-n0", dhash=H0, edge_signature=S0),  # exact: md5 wins
        ],
        D1,
    )
    clean_partition(settings(), warehouse, D1, "run-1")
    load(
        warehouse,
        [
            row("n2", D2, dhash=flip(H0, 40), edge_signature=near(S0, 0.97, 4)),
            row("new", D2, dhash=flip(H0, 1, 2, 3, 4, 5, 6, 7), edge_signature=S0),
        ],
        D2,
    )
    clean_partition(settings(), warehouse, D2, "run-1")
    dedup = warehouse.table("dedup_map")
    assert set(zip(dedup["image_id"], dedup["canonical_image_id"], dedup["reason"])) == {
        ("n1", "n0", "dhash"),
        ("n3", "n0", "dhash"),
        ("z-copy", "n0", "md5"),
        ("n2", "n0", "dhash"),
    }
    assert sorted(warehouse.table("vectors_clean")["image_id"]) == ["far", "lookalike", "n0", "new"]


def test_near_dedup_looks_back_only_as_far_as_configured(warehouse, monkeypatch):
    monkeypatch.setenv("VECFLOW_NEAR_DUP_LOOKBACK_DAYS", "2")  # D2 is three days after D1
    load(warehouse, [row("n0", D1, dhash=H0, edge_signature=S0)], D1)
    clean_partition(settings(), warehouse, D1, "run-1")
    load(warehouse, [row("n2", D2, dhash=H0, edge_signature=S0)], D2)
    clean_partition(settings(), warehouse, D2, "run-1")
    assert warehouse.table("dedup_map").empty
    monkeypatch.setenv("VECFLOW_NEAR_DUP_LOOKBACK_DAYS", "3")
    clean_partition(settings(), warehouse, D2, "run-1")
    assert by_id(warehouse.table("dedup_map"), "canonical_image_id") == {"n2": "n0"}


def test_an_image_listed_twice_in_a_run_keeps_its_latest_embedding(warehouse):
    load(warehouse, [row("x", D1, color="red", at="2026-05-01T00:00:00Z")], D1, shard_id=0)
    load(warehouse, [row("x", D1, color="blue", at="2026-05-01T00:05:00Z", shard_id=1)], D1, shard_id=1)
    clean_partition(settings(), warehouse, D1, "run-1")
    assert warehouse.table("vectors_clean")["analyses"].tolist() == [analyses("blue", "solid", "dress")]


def test_latest_attempt_and_latest_run_win(warehouse):
    load(warehouse, [row("x", D1, attempt=1, color="red")], D1, attempt=1)
    load(warehouse, [row("x", D1, attempt=2, color="blue")], D1, attempt=2)
    load(warehouse, [row("x", D1, attempt=2, color="blue")], D1, attempt=2)  # the same load retried
    assert len(warehouse.table("vector_log")) == 2
    clean_partition(settings(), warehouse, D1, "run-1")
    assert warehouse.table("vectors_clean")["analyses"].tolist() == [analyses("blue", "solid", "dress")]
    load(warehouse, [row("x", D1, run_id="run-2", color="green", at="2026-05-02T00:00:00Z")], D1, run_id="run-2")
    clean_partition(settings(), warehouse, D1, "run-2")
    clean = warehouse.table("vectors_clean")
    assert clean["analyses"].tolist() == [analyses("green", "solid", "dress")] and clean["run_id"].tolist() == ["run-2"]


def test_clean_is_idempotent(warehouse):
    load(warehouse, [row("a1", D1, md5="A"), row("a2", D1, md5="A"), row("bad", D1, embedding=[0.0] * 256)], D1)
    snapshots = []
    for _ in range(2):
        clean_partition(settings(), warehouse, D1, "run-1")
        snapshots.append(
            {
                t: warehouse.table(t).sort_values("image_id").to_csv(index=False)
                for t in ("vectors_clean", "dedup_map", "rejects")
            }
        )
    assert snapshots[0] == snapshots[1]


def test_every_dimension_is_tagged_in_long_form_and_unknown_values_are_rejects(warehouse):
    """The shipped taxonomy's sources: catalog columns through synonyms (a misspelt brand, `Linen`),
    multi-label occasions, fit's none tag for a bag, pixels from the job's measurements, style by
    rules, and silhouette (a head) untagged while no head set is trained."""
    brands = load_taxonomy().dimension("brand").tags
    # a brand as a catalog misspells it, in capitals
    brand, misspelt = next((k, n) for k, info in brands.items() for n in info["synonyms"] if "Studio" not in n)
    attributes = [
        json.dumps({"brand": misspelt.upper(), "material": "Flax", "occasions": "Work|party", "fit": "Skinny"}),
        json.dumps({"brand": "Acme Corp", "material": "leather", "occasions": "beach|Disco"}),
    ]
    catalog(warehouse, D1, ["i1", "i2"], category=["Jackets", "bag"], attributes=attributes)
    load(
        warehouse,
        [
            row("i1", D1, color="red", pattern="striped", category="coat"),
            row("i2", D1, color="grey", pattern="solid", category="bag"),
        ],
        D1,
    )
    clean_partition(settings(), warehouse, D1, "run-1")
    stats = tag_partition(warehouse, D1, "run-1", "m1")
    tags = warehouse.table("image_tags")
    got = set(zip(tags["image_id"], tags["dimension"], tags["tag"], tags["tag_source"]))
    expected = {
        ("i1", "category", "coat", "catalog"),
        ("i1", "color", "red", "pixels"),
        ("i1", "pattern", "striped", "pixels"),
        ("i1", "style", "outerwear", "rules"),
        ("i1", "material", "linen", "catalog"),
        ("i1", "occasion", "work", "catalog"),
        ("i1", "occasion", "party", "catalog"),
        ("i1", "fit", "slim", "catalog"),
        ("i1", "brand", brand, "catalog"),
        ("i2", "category", "bag", "catalog"),
        ("i2", "color", "grey", "pixels"),
        ("i2", "pattern", "solid", "pixels"),
        ("i2", "style", "accessory", "rules"),
        ("i2", "material", "leather", "catalog"),
        ("i2", "occasion", "beach", "catalog"),
        ("i2", "fit", "not_applicable", "catalog"),
    }
    assert got == expected
    assert set(tags["taxonomy_version"]) == {load_taxonomy().version}
    rejects = warehouse.table("rejects").sort_values("detail")
    assert rejects[["image_id", "stage", "reason"]].values.tolist() == [["i2", "tags", "unknown_tag"]] * 2
    assert any("'Acme Corp'" in d for d in rejects["detail"]) and any("'Disco'" in d for d in rejects["detail"])
    assert stats["untagged"]["silhouette"] == 2


def test_catalog_values_come_from_the_warehouse_as_lists_numbers_or_whole_attributes(warehouse, tmp_path, monkeypatch):
    """What select_tagging_rows.sql extracts with JSON_QUERY, on both warehouses: a multi-label value
    given as a JSON list (nulls and blanks in it skipped), a number, an explicit null; an attribute key
    that is no plain JSONPath name, read from the whole attributes; an analysis with a NaN hue."""
    raw = json.loads(json.dumps(load_taxonomy().raw))
    raw["dimensions"]["fit"]["column"] = "Fit Type"
    raw["dimensions"]["size"] = {"source": "catalog", "tags": {"eu_42": {"synonyms": ["42"]}, "eu_44": {}}}
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", str(path))
    attributes = [
        json.dumps({"occasions": ["Work", "party", None, " "], "Fit Type": "Skinny", "size": 42}),
        json.dumps({"occasions": "beach|Disco", "Fit Type": None, "size": 7}),
        None,
    ]
    catalog(warehouse, D1, ["i1", "i2", "i3"], attributes=attributes)
    white = row("i3", D1, color="white")
    measured = json.loads(white["analyses"])
    measured["colour"]["hue"] = float("nan")  # as the job writes a colourless garment's hue
    white["analyses"] = json.dumps(measured)
    load(warehouse, [row("i1", D1), row("i2", D1), white], D1)
    clean_partition(settings(), warehouse, D1, "run-1")
    tag_partition(warehouse, D1, "run-1", "m1")
    tags = warehouse.table("image_tags")
    got = {(i, d): set(g["tag"]) for (i, d), g in tags.groupby(["image_id", "dimension"])}
    assert got[("i1", "occasion")] == {"work", "party"} and got[("i2", "occasion")] == {"beach"}
    assert got[("i1", "fit")] == {"slim"} and got[("i2", "fit")] == got[("i3", "fit")] == {"not_applicable"}
    assert got[("i1", "size")] == {"eu_42"} and ("i2", "size") not in got and ("i3", "size") not in got
    assert got[("i3", "color")] == {"white"}
    rejects = warehouse.table("rejects")
    assert sorted(rejects["detail"]) == [
        "occasion='Disco' names no occasion tag (catalog occasions)",
        "size=7 names no size tag (catalog size)",
    ]
    assert set(rejects["image_id"]) == {"i2"}


def _trend_rows(warehouse, striped_by_day: dict, n: int = 40, occasions=None) -> None:
    """image_tags (the trends' input, as the tagging step writes it) of n images a day, all red,
    `striped_by_day[day]` of them striped, the rest solid; dresses at shop_a, coats at shop_b, in turn
    (style from the category); `occasions(i)`: the occasion tags (multi-label) of the day's i-th image."""
    style = load_taxonomy().derived("style")
    rows = []
    for day, striped in striped_by_day.items():
        for i in range(n):
            category = ("dress", "coat")[i % 2]
            image = {"image_id": f"{day:%m%d}-{i}", "listed_date": day, "source": ("shop_a", "shop_b")[i % 2]}
            tags = [
                ("category", category),
                ("style", style[category]),
                ("color", "red"),
                ("pattern", "striped" if i < striped else "solid"),
                *(("occasion", occasion) for occasion in (occasions(i) if occasions else ())),
            ]
            rows += [{**image, "dimension": dimension, "tag": tag} for dimension, tag in tags]
    frame = pd.DataFrame(rows).assign(confidence=1.0, tag_source="catalog", run_id="run-1")
    warehouse.run("replace_table", rows=frame, names={"table": "image_tags", "columns": list(frame.columns)})


def _reference_adjusted(trends: pd.DataFrame, correction: str) -> pd.Series:
    """p_adjusted of each tested row, by the textbook: Bonferroni p x m; Benjamini-Hochberg with the
    p-values of a period's m tests sorted, p(k) x m / k, then the running minimum from the largest."""
    out = pd.Series(np.nan, index=trends.index)
    for _, family in trends[trends["p_value"].notna()].groupby(["period_kind", "period_start"]):
        m = len(family)
        assert (family["tests_in_period"] == m).all()
        if correction == "bonferroni":
            out[family.index] = (family["p_value"] * m).clip(upper=1.0)
            continue
        ordered = family["p_value"].sort_values(kind="stable")
        running = 1.0
        for k in range(m, 0, -1):
            running = min(running, ordered.iloc[k - 1] * m / k)
            out[ordered.index[k - 1]] = running
    return out


def test_tag_trends_shares_tests_and_directions_by_period_and_facet(warehouse):
    _trend_rows(warehouse, {D1: 10, D2: 30})
    trend_settings = dataclasses.replace(settings().trends, min_coverage=0.0)
    movers = compute_trends(warehouse, trend_settings, load_taxonomy())
    trends = warehouse.table("tag_trends").set_index(["period_kind", "period", "facet", "dimension", "tag"])
    striped = trends.loc[("quarter", "2026-Q2", "", "pattern", "striped")]
    assert striped["tag_count"] == 30 and striped["dimension_total"] == 40
    assert striped["share"] == pytest.approx(0.75) and striped["previous_share"] == pytest.approx(0.25)
    assert striped["share_change"] == pytest.approx(0.5)
    z = 0.5 / math.sqrt(0.5 * 0.5 * (2 / 40))  # pooled two-proportion test
    assert striped["z_score"] == pytest.approx(z)
    assert striped["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)), abs=1.5e-7)  # A&S 7.1.26
    table = warehouse.table("tag_trends")
    assert trend_settings.correction == "bh"  # the default
    assert table["p_adjusted"].to_numpy() == pytest.approx(_reference_adjusted(table, "bh").to_numpy(), nan_ok=True)
    half_width = trend_settings.z_interval * math.sqrt(0.75 * 0.25 / 40 + 0.25 * 0.75 / 40)
    assert (striped["change_low"], striped["change_high"]) == pytest.approx((0.5 - half_width, 0.5 + half_width))
    assert striped["direction"] == "rising"
    solid = trends.loc[("quarter", "2026-Q2", "", "pattern", "solid")]
    assert solid["direction"] == "falling"
    assert {striped["mover_rank"], solid["mover_rank"]} == {1, 2}  # the same size of change, by tag
    assert trends.loc[("quarter", "2026-Q2", "", "pattern", "dotted"), "direction"] == "flat"  # 0 -> 0
    assert trends.loc[("quarter", "2026-Q1", "", "pattern", "striped"), "direction"] == "new"
    assert pd.isna(striped["year_ago_share"])  # no history a year back
    # months: March against nothing, April against March (adjacent periods)
    assert trends.loc[("month", "2026-04", "", "pattern", "striped"), "previous_share"] == pytest.approx(0.25)
    # facets: within category=dress (shop_a) the 20 dresses have stripes 5 -> 15; no category or style
    # trends inside a category facet
    dress = trends.xs("category=dress", level="facet")
    assert set(dress.index.get_level_values("dimension")) == {"color", "pattern"}
    assert dress.loc[("quarter", "2026-Q2", "pattern", "striped"), ["tag_count", "dimension_total"]].tolist() == [
        15,
        20,
    ]
    assert trends.loc[("quarter", "2026-Q2", "source=shop_b", "category", "coat"), "share"] == pytest.approx(1.0)
    pair = trends.loc[("quarter", "2026-Q2", "category=coat,source=shop_b", "pattern", "striped")]
    assert pair["facet_keys"] == "category,source"
    assert (pair["tag_count"], pair["dimension_total"]) == (15, 20)
    # the same change in a facet of 20 is less certain than in the catalog of 40
    assert dress.loc[("quarter", "2026-Q2", "pattern", "striped"), "p_value"] > striped["p_value"]
    assert set(movers["direction"]) == {"rising", "falling"} and "" in set(movers["facet"])
    latest = warehouse.query("select_table", names={"table": "v_tag_trends_latest"})
    assert set(zip(latest["period_kind"], latest["period"])) == {("quarter", "2026-Q2"), ("month", "2026-04")}


def test_a_period_barely_begun_is_insufficient(warehouse):
    # D1 and D2 cover 2 of Q1's 90 days and 2 of Q2's 91: under the default minimum coverage
    _trend_rows(warehouse, {D1: 10, D2: 30})
    compute_trends(warehouse, settings().trends, load_taxonomy())
    trends = warehouse.table("tag_trends")
    latest = trends[(trends["period_kind"] == "quarter") & (trends["period"] == "2026-Q2")]
    assert set(latest["direction"]) == {"insufficient"} and latest["partial"].all()
    assert latest["coverage"].iloc[0] == pytest.approx(2 / 91)  # Apr 1 .. Apr 2, the end of the catalog
    # the analysts' latest periods are the last ones with enough days to be tested
    view = warehouse.query("select_table", names={"table": "v_tag_trends_latest"})
    assert set(zip(view["period_kind"], view["period"])) == {("quarter", "2026-Q1"), ("month", "2026-03")}


def test_a_period_is_compared_with_the_same_period_a_year_before(warehouse):
    a_year_before = dt.date(2025, 4, 2)
    _trend_rows(warehouse, {a_year_before: 10, D2: 30})
    compute_trends(warehouse, dataclasses.replace(settings().trends, min_coverage=0.0), load_taxonomy())
    trends = warehouse.table("tag_trends").set_index(["period_kind", "period", "facet", "dimension", "tag"])
    for kind, period in (("quarter", "2026-Q2"), ("month", "2026-04")):
        striped = trends.loc[(kind, period, "", "pattern", "striped")]
        assert striped["direction"] == "new"  # nothing in the period just before
        assert striped["year_ago_share"] == pytest.approx(0.25)
        assert striped["year_ago_change"] == pytest.approx(0.5)
        assert striped["year_ago_direction"] == "rising" and striped["year_ago_p_adjusted"] < 0.05
    assert pd.isna(trends.loc[("quarter", "2025-Q2", "", "pattern", "striped"), "year_ago_direction"])


def test_benjamini_hochberg_finds_a_mover_bonferroni_does_not(warehouse):
    # stripes 5 -> 15 of the 20 dresses (p 0.0016) among a period's 100-odd tests: under Bonferroni's
    # p x m, over alpha; under Benjamini-Hochberg, the few other small p-values (the whole catalog's
    # stripes, the coats') lift its rank and its adjusted p-value falls under alpha
    _trend_rows(warehouse, {D1: 10, D2: 30})
    found = {}
    for correction in ("bh", "bonferroni"):
        trend_settings = dataclasses.replace(settings().trends, min_coverage=0.0, correction=correction)
        compute_trends(warehouse, trend_settings, load_taxonomy())
        trends = warehouse.table("tag_trends")
        tested = trends["p_value"].notna()
        assert tested.sum() > 100
        reference = _reference_adjusted(trends, correction)
        assert trends.loc[tested, "p_adjusted"].to_numpy() == pytest.approx(reference[tested].to_numpy())
        assert trends.loc[~tested, "p_adjusted"].isna().all()
        # the demo oracle's own adjustment (it reports false movers under both corrections) agrees
        oracle = adjusted_p_values(trends[tested], correction)
        assert oracle.to_numpy() == pytest.approx(trends.loc[tested, "p_adjusted"].to_numpy())
        found[correction] = trends.set_index(["period_kind", "period", "facet", "dimension", "tag"]).sort_index()
    dress = ("quarter", "2026-Q2", "category=dress", "pattern", "striped")
    bh, bonferroni = found["bh"].loc[dress], found["bonferroni"].loc[dress]
    assert bh["p_value"] == bonferroni["p_value"]  # the same test, corrected two ways
    assert bonferroni["p_adjusted"] > 0.05 and bonferroni["direction"] == "flat"
    assert bh["p_adjusted"] < 0.05 and bh["direction"] == "rising"
    # Benjamini-Hochberg never adjusts a p-value above Bonferroni's, and finds every mover it finds
    tested = found["bh"]["p_value"].notna()
    assert (found["bh"]["p_adjusted"][tested] <= found["bonferroni"]["p_adjusted"][tested] + 1e-12).all()
    movers = {c: set(f.index[f["direction"].isin(["rising", "falling"])]) for c, f in found.items()}
    assert movers["bonferroni"] < movers["bh"]
    with pytest.raises(ConfigError, match="VECFLOW_TREND_CORRECTION"):
        compute_trends(warehouse, dataclasses.replace(settings().trends, correction="holm"), load_taxonomy())


def test_the_year_ago_comparison_is_corrected_the_same_way(warehouse):
    _trend_rows(warehouse, {dt.date(2025, 4, 2): 10, D2: 30})
    year_ago = {}
    for correction in ("bh", "bonferroni"):
        trend_settings = dataclasses.replace(settings().trends, min_coverage=0.0, correction=correction)
        compute_trends(warehouse, trend_settings, load_taxonomy())
        trends = warehouse.table("tag_trends").set_index(["period_kind", "period", "facet", "dimension", "tag"])
        year_ago[correction] = trends["year_ago_p_adjusted"].sort_index()
    tested = year_ago["bh"].notna()
    assert tested.any() and (year_ago["bonferroni"].notna() == tested).all()
    assert (year_ago["bh"][tested] <= year_ago["bonferroni"][tested] + 1e-12).all()
    assert (year_ago["bh"][tested] < year_ago["bonferroni"][tested]).any()


def test_a_facet_on_a_multi_label_dimension_counts_an_image_under_each_tag(warehouse):
    # every image is for parties; every 4th also for work (10 of each day's 40), 8 of those striped
    # on the later day; occasion is multi-label: 50 occasion rows for 40 images a day
    assert load_taxonomy().dimension("occasion").multi_label
    _trend_rows(warehouse, {D1: 10, D2: 30}, occasions=lambda i: ["party", "work"] if i % 4 == 0 else ["party"])
    facets = (("occasion",), ("occasion", "source"), ("category",))
    compute_trends(warehouse, dataclasses.replace(settings().trends, min_coverage=0.0, facets=facets), load_taxonomy())
    trends = (
        warehouse.table("tag_trends").set_index(["period_kind", "period", "facet", "dimension", "tag"]).sort_index()
    )
    q2 = trends.xs(("quarter", "2026-Q2"), level=["period_kind", "period"])

    def counts(facet, dimension, tag):
        return tuple(q2.loc[(facet, dimension, tag), ["tag_count", "dimension_total"]])

    # shares of a multi-label dimension are per image: images with the tag / images with the dimension
    assert counts("", "occasion", "party") == (40, 40) and counts("", "occasion", "work") == (10, 40)
    assert q2.loc[("", "occasion"), "share"].sum() == pytest.approx(1.25)
    assert counts("category=dress", "occasion", "work") == (10, 20)  # i % 4 == 0 are dresses
    # an image counts in the facet of each of its occasions, and once in the whole catalog
    assert counts("occasion=party", "pattern", "striped") == (30, 40)
    assert counts("occasion=work", "pattern", "striped") == (8, 10)
    assert counts("", "pattern", "striped") == (30, 40)
    assert counts("occasion=work,source=shop_a", "pattern", "striped") == (8, 10)
    assert counts("occasion=party,source=shop_b", "pattern", "solid") == (5, 20)
    assert "occasion" not in set(q2.xs("occasion=work", level="facet").index.get_level_values("dimension"))
    assert trends.loc[("quarter", "2026-Q2", "occasion=work", "pattern", "striped"), "facet_keys"] == "occasion"
    assert trends.loc[("quarter", "2026-Q2", "occasion=party", "pattern", "striped"), "direction"] == "rising"


def test_a_change_that_is_not_significant_is_flat(warehouse):
    # a change of 2 in 40 (+0.05, over the minimum effect) is not significant after the correction
    trend_settings = dataclasses.replace(settings().trends, min_coverage=0.0)
    _trend_rows(warehouse, {D1: 10, D2: 12})
    compute_trends(warehouse, trend_settings, load_taxonomy())
    trends = warehouse.table("tag_trends")
    assert not trends["direction"].isin(["rising", "falling"]).any()


def delete_rows(warehouse, table: str, image_id: str) -> None:
    """Simulates a stage losing a row without a reject (test-only SQL, straight to the backend)."""
    sql = f"DELETE FROM {warehouse.dataset}.{table} WHERE image_id = '{image_id}'"
    if warehouse.dialect == "duckdb":
        with warehouse.connect() as con:
            con.execute(sql)
    else:
        warehouse.client.query(sql).result()


def test_funnel_balances_and_catches_silent_loss(warehouse, vecflow_home):
    ids = ["a1", "a2", "bad", "ok"]
    catalog(warehouse, D1, ids + ["corrupt"])
    listed = warehouse.table("catalog")
    replace_stage_funnel(
        warehouse, "catalog", D1, "run-1", stage_counts(listed, listed, pd.DataFrame(columns=["reason", "category"]))
    )
    corrupt = {"image_id": "corrupt", "reason": "corrupt", "detail": "", "category": "dress"}
    replace_rejects(warehouse, "embed", D1, "run-1", pd.DataFrame([corrupt]))
    load(
        warehouse,
        [row("a1", D1, md5="A"), row("a2", D1, md5="A"), row("bad", D1, embedding=[0.0] * 256), row("ok", D1)],
        D1,
    )
    clean_partition(settings(), warehouse, D1, "run-1")
    tag_partition(warehouse, D1, "run-1", "m1")
    build_day_indexes(settings(), warehouse, D1, "run-1")
    record_sql_funnel(warehouse, D1, "run-1", "m1")
    assert warehouse.query("funnel_violations", run_date=D1).empty
    funnel = warehouse.table("funnel_metrics").set_index(["stage", "metric"])["value"].to_dict()
    assert funnel[("embed", "in")] == 5 and funnel[("embed", "dropped.corrupt")] == 1
    assert funnel[("validate", "dropped.zero_norm")] == 1 and funnel[("dedup", "dropped.md5")] == 1
    assert funnel[("index", "out")] == 2 and funnel[("tags", "out")] == 2  # images tagged

    # a stage that loses a row without recording why
    delete_rows(warehouse, "vectors_clean", "ok")
    record_sql_funnel(warehouse, D1, "run-1", "m1")
    violations = warehouse.query("funnel_violations", run_date=D1)
    assert [
        (v.stage, v.category, v.problem, v.in_rows, v.out_rows, v.dropped_rows) for v in violations.itertuples()
    ] == [("dedup", "dress", "in != out + dropped", 3, 1, 1), ("index", "dress", "in != out + dropped", 1, 2, 0)]


def test_rebuilding_a_day_removes_indexes_of_categories_gone_from_it(warehouse, vecflow_home):
    index_dir = vecflow_home / "index"
    load(warehouse, [row("c1", D1, category="coat"), row("b1", D1, category="bag")], D1)
    clean_partition(settings(), warehouse, D1, "run-1")
    build_day_indexes(settings(), warehouse, D1, "run-1")
    assert sorted(p.parent.name for p in index_dir.glob("m1/*/day=*")) == ["bag", "coat"]
    load(warehouse, [row("c1", D1, category="coat", run_id="run-2", at="2026-05-02T00:00:00Z")], D1, run_id="run-2")
    clean_partition(settings(), warehouse, D1, "run-2")
    build_day_indexes(settings(), warehouse, D1, "run-2")
    assert sorted(p.parent.name for p in index_dir.glob("m1/*/day=*")) == ["coat"]
    assert warehouse.table("index_registry")["category"].tolist() == ["coat"]


def test_hostile_ids_and_sources_are_data_not_sql(warehouse):
    """Values reach SQL only as query parameters or staged rows: quotes, comments and statements in
    an image_id or source are stored verbatim and run nothing."""
    hostile = "x'); DROP TABLE vecflow.catalog; --"
    source = "shop\" OR 1=1; DELETE FROM rejects WHERE '1'='1"
    catalog(warehouse, D1, [hostile, "ok"])
    load(warehouse, [{**row(hostile, D1), "source": source}, row("ok", D1)], D1)
    clean_partition(settings(), warehouse, D1, "run-1")
    tag_partition(warehouse, D1, "run-1", "m1")
    build_day_indexes(settings(), warehouse, D1, "run-1")
    record_sql_funnel(warehouse, D1, "run-1", "m1")
    assert set(warehouse.table("catalog")["image_id"]) == {hostile, "ok"}
    clean = warehouse.table("vectors_clean")
    assert by_id(clean, "source")[hostile] == source
    assert hostile in set(warehouse.table("image_tags")["image_id"])
    assert warehouse.query("funnel_violations", run_date=D1).empty
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        warehouse.table("catalog; DROP TABLE vecflow.catalog")
