"""Retag history without re-embedding (vecflow.tagging.retag, `vecflow.cli tags retag`, the vecflow_retag
DAG): partitions tagged with the shipped taxonomy are retagged with a changed one (a new colour, brand
and occasion synonyms, a new catalog dimension) from what is stored, side by side, and switched in one
transaction; a retag that would leave a dimension with no tag at all is refused and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from warehouse_rows import D1, D2, analyses, catalog, load, row, tag_partition

from vecflow.clean import clean_partition
from vecflow.config import settings
from vecflow.tagging import TaggingError, check_one_version, retag
from vecflow.taxonomy import load_taxonomy

duckdb = pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)

SHIPPED = load_taxonomy()
TEAL = {"hue": 0.5, "saturation": 1.0, "value": 0.5, "warmth": -0.5}  # rgb (0, 128, 128): blue's nearest hue


def _teal(category: str) -> str:
    measured = json.loads(analyses("blue", "solid", category))
    return json.dumps({**measured, "colour": TEAL})


@pytest.fixture
def history(warehouse, model_m1):
    """Two partitions (two quarters) of three images tagged with the shipped taxonomy: a teal dress
    (blue in the shipped palette), a bag whose brand and one occasion name no tag (two rejects),
    and a striped coat."""
    misspelt = SHIPPED.dimension("brand").tags["babi"]["synonyms"][0]
    catalog(
        warehouse,
        D1,
        ["i1", "i2"],
        category=["dress", "bag"],
        attributes=[
            json.dumps({"brand": misspelt, "material": "Flax", "occasions": "Work|party", "fit": "Skinny"}),
            json.dumps({"brand": "Acme Corp", "material": "leather", "occasions": "beach|Disco"}),
        ],
    )
    load(
        warehouse,
        [
            {**row("i1", D1, category="dress"), "analyses": _teal("dress")},
            row("i2", D1, color="grey", pattern="solid", category="bag"),
        ],
        D1,
    )
    catalog(warehouse, D2, ["i3"], category=["coat"], attributes=[json.dumps({"material": "wool", "season": "Winter"})])
    load(warehouse, [row("i3", D2, color="red", pattern="striped", category="coat")], D2)
    for day in (D1, D2):
        clean_partition(settings(), warehouse, day, "run-1")
        tag_partition(warehouse, day, "run-1", "m1")
    return warehouse


def _taxonomy(tmp_path, monkeypatch, edit) -> str:
    """Points VECFLOW_TAXONOMY_URL at a copy of the shipped taxonomy changed by `edit(raw)`; its version."""
    raw = json.loads(json.dumps(SHIPPED.raw))
    edit(raw["dimensions"])
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", str(path))
    return load_taxonomy().version


def _new_taxonomy(dimensions: dict) -> None:
    dimensions["color"]["tags"]["teal"] = {"display": "Teal", "rgb": [0, 128, 128], "synonyms": ["Petrol"]}
    dimensions["brand"]["tags"]["acme"] = {"display": "Acme", "synonyms": ["Acme Corp", "ACME Corporation"]}
    dimensions["occasion"]["tags"]["party"]["synonyms"].append("Disco")
    dimensions["season"] = {
        "display": "Season",
        "source": "catalog",
        "column": "season",
        "none_tag": "all_year",
        "tags": {
            "summer": {"display": "Summer", "synonyms": ["SS"]},
            "winter": {"display": "Winter", "synonyms": ["AW", "Fall/Winter"]},
            "all_year": {"display": "All year"},
        },
    }


def _tags(warehouse) -> set[tuple]:
    tags = warehouse.table("image_tags")
    return set(zip(tags["image_id"], tags["dimension"], tags["tag"]))


@duckdb
def test_retag_moves_every_row_to_the_new_taxonomy_and_replaces_the_rejects(history, tmp_path, monkeypatch):
    warehouse = history
    before = warehouse.table("image_tags")
    assert set(before["taxonomy_version"]) == {SHIPPED.version}
    assert ("i1", "color", "blue") in _tags(warehouse)
    assert not any(d == "brand" for i, d, _ in _tags(warehouse) if i == "i2")  # 'Acme Corp' names no brand
    rejects = warehouse.table("rejects")
    assert sorted(rejects.loc[rejects["stage"] == "tags", "detail"].str.extract(r"=('[^']+')")[0]) == [
        "'Acme Corp'",
        "'Disco'",
    ]

    version = _taxonomy(tmp_path, monkeypatch, _new_taxonomy)
    # the daily run retags only its own partition: image_tags now mixes two taxonomies
    tag_partition(warehouse, D2, "run-2", "m1")
    with pytest.raises(TaggingError, match="mixes tag versions.*vecflow_retag"):
        check_one_version(warehouse)

    done = retag(settings(), warehouse, "retag-1", "m1")
    assert done["switched"] is True and done["lost_dimensions"] == []
    assert (done["images"], done["partitions"], done["taxonomy_version"]) == (3, 2, version)
    check_one_version(warehouse)

    after = warehouse.table("image_tags")
    assert set(after["taxonomy_version"]) == {version} and set(after["run_id"]) == {"retag-1"}
    assert len(after) == done["tag_rows"]
    tags = _tags(warehouse)
    assert {
        ("i1", "color", "teal"),  # the new palette colour, from the stored measurements
        ("i1", "brand", "babi"),
        ("i1", "occasion", "work"),
        ("i1", "occasion", "party"),
        ("i1", "season", "all_year"),  # the new dimension's none tag: i1's catalog row names no season
        ("i2", "brand", "acme"),  # a new synonym turns a reject into a tag
        ("i2", "occasion", "beach"),
        ("i2", "occasion", "party"),  # 'Disco'
        ("i3", "season", "winter"),
        ("i3", "pattern", "striped"),
        ("i3", "style", "outerwear"),
    } <= tags
    assert ("i1", "color", "blue") not in tags
    # every image has a tag of every dimension its catalog row names or that has a none tag (the head
    # dimension aside: which head sets other tests trained for m1 is not this test's business)
    expected = {d for d in load_taxonomy().dimensions if load_taxonomy().dimension(d).source != "head"}
    for image in ("i1", "i2", "i3"):
        assert {d for i, d, _ in tags if i == image} >= expected - ({"brand", "occasion"} if image == "i3" else set())
    # the tag rejects are the retag's: none of the old ones is left
    rejects = warehouse.table("rejects")
    assert rejects[rejects["stage"] == "tags"].empty
    assert warehouse.table("image_tags_candidate").empty
    assert warehouse.table("taxonomy")["taxonomy_version"].unique().tolist() == [version]


@duckdb
def test_retag_keeps_rejects_that_the_new_taxonomy_still_refuses(history, tmp_path, monkeypatch):
    warehouse = history

    def brand_only(dimensions):
        dimensions["brand"]["tags"]["acme"] = {"display": "Acme", "synonyms": ["Acme Corp"]}

    version = _taxonomy(tmp_path, monkeypatch, brand_only)
    done = retag(settings(), warehouse, "retag-1", "m1")
    assert done["switched"] and done["unknown_tags"] == 1
    rejects = warehouse.table("rejects")
    tag_rejects = rejects[rejects["stage"] == "tags"]
    assert tag_rejects[["image_id", "reason", "run_id"]].values.tolist() == [["i2", "unknown_tag", "retag-1"]]
    assert "'Disco'" in tag_rejects["detail"].iloc[0]
    assert pd.to_datetime(tag_rejects["listed_date"]).dt.date.tolist() == [D1]
    assert set(warehouse.table("image_tags")["taxonomy_version"]) == {version}


@duckdb
def test_the_gate_refuses_a_retag_that_leaves_a_dimension_with_no_tag(history, tmp_path, monkeypatch):
    """The material column renamed to one no catalog row has: material had tags and would have none."""
    warehouse = history
    serving = warehouse.table("image_tags").sort_values(["image_id", "dimension", "tag"]).reset_index(drop=True)
    rejects = warehouse.table("rejects").sort_values("detail").reset_index(drop=True)

    def lose_material(dimensions):
        dimensions["material"]["column"] = "fabric"

    _taxonomy(tmp_path, monkeypatch, lose_material)
    done = retag(settings(), warehouse, "retag-1", "m1")
    assert done["switched"] is False and done["lost_dimensions"] == ["material"]
    assert "unknown_tags" not in done
    after = warehouse.table("image_tags").sort_values(["image_id", "dimension", "tag"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(after, serving)
    pd.testing.assert_frame_equal(warehouse.table("rejects").sort_values("detail").reset_index(drop=True), rejects)
    check_one_version(warehouse)  # still the one shipped version

    # a later retag starts from an empty candidate: what the refused one wrote is not carried over
    monkeypatch.delenv("VECFLOW_TAXONOMY_URL")
    done = retag(settings(), warehouse, "retag-2", "m1")
    assert done["switched"] and len(warehouse.table("image_tags")) == done["tag_rows"]


@duckdb
def test_retag_of_a_model_with_no_stored_vectors_is_refused(warehouse, model_m1):
    with pytest.raises(TaggingError, match="no clean images of model m9 to retag"):
        retag(settings(), warehouse, "retag-1", "m9")


@duckdb
def test_the_cli_retags_and_exits_1_when_the_gate_refuses(history, tmp_path, monkeypatch, capsys, caplog):
    from vecflow.cli import main

    version = _taxonomy(tmp_path, monkeypatch, _new_taxonomy)
    assert main(["tags", "retag"]) == 0
    out = capsys.readouterr().out
    assert "3 images in 2 partitions" in out and f"taxonomy {version}, heads -" in out
    assert "image_tags switched; 0 unknown values rejected" in out
    assert f"image_tags holds taxonomy {version} heads -: 2 partitions" in out
    assert set(history.table("image_tags")["taxonomy_version"]) == {version}

    def lose_season(dimensions):
        _new_taxonomy(dimensions)
        del dimensions["season"]["none_tag"]
        dimensions["season"]["column"] = "seasons"

    _taxonomy(tmp_path, monkeypatch, lose_season)
    assert main(["tags", "retag"]) == 1
    assert "not switched: dimensions season would lose every tag; image_tags unchanged" in caplog.text
    assert set(history.table("image_tags")["taxonomy_version"]) == {version}
    assert main(["tags", "retag", "--model-version", "m9"]) == 1
    assert "no clean images of model m9 to retag" in caplog.text


@pytest.mark.parametrize("sink", ["elasticsearch", "none"])
def test_the_retag_dag_announces_image_tags_after_search_is_rebuilt(sink, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from vecflow.assets import IMAGE_TAGS

    monkeypatch.setenv("VECFLOW_SEARCH_SINK", sink)
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags" / "vecflow_retag.py"))
    assert bag.import_errors == {}
    dag = bag.dags["vecflow_retag"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual trigger only
    publish = dag.get_task("publish_image_tags")
    assert [o.name for o in publish.outlets] == [IMAGE_TAGS.name]
    assert all(not t.outlets for t in dag.tasks if t is not publish)
    if sink == "elasticsearch":
        assert dag.get_task("search_index_retagged").upstream_task_ids == {"retag_images"}
        assert publish.upstream_task_ids == {"retag_images", "search_index_retagged"}
    else:
        assert set(dag.task_ids) == {"retag_images", "publish_image_tags"}
        assert publish.upstream_task_ids == {"retag_images"}


def test_analyses_columns_read_what_json_reads_row_by_row():
    """The one-pass Arrow parse a retag relies on: NaN hues, rows with no analyses or an analyser
    missing, nested legacy tags; and a field typed differently across rows, parsed per row instead."""
    from vecflow.tagging import analyses_columns

    rows = [
        json.dumps({"colour": {"hue": float("nan"), "saturation": 0.1, "value": 0.9, "warmth": 0.0}}),
        "",
        None,
        json.dumps(
            {
                "colour": {"hue": 0.5, "saturation": 0.8, "value": 0.5, "warmth": -0.4},
                "model": {"category": "bag", "confidence": 0.9},
            }
        ),
        json.dumps({"legacy": {"color": {"tag": "red", "confidence": 0.7}}}),
    ]
    fast = analyses_columns(pd.Series(rows, index=[10, 11, 12, 13, 14]))
    assert list(fast.index) == [10, 11, 12, 13, 14]
    assert fast["analyses.colour.hue"].isna().tolist() == [True, True, True, False, True]
    assert fast["analyses.colour.saturation"].tolist()[::3] == [0.1, 0.8]
    assert fast["analyses.model.category"].fillna("-").tolist() == ["-", "-", "-", "bag", "-"]
    assert (
        fast.loc[14, "analyses.legacy.color.tag"] == "red" and fast.loc[14, "analyses.legacy.color.confidence"] == 0.7
    )
    mixed = analyses_columns(
        pd.Series([json.dumps({"model": {"category": 3}}), json.dumps({"model": {"category": "bag"}})])
    )
    assert mixed["analyses.model.category"].tolist() == [3, "bag"]
    assert analyses_columns(pd.Series([], dtype=object)).empty


@duckdb
def test_the_retag_dag_switches_image_tags_and_emits_the_asset(airflow_db, history, tmp_path, monkeypatch):
    """dag.test() of vecflow_retag (no search sink): image_tags switched, the asset event carries
    what the retag did; with a taxonomy the gate refuses, retag_images fails and nothing changes."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    from vecflow.assets import IMAGE_TAGS

    monkeypatch.setenv("VECFLOW_SEARCH_SINK", "none")
    version = _taxonomy(tmp_path, monkeypatch, _new_taxonomy)
    dags = Path(__file__).resolve().parents[1] / "dags" / "vecflow_retag.py"
    dag = DagBag(dag_folder=str(dags)).get_dag("vecflow_retag")
    assert dag.test().state == "success"
    assert set(history.table("image_tags")["taxonomy_version"]) == {version}
    with create_session() as session:
        extras = [e.extra for e in session.query(AssetEvent).all() if e.asset.name == IMAGE_TAGS.name]
    assert any(e.get("taxonomy_version") == version and e.get("images") == 3 and e.get("switched") for e in extras)

    def lose_material(dimensions):
        _new_taxonomy(dimensions)
        dimensions["material"]["column"] = "fabric"

    _taxonomy(tmp_path, monkeypatch, lose_material)
    dag = DagBag(dag_folder=str(dags)).get_dag("vecflow_retag")
    assert dag.test().state == "failed"
    assert set(history.table("image_tags")["taxonomy_version"]) == {version}
