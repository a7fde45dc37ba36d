"""Model change through Airflow: vecflow_reindex re-embeds the partitions with a new model, builds its
indexes beside the old ones and switches the serving model only after the gate; the daily run then
embeds with the new model."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil

import pandas as pd
import pytest

from vecflow.config import settings
from vecflow.demo.runner import generate_catalog, run_partitions
from vecflow.index.pointers import SERVING
from vecflow.index.store import index_store
from vecflow.resources import DEFAULT_TREND_SPEC, MODELS_DIR
from vecflow.warehouse import get_warehouse
from vecflow_model.registry import link_model

START = dt.date(2026, 2, 2)
DAYS = [START + dt.timedelta(days=i) for i in range(4)]
V1, V2, BROKEN = "garment-arcface-v1", "garment-arcface-v2", "garment-arcface-scrambled"


def registry_copy(target, version: str, scramble: bool = False) -> None:
    """The shipped model under another version name; `scramble` replaces its conv weights with noise
    (a model that embeds nothing useful)."""
    import torch

    from vecflow_model.registry import file_md5

    source = MODELS_DIR / "registry" / V1
    shutil.copytree(source, target / version)
    card = json.loads((source / "card.json").read_text())
    if scramble:
        state = torch.load(source / card["weights_file"], weights_only=True)
        generator = torch.Generator().manual_seed(0)
        state = {k: torch.randn(v.shape, generator=generator) * v.std() if v.ndim == 4 else v for k, v in state.items()}
        torch.save(state, target / version / card["weights_file"])
    card.update(model_version=version, weights_md5=file_md5(target / version / card["weights_file"]))
    (target / version / "card.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def reindex_env(tmp_path_factory, airflow_db, search_server):
    registry = tmp_path_factory.mktemp("registry")
    for version, scramble in ((V1, False), (V2, False), (BROKEN, True)):
        if version == V1:
            shutil.copytree(MODELS_DIR / "registry" / V1, registry / V1)
        else:
            registry_copy(registry, version, scramble)
    link_model(MODELS_DIR / "registry" / V1, registry, "m1")  # the model tests/warehouse_rows.row() names
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VECFLOW_HOME", str(tmp_path_factory.mktemp("reindex")))
        env.setenv("VECFLOW_MODEL_REGISTRY", str(registry))
        env.setenv("VECFLOW_ES_INDEX_PREFIX", "reindex")
        env.delenv("VECFLOW_MODEL_VERSION", raising=False)
        generate_catalog(
            argparse.Namespace(seed=11, start_date=START, days=len(DAYS), images_per_day=30, trends=DEFAULT_TREND_SPEC)
        )
        run_partitions(DAYS[:3])
        yield get_warehouse()


def reindex(model_version: str, run_at: dt.datetime, **dates):
    from airflow.dag_processing.dagbag import DagBag

    from vecflow.resources import PROJECT_DIR

    dag = DagBag(dag_folder=str(PROJECT_DIR / "dags" / "vecflow_reindex.py")).get_dag("vecflow_reindex")
    conf = {"model_version": model_version, **{k: v.isoformat() for k, v in dates.items()}}
    run = dag.test(logical_date=run_at, run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def clean_counts(warehouse) -> dict:
    clean = warehouse.table("vectors_clean")
    return clean.groupby(["model_version", clean["listed_date"].astype(str)]).size().to_dict()


def test_reindex_switches_only_after_the_gate_and_the_daily_run_follows(reindex_env):
    warehouse = reindex_env
    old = clean_counts(warehouse)
    assert settings().model_version == V1 and index_store(settings()).read_pointer(SERVING) is None

    # a reindex that leaves out the newest partition builds v2's indexes but may not switch
    run, states = reindex(V2, dt.datetime(2026, 3, 1, tzinfo=dt.UTC), date_to=DAYS[1])
    assert run.state == "failed"
    assert states["build_indexes"] == "success" and states["switch_model"] == "failed"
    assert settings().model_version == V1
    from vecflow.index.reindex import switch_problems

    problems = switch_problems(settings(), warehouse, V2)
    assert problems[0].startswith(f"1 partition(s) without {V2} vectors ({DAYS[2]}"), problems

    # the full reindex: every canonical image embedded again, the old rows untouched, then the switch
    run, states = reindex(V2, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    assert run.state == "success", states
    counts = clean_counts(warehouse)
    for day in DAYS[:3]:
        assert counts[(V2, str(day))] == counts[(V1, str(day))] == old[(V1, str(day))]
    pointer = index_store(settings()).read_pointer(SERVING).payload
    assert pointer["model_version"] == V2 and pointer["previous_model_version"] == V1
    assert settings().model_version == V2
    s = settings()
    assert all(
        index_store(s).exists(f"{V2}/{category}/CURRENT")
        for category in warehouse.table("vectors_clean").query("model_version == @V2")["category"].unique()
    )
    rejects = warehouse.table("rejects")
    assert set(rejects["stage"]) - {"catalog", "embed", "validate", "tags"} <= {"reindex_embed", "reindex_validate"}

    # the next daily run embeds with the serving model, and its funnel balances
    run_partitions(DAYS[3:])
    day4 = warehouse.table("vectors_clean").query("listed_date == @DAYS[3]")
    assert len(day4) > 0 and set(day4["model_version"]) == {V2}
    assert warehouse.query("funnel_violations", run_date=DAYS[3]).empty

    # search embeds the query with the serving model and searches its indexes
    from vecflow.index.search import search

    truth = pd.read_parquet(s.paths.catalog_dir / "truth" / "images.parquet")
    clean_v2 = warehouse.table("vectors_clean").query("model_version == @V2")
    image = truth[truth["image_id"].isin(clean_v2["image_id"])].iloc[0]
    path = s.paths.catalog_dir / f"listed_date={image['listed_date']:%Y-%m-%d}" / "images" / f"{image['image_id']}.jpg"
    results = search(s, path, k=3)
    assert results.iloc[0]["image_id"] == image["image_id"] and results.iloc[0]["score"] > 0.999
    assert set(results["index_version"]) <= {
        index_store(s).read_pointer(f"{V2}/{c}/CURRENT").payload["version"] for c in results["category"]
    }


def test_a_worse_model_is_built_but_never_served(reindex_env):
    warehouse = reindex_env
    serving = settings().model_version  # v2 after the test above, v1 when run alone
    run, states = reindex(BROKEN, dt.datetime(2026, 3, 3, tzinfo=dt.UTC))
    assert run.state == "failed" and states["load_and_clean"] == "success" and states["switch_model"] == "failed"
    assert settings().model_version == serving
    from vecflow.index.reindex import switch_problems

    problems = switch_problems(settings(), warehouse, BROKEN)
    assert any("precision@10" in p or "no published" in p or "category agreement" in p for p in problems), problems


def test_reindex_sql_on_both_backends(warehouse, model_m1):
    """The reindex's own SQL on DuckDB and BigQuery: what to re-embed, its counts, the coverage check."""
    from warehouse_rows import D1, D2, catalog, load, row, unit

    from vecflow.clean import clean_partition, validate_and_keep
    from vecflow.index.reindex import FIRST_DATE, LAST_DATE, switch_problems

    for day, ids in ((D1, ["a", "b", "dup"]), (D2, ["c"])):
        catalog(warehouse, day, ids)
        load(warehouse, [row(i, day, md5="same" if i in ("b", "dup") else None) for i in ids], day)
        clean_partition(settings(), warehouse, day, "run-1")
    images = warehouse.query(
        "select_reindex_images", serving_model_version="m1", date_from=FIRST_DATE, date_to=LAST_DATE
    )
    assert sorted(images["image_id"]) == ["a", "b", "c"] and set(images["uri"]) == {"a.jpg", "b.jpg", "c.jpg"}

    # m2 re-embeds D1 only: one vector too short, which validate rejects under the reindex's stage
    load(
        warehouse,
        [
            row("a", D1, model_version="m2", run_id="reindex-1", at="2026-06-01T00:00:00Z"),
            row("b", D1, model_version="m2", run_id="reindex-1", at="2026-06-01T00:00:00Z", embedding=unit(7, 128)),
        ],
        D1,
        run_id="reindex-1",
    )
    validate_and_keep(warehouse, D1, "reindex-1", "m2", "reindex_validate", 256)
    counts = warehouse.query("reindex_counts", run_id="reindex-1", model_version="m2")
    assert {(m, int(n)) for m, n in zip(counts["measure"], counts["n"])} == {
        ("embedded", 2),
        ("reindex_validate", 1),
        ("clean", 1),
    }
    clean = warehouse.table("vectors_clean")
    assert sorted(map(tuple, clean[["model_version", "image_id"]].values.tolist())) == [
        ("m1", "a"),
        ("m1", "b"),
        ("m1", "c"),
        ("m2", "a"),
    ]
    # the daily run's view of D1 is still m1's
    validate_and_keep(warehouse, D1, "run-1", "m1", "validate", 256)
    assert len(warehouse.table("vectors_clean").query("model_version == 'm1'")) == 3
    problems = switch_problems(settings(), warehouse, "m2")
    assert problems == [
        f"1 partition(s) without m2 vectors ({D2} .. {D2}): reindex them (date_from/date_to) first",
        "m2 has no published window index (reindex with it first)",  # no index was built here
    ]
