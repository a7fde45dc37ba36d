"""The fetch stage before the embedding job: a catalog partition of images over HTTP (a server on
127.0.0.1), a refused host, a dead link, a page that is not an image and a local file goes through
plan, fetch + embed, load and clean; every image is a vector or a reject with its reason, and the
funnel balances."""

from __future__ import annotations

import datetime as dt
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from loopback import serving

from vecflow import tasks
from vecflow.catalog import partition_dir
from vecflow.config import settings
from vecflow.funnel import record_sql_funnel

DAY = dt.date(2026, 3, 30)
pytestmark = pytest.mark.integration  # an HTTP server on loopback, the shipped model


def product_photos(n: int) -> list[bytes]:
    """Catalog-like JPEGs (a tinted, striped garment), as the generator draws them."""
    from vecflow.demo.catalog import fashion_mnist
    from vecflow.demo.catalog.render import jpeg_bytes, pattern_modulation, render

    images, _ = fashion_mnist.load("test")
    rng = np.random.default_rng(1)
    return [
        jpeg_bytes(render(images[i], (40, 60, 200), pattern_modulation("stripes", 8, 256), rng), 90) for i in range(n)
    ]


@pytest.fixture
def image_server():
    photos = product_photos(3)
    routes = {f"/img/{i}.jpg": photos[i] for i in range(3)}
    routes["/page.jpg"] = b"<html><body>Sold out</body></html>"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *args):
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", photos


def test_remote_images_are_fetched_before_the_embedding_job(vecflow_home, monkeypatch, image_server):
    from vecflow.warehouse import bootstrap, get_warehouse

    url, photos = image_server
    monkeypatch.setenv("VECFLOW_FETCH_ALLOWED_HOSTS", url.removeprefix("http://"))
    monkeypatch.setenv("VECFLOW_FETCH_ATTEMPTS", "1")
    folder = partition_dir(vecflow_home / "catalog", DAY)
    folder.mkdir(parents=True)
    (folder / "local.jpg").write_bytes(photos[0])  # the same bytes as img/0: an exact duplicate
    rows = [(f"h{i}", f"{url}/img/{i}.jpg") for i in range(3)] + [
        ("dead", f"{url}/img/gone.jpg"),
        ("page", f"{url}/page.jpg"),
        ("refused", "http://seller.invalid/x.jpg"),
        ("local", f"listed_date={DAY}/local.jpg"),
    ]
    pd.DataFrame(rows, columns=["image_id", "uri"]).assign(source="shop_a").to_parquet(folder / "manifest.parquet")

    s = settings()
    warehouse = get_warehouse(s)
    bootstrap(warehouse)
    shards = tasks.plan_shards(s, warehouse, DAY, "fetch-1")
    for shard in shards:
        tasks.embed_shard(s, warehouse, shard, attempt=1)
    loaded = tasks.load_vector_log(s, warehouse, DAY, "fetch-1", shards)
    assert loaded["vectors"] == 4 and loaded["rejects_by_reason"] == {
        "dead_link": 1,
        "not_an_image": 1,
        "host_not_allowed": 1,
    }
    rejects = warehouse.table("rejects").set_index("image_id")
    assert "404" in rejects.loc["dead", "detail"] and "seller.invalid" in rejects.loc["refused", "detail"]

    tasks.clean(s, warehouse, DAY, "fetch-1")
    log = warehouse.table("vector_log").set_index("image_id")
    assert log.loc["h0", "content_md5"] == log.loc["local", "content_md5"]  # fetched bytes are the served bytes
    assert sorted(warehouse.table("dedup_map")["image_id"]) == ["local"]  # and found as the duplicate it is
    tasks.tag_images(s, warehouse, DAY, "fetch-1")
    tasks.build_indexes(s, warehouse, DAY, "fetch-1")
    record_sql_funnel(warehouse, DAY, "fetch-1", s.model_version)
    assert warehouse.query("funnel_violations", run_date=DAY).empty


