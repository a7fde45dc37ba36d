"""What the generator planted is found: trends with their direction, exact and near duplicates with
their canonical image.

Runs every stage's task function (quality suites included) for 120 partitions spanning two quarters
(without the Airflow scheduler loop, which test_e2e covers), then compares with the generator's truth."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from types import SimpleNamespace

import pytest

from vecflow import tasks
from vecflow.cli import generate_catalog
from vecflow.resources import DEFAULT_TREND_SPEC

START, DAYS = dt.date(2026, 2, 15), 120


@pytest.fixture(scope="module")
def summary(tmp_path_factory, search_server):
    import os

    os.environ["VECFLOW_HOME"] = str(tmp_path_factory.mktemp("trends"))
    os.environ["VECFLOW_ES_INDEX_PREFIX"] = "planted"
    generate_catalog(
        argparse.Namespace(seed=21, start_date=START, days=DAYS, images_per_day=8, trends=DEFAULT_TREND_SPEC)
    )
    for i in range(DAYS):
        start = dt.datetime.combine(START + dt.timedelta(days=i), dt.time(), tzinfo=dt.UTC)
        context = {"data_interval_start": start, "run_id": f"test__{start:%Y%m%d}", "ti": SimpleNamespace(try_number=1)}
        shards = tasks.plan(context)
        for shard in shards:
            tasks.embed(shard, context)
        tasks.load(shards, context)
        tasks.clean(context)
        tasks.tag(context)
        tasks.search_tags(context)
        tasks.index(context)
        tasks.quality(context)
    tasks.trends({})
    tasks.search_trends({"run_id": "test__trends"})
    return tasks.summary({})


def test_planted_trends_found_with_their_direction(summary):
    found = {(c["dimension"], c["tag"]): c for c in summary["planted_trends"]}
    assert found[("pattern", "striped")]["found_by_quarter"] == {"2026-Q2": "rising"}
    assert found[("color", "red")]["found_by_quarter"] == {"2026-Q2": "falling"}
    assert all(c["ok"] for c in summary["planted_trends"])


def test_every_tag_moves_as_planted(summary):
    agreement = summary["trend_agreement"]
    assert agreement["tags_compared"] == 27  # (10 categories + 8 colours + 4 patterns + 5 styles) x 1 quarter
    assert agreement["different"] == [], json.dumps(agreement["different"], indent=1)


def test_planted_duplicates_found_with_their_canonical(summary):
    exact, near = summary["planted_duplicates"]["exact_by_md5"], summary["planted_duplicates"]["near_by_dhash"]
    assert exact["planted"] > 20 and near["planted"] > 20
    assert exact["precision"] == exact["recall"] == 1.0
    assert near["precision"] >= 0.99 and near["recall"] >= 0.95, near


def test_elasticsearch_holds_the_same_trends(summary):
    search = summary["search"]
    assert search["tag_counts_differing"] == 0 and search["tag_counts_compared"] > 0
    assert {(c["dimension"], c["tag"]): c["found_by_quarter"] for c in search["planted_trends"]} == {
        ("pattern", "striped"): {"2026-Q2": "rising"},
        ("color", "red"): {"2026-Q2": "falling"},
    }
