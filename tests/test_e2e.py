"""End to end through Airflow: vecflow_daily for several logical dates with dag.test(), then
vecflow_trends, on a tiny generated catalog; then a rerun of one date leaves identical tables."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pytest
from warehouse_rows import snapshot

from vecflow.config import settings
from vecflow.demo.runner import generate_catalog, run_partitions
from vecflow.resources import DEFAULT_TREND_SPEC
from vecflow.taxonomy import load_taxonomy
from vecflow.warehouse import get_warehouse
from vecflow_model.registry import file_md5

START = dt.date(2026, 3, 30)
DAYS = 3


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, airflow_db, search_server):
    home = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as env:  # set for this module's tests, restored after them
        env.setenv("VECFLOW_HOME", str(home))
        env.setenv("VECFLOW_ES_INDEX_PREFIX", "e2e")
        generate_catalog(
            argparse.Namespace(seed=5, start_date=START, days=DAYS, images_per_day=30, trends=DEFAULT_TREND_SPEC)
        )
        dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
        run_partitions(dates)
        yield settings(), get_warehouse(), dates


def test_tables_hold_what_the_catalog_planted(pipeline):
    s, warehouse, dates = pipeline
    truth = pd.read_parquet(s.paths.catalog_dir / "truth" / "images.parquet")
    corrupt = set(truth.loc[truth["kind"] == "corrupt", "image_id"])
    exact = set(truth.loc[truth["kind"] == "exact_duplicate", "image_id"])
    assert len(warehouse.table("catalog")) == len(truth) == DAYS * 30
    rejects = warehouse.table("rejects")
    assert set(rejects.loc[rejects["reason"] == "corrupt", "image_id"]) == corrupt
    dedup = warehouse.table("dedup_map")
    assert exact <= set(dedup["image_id"])
    clean = warehouse.table("vectors_clean")
    assert len(clean) == len(truth) - len(corrupt) - len(dedup)
    assert clean.groupby(["image_id", "model_version"]).size().max() == 1
    tags = warehouse.table("image_tags")
    # every dimension of the taxonomy but the head's, which waits for `tags train`
    heads = {d.name for d in load_taxonomy().by_source("head")}
    assert heads and set(tags["dimension"]) == set(load_taxonomy().dimensions) - heads
    assert tags["image_id"].nunique() == len(clean)


def test_funnel_balances_for_every_partition(pipeline):
    _, warehouse, dates = pipeline
    funnel = warehouse.table("funnel_metrics")
    assert set(funnel["stage"]) == {"catalog", "embed", "validate", "dedup", "tags", "search", "index"}
    for day in dates:
        assert warehouse.query("funnel_violations", run_date=day).empty
        part = funnel[funnel["partition_date"].astype(str) == day.isoformat()]
        for (stage, category), g in part.groupby(["stage", "category"]):
            values = dict(zip(g["metric"], g["value"]))
            dropped = sum(v for m, v in values.items() if m.startswith("dropped."))
            assert values.get("in", 0) == values.get("out", 0) + dropped, (day, stage, category)


def test_index_files_match_their_manifests_and_registry(pipeline):
    import faiss

    _, warehouse, _ = pipeline
    registry = warehouse.table("index_registry")
    clean = warehouse.table("v_vectors_clean")
    assert registry.loc[registry["kind"] == "day", "vector_count"].sum() == len(clean)
    for entry in registry.itertuples():
        manifest = json.loads(open(f"{entry.path}/manifest.json").read())
        assert file_md5(f"{entry.path}/index.faiss") == manifest["files"]["index.faiss"] == entry.file_md5
        index = faiss.read_index(f"{entry.path}/index.faiss")
        ids = pd.read_parquet(f"{entry.path}/ids.parquet")
        assert index.ntotal == len(ids) == entry.vector_count
        # every vector finds itself
        vectors = clean[clean["image_id"].isin(ids["image_id"])]
        first = vectors.iloc[0]
        _, found = index.search(np.asarray([first["embedding"]], dtype="float32"), 1)
        assert ids.set_index("id").loc[found[0][0], "image_id"] == first["image_id"]


def test_summary_reports_the_run(pipeline):
    from vecflow.demo.truth import planted_truth

    s, warehouse, _ = pipeline
    summary = json.loads((s.paths.reports_dir / "summary.json").read_text())
    assert summary["partitions"] == DAYS and summary["periods"]["quarter"]["periods"] == ["2026-Q1", "2026-Q2"]
    assert set(summary["trend_facets"]) == {"(catalog)", "category", "source", "category,source"}
    duplicates = planted_truth(s, warehouse)["planted_duplicates"]
    assert duplicates["exact_by_md5"]["recall"] == 1.0
    assert duplicates["exact_by_md5"]["precision"] == 1.0
    assert duplicates["near_by_dhash"]["precision"] == 1.0
    # the search sink holds one document per clean image, and its aggregations match tag_trends
    assert summary["search"]["image_documents"] == summary["vectors_clean"]
    assert summary["search"]["trend_documents"] > 0
    assert summary["search"]["tag_counts_differing"] == 0
    published = summary["published_indexes"]
    assert published and all(i["recall_at_10"] == 1.0 for i in published.values())  # exact days: exact windows
    chart = s.paths.reports_dir / "trends" / "quarter" / "catalog.png"
    assert str(chart) in summary["trend_charts"] and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (s.paths.reports_dir / "trends" / "index.html").read_text()
    assert summary["trends_page"].endswith("trends/index.html") and 'src="quarter/catalog.png"' in page
    assert 'href="trends/index.html"' in (s.paths.reports_dir / "index.html").read_text()


def test_search_by_image_finds_the_canonical_of_a_duplicate(pipeline, capsys):
    from vecflow.cli import main

    s, _, _ = pipeline
    truth = pd.read_parquet(s.paths.catalog_dir / "truth" / "images.parquet")
    duplicate = truth[truth["kind"] == "exact_duplicate"].iloc[0]
    path = (
        s.paths.catalog_dir
        / f"listed_date={duplicate['listed_date']:%Y-%m-%d}"
        / "images"
        / f"{duplicate['image_id']}.jpg"
    )
    assert main(["search", "--image", str(path), "--k", "5"]) == 0
    printed = capsys.readouterr().out
    assert "5 results" in printed
    from vecflow.index.search import search

    # every category's window: the query's category is the model's guess, and the shipped model
    # takes some coats for pullovers (its accuracy is test_embed's); this is about the duplicate
    results = search(s, path, k=5, category="all")
    top = results.iloc[0]
    assert top["image_id"] == duplicate["canonical_image_id"] and top["score"] > 0.999
    assert duplicate["image_id"] in list(top["duplicates"])
    assert f"category={top['category']}" in list(top["tags"])


def test_asset_events_carry_the_lineage_of_each_partition(pipeline):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    s, warehouse, dates = pipeline
    with create_session() as session:
        events = (
            session.query(AssetModel.name, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetModel.name.like("vecflow_%"))
            .all()
        )
    by_asset = {}
    for name, extra in events:
        by_asset.setdefault(name, {})[extra.get("partition")] = extra
    assert set(by_asset) >= {"vecflow_vector_log", "vecflow_vectors_clean", "vecflow_image_tags", "vecflow_indexes"}
    day = str(dates[0])
    clean = warehouse.table("vectors_clean")
    assert by_asset["vecflow_vectors_clean"][day]["vectors_clean"] == int(
        (clean["listed_date"].astype(str) == day).sum()
    )
    windows = by_asset["vecflow_indexes"][day]["window"]
    assert windows and all(w["status"] == "published" and w["version"].startswith("v-") for w in windows.values())


def test_rerunning_a_date_leaves_identical_tables(pipeline):
    _, warehouse, dates = pipeline
    before = snapshot(warehouse)
    log_rows = len(warehouse.table("vector_log"))
    run_partitions([dates[1]])
    after = snapshot(warehouse)
    # the rerun embeds nothing: every vector is reused, and counted so in the funnel
    funnel = warehouse.table("funnel_metrics").query("partition_date == @dates[1] and stage == 'embed'")
    metrics = funnel.groupby("metric")["value"].sum()
    assert metrics["reused"] == metrics["out"] > 0
    assert after == before
    assert len(warehouse.table("vector_log")) > log_rows  # append-only: the rerun's rows are added


def test_each_run_writes_its_report_and_the_data_docs(pipeline):
    s, _, dates = pipeline
    index = (s.paths.reports_dir / "index.html").read_text()
    assert all(f'href="{day}/index.html"' in index for day in dates)
    page = (s.paths.reports_dir / str(dates[-1]) / "index.html").read_text()
    for section in ('id="quality"', 'id="funnel"', 'id="rejects"', 'id="trends"', 'id="indexes"'):
        assert section in page
    assert 'href="../gx/index.html"' in page and "passed" in page and "FAILED" not in page
    truth = pd.read_parquet(s.paths.catalog_dir / "truth" / "images.parquet")
    corrupt = truth[truth["kind"] == "corrupt"].iloc[0]  # a planted corrupt image: a reject with its reason
    page = (s.paths.reports_dir / f"{corrupt['listed_date']:%Y-%m-%d}" / "index.html").read_text()
    assert "<td>embed</td><td>corrupt</td>" in page
    gx_index = (s.paths.reports_dir / "gx" / "index.html").read_text()
    assert all(suite in gx_index for suite in ("vector_log", "vectors_clean", "funnel"))


def test_a_catalog_from_2019_backfills_and_a_date_before_the_start_is_an_error(airflow_db, tmp_path, monkeypatch):
    """Any history: partitions years back run like today's; a run that could not process its
    partition (it lies before the DAGs' start date: Airflow ends such a run `success` without running
    a task) is an error, not a success."""
    import subprocess
    import sys

    monkeypatch.setenv("VECFLOW_HOME", str(tmp_path / "old"))
    monkeypatch.setenv("VECFLOW_SEARCH_SINK", "none")
    old = dt.date(2019, 3, 1)
    generate_catalog(argparse.Namespace(seed=3, start_date=old, days=1, images_per_day=12, trends=DEFAULT_TREND_SPEC))
    run_partitions([old])
    assert set(get_warehouse().table("vector_log")["listed_date"].astype(str)) == {"2019-03-01"}

    # the DAGs' start date is read when they are parsed: a new process, as the scheduler's would be
    env = {**os.environ, "VECFLOW_HOME": str(tmp_path / "late"), "VECFLOW_START_DATE": "2020-01-01"}
    args = ["run", "--seed", "3", "--days", "1", "--images-per-day", "8", "--start-date", "2019-03-01"]
    done = subprocess.run([sys.executable, "-m", "vecflow.demo", *args], env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr  # Airflow's logging may take over either stream
    assert done.returncode == 1, output[-2000:]
    assert "vecflow_daily for partition 2019-03-01 ended success but these tasks did not run: " in output