def test_a_rerun_of_unchanged_images_embeds_nothing(vecflow_home, monkeypatch, image_server):
    """Pay once: the second run of a partition copies every vector (reused) and sends no image to the
    embedding job; the tables it leaves are the first run's. Two of the images have no category (a
    NULL the copy once crashed on)."""
    import pyarrow.parquet as pq
    from warehouse_rows import snapshot

    from vecflow.embed.prefetch import reused_url
    from vecflow.warehouse import bootstrap, get_warehouse

    url, photos = image_server
    monkeypatch.setenv("VECFLOW_FETCH_ALLOWED_HOSTS", url.removeprefix("http://"))
    folder = partition_dir(vecflow_home / "catalog", DAY)
    folder.mkdir(parents=True)
    (folder / "local.jpg").write_bytes(photos[1])
    rows = [
        ("h0", f"{url}/img/0.jpg", "dress"),
        ("h2", f"{url}/img/2.jpg", None),
        ("local", f"listed_date={DAY}/local.jpg", None),
    ]
    catalog = pd.DataFrame(rows, columns=["image_id", "uri", "category"]).assign(source="shop_a")
    catalog.to_parquet(folder / "manifest.parquet")
    s = settings()
    warehouse = get_warehouse(s)
    bootstrap(warehouse)

    def run(run_id: str) -> list[dict]:
        shards = tasks.plan_shards(s, warehouse, DAY, run_id)
        for shard in shards:
            tasks.embed_shard(s, warehouse, shard, attempt=1)
        tasks.load_vector_log(s, warehouse, DAY, run_id, shards)
        tasks.clean(s, warehouse, DAY, run_id)
        return shards

    first = run("run-1")
    assert not Path(reused_url(first[0])).exists()
    before = snapshot(warehouse)
    second = run("run-2")
    embedded = pq.read_table(second[0]["output"]).to_pandas()
    assert embedded.empty  # the job got no image
    reused = pq.read_table(reused_url(second[0]), columns=["image_id", "catalog_category"]).to_pylist()
    assert {r["image_id"]: r["catalog_category"] for r in reused} == {"h0": "dress", "h2": None, "local": None}
    latest = warehouse.table("v_vector_log_latest")
    assert set(latest["run_id"]) == {"run-2"} and latest["reused"].all()
    record_sql_funnel(warehouse, DAY, "run-2", s.model_version)
    funnel = warehouse.table("funnel_metrics").query("stage == 'embed'").groupby("metric")["value"].sum()
    assert funnel["reused"] == 3 and funnel["out"] == 3
    after = snapshot(warehouse)
    assert {t: after[t] for t in ("vectors_clean", "dedup_map", "rejects")} == {
        t: before[t] for t in ("vectors_clean", "dedup_map", "rejects")
    }


def test_for_gpu_pods_the_fetched_manifest_carries_every_image(vecflow_home, monkeypatch, image_server):
    """A pod shares no disk with the worker: with the kubernetes backend, local images are packed into
    the fetched manifest like downloaded ones, and the job embeds them with no catalog on its disk."""
    import shutil

    import pyarrow.parquet as pq

    from vecflow.embed.prefetch import prefetch_shard
    from vecflow.embed.runner import run_shard
    from vecflow.warehouse import bootstrap, get_warehouse

    url, photos = image_server
    monkeypatch.setenv("VECFLOW_FETCH_ALLOWED_HOSTS", url.removeprefix("http://"))
    monkeypatch.setenv("VECFLOW_EMBED_BACKEND", "kubernetes")
    folder = partition_dir(vecflow_home / "catalog", DAY)
    folder.mkdir(parents=True)
    (folder / "local.jpg").write_bytes(photos[2])
    rows = [("h0", f"{url}/img/0.jpg"), ("local", f"listed_date={DAY}/local.jpg"), ("gone", "listed_date=x/no.jpg")]
    pd.DataFrame(rows, columns=["image_id", "uri"]).assign(source="shop_a").to_parquet(folder / "manifest.parquet")
    s = settings()
    warehouse = get_warehouse(s)
    bootstrap(warehouse)
    [shard] = tasks.plan_shards(s, warehouse, DAY, "pods-1")
    fetched = prefetch_shard(shard, s, warehouse, attempt=1)
    manifest = pq.read_table(fetched["manifest"]).to_pandas().set_index("image_id")
    assert manifest.loc["h0", "content"] == photos[0] and manifest.loc["local", "content"] == photos[2]
    assert manifest.loc["gone", "content"] is None  # unreadable: the job rejects it as missing

    shutil.rmtree(vecflow_home / "catalog")  # what the pod sees of the worker's disk
    run_shard(fetched, s, attempt=1)
    out = pq.read_table(shard["output"]).to_pandas().set_index("image_id")
    assert out.loc[["h0", "local"], "reject_reason"].isna().all()
    assert out.loc["gone", "reject_reason"] == "missing"
