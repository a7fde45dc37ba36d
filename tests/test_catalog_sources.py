"""Catalog sources: partitioned files (parquet, CSV, JSON lines) under a local path or a bucket on a
GCS server on 127.0.0.1, a warehouse table, column renames, missing and empty partitions, and a
folder of images imported as a partition and embedded."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from warehouse_rows import catalog

from vecflow.catalog import CatalogError, import_folder, read_partition
from vecflow.config import settings

DAY = dt.date(2026, 3, 30)


def test_the_default_layout_reads_the_partition_folder(vecflow_home):
    folder = vecflow_home / "catalog" / f"listed_date={DAY}"
    folder.mkdir(parents=True)
    pd.DataFrame({"image_id": ["a", "b"], "uri": ["a.jpg", "b.jpg"], "source": "shop_a"}).to_parquet(
        folder / "manifest.parquet"
    )
    (folder / "images").mkdir()  # what else lies in the folder is not read
    frame = read_partition(settings(), None, DAY)
    assert frame.to_dict("records") == [
        {"image_id": "a", "uri": "a.jpg", "source": "shop_a", "listed_date": DAY, "category": None, "attributes": None},
        {"image_id": "b", "uri": "b.jpg", "source": "shop_a", "listed_date": DAY, "category": None, "attributes": None},
    ]


def test_csv_with_other_column_names_and_ids_kept_as_text(tmp_path, monkeypatch):
    root = tmp_path / "exports"
    (root / "2026" / f"{DAY}").mkdir(parents=True)
    (root / "2026" / f"{DAY}" / "items.csv").write_text(
        'item_id,url,seller,title,price\n007,https://cdn.invalid/7.jpg,s1,"Linen shirt, blue",19.90\n'
    )
    monkeypatch.setenv("VECFLOW_CATALOG_URL", root.as_uri())
    monkeypatch.setenv("VECFLOW_CATALOG_PATH_TEMPLATE", "2026/{date}/")
    monkeypatch.setenv("VECFLOW_CATALOG_COLUMNS", json.dumps({"item_id": "image_id", "url": "uri", "seller": "source"}))
    [row] = read_partition(settings(), None, DAY).to_dict("records")
    assert (row["image_id"], row["uri"], row["source"]) == ("007", "https://cdn.invalid/7.jpg", "s1")
    # the other columns are the image's attributes, as the file has them (CSV: text)
    assert json.loads(row["attributes"]) == {"price": "19.90", "title": "Linen shirt, blue"}


def test_attributes_keep_numbers_and_leave_out_empty_values(tmp_path, monkeypatch):
    folder = tmp_path / f"listed_date={DAY}"
    folder.mkdir()
    pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "uri": ["a.jpg", "b.jpg"],
            "brand": ["Acme", None],
            "price": [12.5, float("nan")],
            "stock": pd.array([3, None], dtype="Int64"),
            "on_sale": [True, False],
        }
    ).to_parquet(folder / "part-0.parquet")
    monkeypatch.setenv("VECFLOW_CATALOG_URL", str(tmp_path))
    a, b = read_partition(settings(), None, DAY)["attributes"]
    assert json.loads(a) == {"brand": "Acme", "on_sale": True, "price": 12.5, "stock": 3}
    assert json.loads(b) == {"on_sale": False}


def test_one_json_lines_file_per_day(tmp_path, monkeypatch):
    (tmp_path / f"catalog-{DAY}.jsonl").write_text(
        '{"image_id": "x1", "uri": "x1.png", "category": "dress"}\n{"image_id": "x2", "uri": "x2.png"}\n'
    )
    monkeypatch.setenv("VECFLOW_CATALOG_URL", str(tmp_path))
    monkeypatch.setenv("VECFLOW_CATALOG_PATH_TEMPLATE", "catalog-{date}.jsonl")
    frame = read_partition(settings(), None, DAY)
    assert list(frame["image_id"]) == ["x1", "x2"] and frame["category"].tolist()[0] == "dress"


def test_a_missing_partition_names_the_source_and_the_date_and_an_empty_one_has_no_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("VECFLOW_CATALOG_URL", str(tmp_path))
    monkeypatch.setenv("VECFLOW_CATALOG_PATH_TEMPLATE", "day={date}.csv")
    with pytest.raises(
        CatalogError, match=rf"no catalog partition for {DAY}: nothing to read at {tmp_path}/day={DAY}.csv"
    ):
        read_partition(settings(), None, DAY)
    (tmp_path / f"day={DAY}.csv").write_text("image_id,uri\n")
    assert read_partition(settings(), None, DAY).empty
    (tmp_path / f"day={DAY}.csv").write_text("id,link\n1,a.jpg\n")
    with pytest.raises(
        CatalogError, match=r"required column\(s\) \['image_id', 'uri'\] missing; it has \['id', 'link'\]"
    ):
        read_partition(settings(), None, DAY)


def test_a_warehouse_table_is_read_by_partition(warehouse, monkeypatch):
    catalog(warehouse, DAY, ["w1", "w2"])
    catalog(warehouse, DAY + dt.timedelta(days=1), ["other"])
    monkeypatch.setenv("VECFLOW_CATALOG_SOURCE", "warehouse")
    monkeypatch.setenv("VECFLOW_CATALOG_TABLE", f"{warehouse.dataset}.catalog")
    frame = read_partition(settings(), warehouse, DAY)
    assert sorted(frame["image_id"]) == ["w1", "w2"] and set(frame["listed_date"]) == {DAY}

    monkeypatch.delenv("VECFLOW_CATALOG_TABLE")
    with pytest.raises(CatalogError, match="VECFLOW_CATALOG_TABLE"):
        read_partition(settings(), warehouse, DAY)


@pytest.mark.integration  # embeds with the shipped model
def test_a_folder_of_images_becomes_a_partition_that_embeds(vecflow_home, tmp_path, capsys):
    """`catalog import DIR`: JPEG, PNG and WebP in category folders; other files are named, not listed;
    then every listed image is a vector or a reject with its reason."""
    from PIL import Image, ImageDraw

    from vecflow import tasks
    from vecflow.cli import main
    from vecflow.warehouse import get_warehouse

    photos = tmp_path / "photos"
    for i, (folder, suffix) in enumerate([("dress", "jpg"), ("dress", "png"), ("coat", "webp"), ("coat", "jpeg")]):
        (photos / folder).mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (96, 96), "white")
        ImageDraw.Draw(image).rectangle([20 + i, 10, 70, 85], fill=(180, 30 + 40 * i, 40))
        image.save(photos / folder / f"item{i}.{suffix}")
    (photos / "notes.txt").write_text("not an image")

    assert main(["catalog", "import", str(photos), "--date", str(DAY), "--category-from-folder"]) == 0
    out = capsys.readouterr().out
    assert "4 images listed" in out and "1 other files not listed (not images): notes.txt" in out
    frame = read_partition(settings(), None, DAY)
    assert sorted(zip(frame["image_id"], frame["category"])) == [
        ("coat/item2.webp", "coat"),
        ("coat/item3.jpeg", "coat"),
        ("dress/item0.jpg", "dress"),
        ("dress/item1.png", "dress"),
    ]

    s, warehouse = settings(), get_warehouse()
    shards = tasks.plan_shards(s, warehouse, DAY, "import-1")
    for shard in shards:
        tasks.embed_shard(s, warehouse, shard, attempt=1)
    loaded = tasks.load_vector_log(s, warehouse, DAY, "import-1", shards)
    assert loaded["vectors"] + loaded["rejects"] == 4 and loaded["vectors"] >= 1

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no pictures here")
    with pytest.raises(CatalogError, match="no images"):
        import_folder(s, empty, DAY)


def test_catalog_import_warns_about_folders_that_are_no_category(vecflow_home, tmp_path, capsys, caplog):
    """Folder names are mapped through the category dimension's synonyms: `Dresses` and `coat` are
    categories, `misc` and `Summer sale` are not; images at the top have no category."""
    from PIL import Image

    from vecflow.cli import main

    photos = tmp_path / "photos"
    files = ["Dresses/a.jpg", "coat/b.jpg", "misc/c.jpg", "misc/d.jpg", "Summer sale/e.jpg", "f.jpg", "g.jpg"]
    for name in files:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "white").save(photos / name)

    assert main(["catalog", "import", str(photos), "--date", str(DAY), "--category-from-folder"]) == 0
    out = capsys.readouterr().out
    unknown = "3 images in 2 folders whose names are no category of the taxonomy"
    assert unknown in out and "(nor a synonym of one): 'misc' (2), 'Summer sale' (1);" in out
    assert (
        "warning: 2 images have no category (not in a sub-folder): f.jpg, g.jpg; the category's fallback source" in out
    )
    assert [r.levelname for r in caplog.records if "catalog import" in r.getMessage()] == ["WARNING", "WARNING"]
    # what the folders hold is imported as it is: the daily run maps (or rejects) the names
    assert sorted(read_partition(settings(), None, DAY)["category"].dropna()) == [
        "Dresses",
        "Summer sale",
        "coat",
        "misc",
        "misc",
    ]

    assert main(["catalog", "import", str(photos), "--date", str(DAY)]) == 0
    out = capsys.readouterr().out
    assert "7 images have no category (no --category-from-folder): Dresses/a.jpg" in out and unknown not in out


# --- a GCS server on 127.0.0.1 -------------------------------------------------------------------


def test_a_catalog_in_a_bucket_is_read_through_gcsfs(gcs_server, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    client = storage.Client(project="vecflow-test", credentials=AnonymousCredentials())
    bucket = client.create_bucket("shop-catalog")
    manifest = pd.DataFrame({"item_id": ["g1", "g2", "g3"], "url": ["gs://shop-images/g1.jpg", "g2.jpg", "g3.jpg"]})
    bucket.blob(f"daily/dt={DAY}/part-0.parquet").upload_from_string(manifest.iloc[:2].to_parquet(index=False))
    bucket.blob(f"daily/dt={DAY}/part-1.parquet").upload_from_string(manifest.iloc[2:].to_parquet(index=False))
    bucket.blob(f"daily/dt={DAY}/_SUCCESS").upload_from_string(b"")

    monkeypatch.setenv("VECFLOW_CATALOG_URL", "gs://shop-catalog/daily")
    monkeypatch.setenv("VECFLOW_CATALOG_PATH_TEMPLATE", "dt={date}/")
    monkeypatch.setenv("VECFLOW_CATALOG_COLUMNS", json.dumps({"item_id": "image_id", "url": "uri"}))
    monkeypatch.setenv("VECFLOW_CATALOG_STORAGE_OPTIONS", json.dumps({"token": "anon", "endpoint_url": gcs_server}))
    frame = read_partition(settings(), None, DAY)
    assert list(frame["image_id"]) == ["g1", "g2", "g3"] and frame["uri"][0] == "gs://shop-images/g1.jpg"
    with pytest.raises(
        CatalogError, match=f"nothing to read at gs://shop-catalog/daily/dt={DAY + dt.timedelta(days=1)}/"
    ):
        read_partition(settings(), None, DAY + dt.timedelta(days=1))
