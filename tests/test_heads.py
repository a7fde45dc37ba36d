"""Heads trained on labels (`tags train`): stored vectors with a planted class structure, a labels file
with bad rows of every kind, training, held-out metrics and thresholds, the registry's head set
(md5-checked) and predict's long form."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from vecflow import cli
from vecflow.config import settings
from vecflow.heads import HeadError, HeadSet, load_head_set, read_labels, tag_table, train_heads
from vecflow.taxonomy import load_taxonomy
from vecflow.warehouse import get_warehouse, migrate

DAY = dt.date(2026, 3, 30)
DIM = 256
SILHOUETTES = ["a_line", "straight", "fitted"]  # planted: each a cluster
OCCASIONS = ["party", "beach"]  # planted: each adds its own direction to the vector
N = 240

TAXONOMY = {
    "dimensions": {
        "category": {"source": "catalog", "tags": {"dress": {}, "bag": {}}},
        "silhouette": {
            "source": "head",
            "tags": {
                "a_line": {"synonyms": ["A-line"]},
                "straight": {},
                "fitted": {},
                "oversized": {},  # labelled on images of other clusters: a head cannot be precise on it
                "wrap": {},  # never labelled
            },
        },
        "occasion": {
            "source": "head",
            "multi_label": True,
            "tags": {"party": {}, "beach": {}, "office": {}},  # office: labelled at random
        },
        "brand": {"source": "catalog", "tags": {"acme": {}}},
    }
}


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def planted(tmp_path, vecflow_home, monkeypatch):
    """A warehouse whose vectors carry a silhouette cluster and occasion directions, and the truth."""
    taxonomy_file = tmp_path / "taxonomy.json"
    taxonomy_file.write_text(json.dumps(TAXONOMY))
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", str(taxonomy_file))
    monkeypatch.setenv("VECFLOW_MODEL_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", "m1")
    monkeypatch.setenv("VECFLOW_TAG_MIN_HEAD_PRECISION", "0.9")
    rng = np.random.default_rng(7)
    centres = unit_rows(rng.normal(size=(len(SILHOUETTES) + len(OCCASIONS), DIM)))
    ids = [f"img-{i:04d}" for i in range(N)]
    silhouette = np.arange(N) % len(SILHOUETTES)
    occasions = rng.random((N, len(OCCASIONS))) < 0.4
    office = rng.random(N) < 0.3  # no direction of its own: unlearnable
    vectors = unit_rows(
        centres[silhouette] + 0.8 * occasions @ centres[len(SILHOUETTES) :] + rng.normal(scale=0.03, size=(N, DIM))
    )
    warehouse = get_warehouse(settings())
    migrate(warehouse)
    with warehouse.connect() as con:
        frame = pd.DataFrame(
            {
                "image_id": ids,
                "listed_date": DAY,
                "model_version": "m1",
                "category": "dress",
                "embedding": [v.astype(np.float64).tolist() for v in vectors],
            }
        )
        con.register("planted", frame)
        con.execute(
            f"INSERT INTO {warehouse.dataset}.vector_log (image_id, listed_date, model_version, category, embedding, "
            "run_id, shard_id, attempt, embedded_at) SELECT image_id, listed_date, model_version, category, embedding, "
            "'run-1', 0, 1, TIMESTAMP '2026-03-30 01:00:00' FROM planted"
        )
        con.execute(
            f"INSERT INTO {warehouse.dataset}.vectors_clean (image_id, listed_date, model_version, category, "
            "vector_run_id, shard_id, attempt) SELECT image_id, listed_date, model_version, category, 'run-1', 0, 1 "
            "FROM planted"
        )
    labels = [("img-0000", "silhouette", "A-line")]  # a synonym
    labels += [(ids[i], "silhouette", SILHOUETTES[silhouette[i]]) for i in range(1, N)]
    # oversized: 8 more images of the a_line and straight clusters, labelled with a tag they do not show
    extra_ids = [f"img-x{i:03d}" for i in range(8)]
    extra = unit_rows(centres[np.arange(8) % 2] + rng.normal(scale=0.03, size=(8, DIM)))
    with warehouse.connect() as con:
        con.register("extra", pd.DataFrame({"image_id": extra_ids, "embedding": [v.tolist() for v in extra]}))
        con.execute(
            f"INSERT INTO {warehouse.dataset}.vector_log (image_id, listed_date, model_version, category, embedding, "
            "run_id, shard_id, attempt, embedded_at) SELECT image_id, DATE '2026-03-30', 'm1', 'dress', embedding, "
            "'run-1', 0, 1, TIMESTAMP '2026-03-30 01:00:00' FROM extra"
        )
        con.execute(
            f"INSERT INTO {warehouse.dataset}.vectors_clean (image_id, listed_date, model_version, category, "
            "vector_run_id, shard_id, attempt) SELECT image_id, DATE '2026-03-30', 'm1', 'dress', 'run-1', 0, 1 FROM extra"
        )
    labels += [(i, "silhouette", "oversized") for i in extra_ids]
    for i in range(N):
        tags = [t for t, on in zip(OCCASIONS, occasions[i]) if on] + (["office"] if office[i] else [])
        labels += [(ids[i], "occasion", t) for t in tags]
    bad = [
        ("ghost-1", "silhouette", "straight"),  # unknown image
        ("img-0001", "silhouette", "mermaid"),  # unknown tag
        ("img-0002", "brand", "acme"),  # a catalog dimension
        ("img-0003", "fabric", "silk"),  # no such dimension
        ("img-0004", "silhouette", ""),  # missing value
        (ids[4], "occasion", "party"),  # twice (added below if not already labelled)
        (ids[5], "silhouette", SILHOUETTES[(silhouette[5] + 1) % 3]),  # conflicts with its label
    ]
    labels_file = tmp_path / "labels.csv"
    frame = pd.DataFrame(labels + bad + [(ids[4], "occasion", "party")], columns=["image_id", "dimension", "tag"])
    frame.to_csv(labels_file, index=False)
    all_vectors = np.vstack([vectors, extra])
    return {
        "warehouse": warehouse,
        "labels_file": labels_file,
        "vectors": all_vectors,
        "silhouette": [SILHOUETTES[k] for k in silhouette] + ["oversized"] * 8,
        "occasions": occasions,
        "ids": ids + extra_ids,
    }


def train(planted):
    s = settings()
    labels = read_labels(s, planted["warehouse"], str(planted["labels_file"]))
    return train_heads(s, planted["warehouse"], labels, load_taxonomy())


def test_heads_learn_the_planted_structure_and_count_every_reject(planted):
    head_set, report = train(planted)
    assert head_set is not None and sorted(head_set.dimensions) == ["occasion", "silhouette"]
    table = tag_table(report).set_index(["dimension", "tag"])
    for tag in SILHOUETTES:
        row = table.loc[("silhouette", tag)]
        assert row["support"] >= 15 and row["precision"] >= 0.9 and row["recall"] >= 0.9 and row["published"], row
        assert 0 < row["threshold"] <= 1
    for tag in OCCASIONS:
        row = table.loc[("occasion", tag)]
        assert row["f1"] >= 0.9 and row["published"], row
    # labels with no signal in the vectors: measured, reported and not published
    assert table.loc[("silhouette", "oversized"), "note"] == "never right on held-out images"
    assert table.loc[("occasion", "office"), "note"].startswith("held-out precision 0.")
    assert (
        not table.loc[("silhouette", "oversized"), "published"] and not table.loc[("occasion", "office"), "published"]
    )
    card = head_set.card
    assert card["dimensions"]["silhouette"]["not_labelled"] == ["wrap"]
    assert card["taxonomy_version"] == load_taxonomy().version
    assert (
        card["labels"]["md5"] == read_labels(settings(), planted["warehouse"], str(planted["labels_file"])).attrs["md5"]
    )
    assert card["training_seconds"] > 0 and card["weights_md5"]
    # every bad row a reject with its reason, counted and written beside the head set
    assert report["reject_counts"] == {
        "unknown_image": 1,
        "unknown_tag": 1,
        "not_a_head_dimension": 1,
        "unknown_dimension": 1,
        "missing_value": 1,
        "duplicate_label": 1 + int(planted["occasions"][4][0]),
        "conflicting_labels": 2,
    }
    rejects = pd.read_csv(head_set.path / "rejects.csv", keep_default_na=False)
    assert len(rejects) == len(report["rejects"]) and set(rejects.columns) == {
        "image_id",
        "dimension",
        "tag",
        "reason",
        "detail",
    }
    assert rejects.set_index("reason").loc["unknown_tag", "tag"] == "mermaid"
    assert "catalog" in rejects.set_index("reason").loc["not_a_head_dimension", "detail"]
    assert report["accepted"] + len(rejects) == report["label_rows"]


def test_predict_in_long_form(planted):
    head_set, _ = train(planted)
    loaded = load_head_set(settings(), "m1")
    assert loaded.version == head_set.version
    vectors = planted["vectors"]
    single = loaded.predict("silhouette", vectors)
    assert list(single.columns) == ["row", "tag", "confidence"]
    assert single["row"].is_unique  # one tag at most per image
    assert "oversized" not in set(single["tag"])  # unpublished: never predicted
    truth = np.array(planted["silhouette"])
    clustered = single[single["row"] < N]
    assert (clustered["tag"].to_numpy() == truth[clustered["row"]]).mean() > 0.97 and len(clustered) > 0.9 * N
    assert ((single["confidence"] > 0) & (single["confidence"] <= 1)).all()
    multi = loaded.predict("occasion", vectors[:N])
    assert "office" not in set(multi["tag"])
    both = np.flatnonzero(planted["occasions"].all(axis=1))
    got = multi[multi["row"].isin(both)].groupby("row")["tag"].agg(frozenset)
    assert (got == frozenset(OCCASIONS)).mean() > 0.9  # several rows per image in a multi-label dimension
    none = np.flatnonzero(~planted["occasions"].any(axis=1))
    assert multi["row"].isin(none).mean() < 0.05
    # a published tag the thresholds admit disappears when unpublished
    head = loaded.heads["silhouette"]
    hidden = head.published.copy()
    hidden[list(head.tags).index("a_line")] = False
    edited = HeadSet(
        "edited", loaded.card, {"silhouette": type(head)(**{**head.__dict__, "published": hidden})}, loaded.path
    )
    assert "a_line" in set(single["tag"]) and "a_line" not in set(edited.predict("silhouette", vectors)["tag"])
    with pytest.raises(HeadError, match="shape"):
        loaded.predict("silhouette", vectors[:, :128])


def test_head_sets_are_md5_checked_and_the_newest_is_loaded(planted, monkeypatch):
    first, _ = train(planted)
    frame = pd.read_csv(planted["labels_file"])
    frame[frame["dimension"] == "silhouette"].to_parquet(planted["labels_file"].with_suffix(".parquet"))
    s = settings()
    labels = read_labels(s, planted["warehouse"], str(planted["labels_file"].with_suffix(".parquet")))
    second, report = train_heads(s, planted["warehouse"], labels, load_taxonomy())
    assert second.dimensions == ["silhouette"] and report["untrained"] == {"occasion": "no accepted labels"}
    assert second.version > first.version and load_head_set(s, "m1").version == second.version
    assert load_head_set(s, "m1", first.version).dimensions == first.dimensions
    monkeypatch.setenv("VECFLOW_TAG_HEADS", first.version)
    assert load_head_set(settings(), "m1").version == first.version
    weights = first.path / "weights.npz"
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(HeadError, match="md5"):
        load_head_set(settings(), "m1")
    monkeypatch.setenv("VECFLOW_TAG_HEADS", "heads-00000000000000000-deadbeef")
    with pytest.raises(HeadError, match="no .*card.json"):
        load_head_set(settings(), "m1")
    assert load_head_set(s, "m2") is None


def test_labels_from_a_warehouse_table_and_bad_inputs(planted):
    s, warehouse = settings(), planted["warehouse"]
    with warehouse.connect() as con:
        con.execute(
            f"CREATE TABLE {warehouse.dataset}.merch_labels AS SELECT * FROM read_csv('{planted['labels_file']}', all_varchar=true)"
        )
    from_table = read_labels(s, warehouse, "merch_labels")
    from_file = read_labels(s, warehouse, str(planted["labels_file"]))
    assert len(from_table) == len(from_file) and from_table.attrs["md5"]
    import fsspec

    with fsspec.open("memory://labels/sample.csv", "wb") as fh:
        fh.write(planted["labels_file"].read_bytes())
    from_url = read_labels(s, warehouse, "memory://labels/sample.csv")
    assert from_url.equals(from_file) and from_url.attrs["md5"] == from_file.attrs["md5"]
    broken = planted["labels_file"].with_name("broken.parquet")
    broken.write_bytes(b"not parquet")
    with pytest.raises(HeadError, match="not a readable parquet file"):
        read_labels(s, warehouse, str(broken))
    with pytest.raises(HeadError, match="no such file, nor a table"):
        read_labels(s, warehouse, "no_such_labels")
    with pytest.raises(HeadError, match="no such file"):
        read_labels(s, warehouse, str(planted["labels_file"].with_name("missing.csv")))
    wrong = planted["labels_file"].with_name("wrong.csv")
    wrong.write_text("image,label\na,b\n")
    with pytest.raises(HeadError, match=r"missing column\(s\) \['image_id', 'dimension', 'tag'\]"):
        read_labels(s, warehouse, str(wrong))


def test_a_confident_heads_thresholds_still_admit_its_rows():
    """Held-out scores of a confident head are chosen in float64 and clipped under 1: a threshold stays
    a finite logit, so the rows the head is surest of are tagged, not lost to a threshold of 1.0."""
    from vecflow.heads import Head, _best_threshold, _sigmoid

    rng = np.random.default_rng(3)
    centre = unit_rows(rng.normal(size=(1, DIM)))[0]
    near = unit_rows(centre + rng.normal(scale=0.01, size=(5, DIM)))
    far = unit_rows(rng.normal(size=(5, DIM)))
    vectors = np.vstack([near, far])
    W = (200 * centre)[:, None].astype(np.float32)  # logits ~200 on `near`, ~0 elsewhere
    scores = _sigmoid(vectors.astype(np.float64) @ W.astype(np.float64))[:, 0]
    chosen = _best_threshold(scores, np.arange(10) < 5)
    assert chosen["f1"] == 1.0 and chosen["threshold"] < 1.0
    multi = Head(
        "m", True, np.array(["on"]), W, np.zeros(1, np.float32), np.array([chosen["threshold"]]), np.ones(1, bool)
    )
    got = HeadSet("h", {}, {"m": multi}, None).predict("m", vectors)
    assert got["row"].tolist() == [0, 1, 2, 3, 4]
    single = Head(
        "s", False, np.array(["off", "on"]), np.hstack([-W, W]), np.zeros(2, np.float32), np.ones(2), np.ones(2, bool)
    )
    got = HeadSet("h", {}, {"s": single}, None).predict("s", near)
    assert got["tag"].tolist() == ["on"] * 5 and (got["confidence"] == 1.0).all()


def test_cli_tags_train(planted, capsys):
    assert cli.main(["tags", "train", "--labels", str(planted["labels_file"])]) == 0
    out = capsys.readouterr().out
    assert "rejected unknown_image: 1" in out and "oversized" in out and "held-out precision" in out
    assert "silhouette: no labels for wrap (never predicted)" in out
    head_set = load_head_set(settings(), "m1")
    assert f"head set {head_set.version} (" in out and str(head_set.path) in out
    # labels of images the model has no vectors of: nothing to train, a non-zero exit
    ghost = planted["labels_file"].with_name("ghost.csv")
    pd.DataFrame({"image_id": ["g1", "g2"], "dimension": "silhouette", "tag": ["fitted", "straight"]}).to_csv(
        ghost, index=False
    )
    assert cli.main(["tags", "train", "--labels", str(ghost)]) == 1
    assert "rejected unknown_image: 2" in capsys.readouterr().out
    assert cli.main(["tags", "train", "--labels", str(ghost), "--model-version", "m9"]) == 1


def test_labelled_vectors_are_each_images_newest_of_the_model_on_both_backends(warehouse):
    """select_labelled_vectors.sql on BigQuery (the emulator) and DuckDB: the labelled images' clean
    vectors of the model, an image listed on two days by its newest vector."""
    rows = [  # image, day, model, vector's first coordinate
        ("a", DAY, "m1", 1.0),
        ("a", DAY + dt.timedelta(days=1), "m1", 2.0),
        ("b", DAY, "m1", 3.0),
        ("b", DAY, "m2", 4.0),
        ("c", DAY, "m1", 5.0),
    ]
    log = pd.DataFrame(
        {
            "image_id": [r[0] for r in rows],
            "listed_date": [r[1] for r in rows],
            "model_version": [r[2] for r in rows],
            "category": "dress",
            "embedding": [[r[3], 0.0] for r in rows],
            "run_id": "run-1",
            "shard_id": 0,
            "attempt": 1,
            "embedded_at": pd.Timestamp("2026-03-30T01:00:00Z"),
        }
    )
    clean = log[["image_id", "listed_date", "model_version", "category", "shard_id", "attempt"]].assign(
        vector_run_id="run-1"
    )
    for table, frame in [("vector_log", log), ("vectors_clean", clean)]:
        warehouse.run("replace_table", rows=frame, names={"table": table, "columns": list(frame.columns)})
    got = warehouse.query("select_labelled_vectors", model_version="m1", image_ids=["a", "b", "ghost"])
    assert got["image_id"].tolist() == ["a", "b"]
    assert [float(v[0]) for v in got["embedding"]] == [2.0, 3.0]
