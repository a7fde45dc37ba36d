"""A real catalog's daily runs end to end, nothing on the worker's disk but the warehouse: the catalog
is daily parquet files in a bucket (with its own column names and attributes), its images are
half in a bucket and half behind an HTTP server, and the index store is a bucket too. The buckets
are a GCS server on 127.0.0.1 (fake-gcs-server, through the real gcsfs and google-cloud-storage
clients), the images' HTTP server a thread on 127.0.0.1. Planted bad URLs (dead links on both, a
page that is not an image, a host off the allowlist) are rejects with their reasons, the funnel
balances, and search serves from the published indexes in the bucket. The runs' staging (shard
manifests, fetched images, shard outputs) is in the store's bucket too, as GPU pods would need it,
and the indexes are built by three mapped build_indexes tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from loopback import serving

from vecflow.config import settings
from vecflow.demo.runner import generate_catalog, run_partitions
from vecflow.resources import DEFAULT_TREND_SPEC
from vecflow.warehouse import get_warehouse

START = dt.date(2026, 3, 30)
DAYS = [START, START + dt.timedelta(days=1)]
# the GCS server is the session's: other tests' buckets are there too
SUFFIX = uuid.uuid4().hex[:8]
CATALOG_BUCKET, IMAGE_BUCKET, STORE_BUCKET = f"e2e-catalog-{SUFFIX}", f"e2e-images-{SUFFIX}", f"e2e-store-{SUFFIX}"
PLANTED = {  # item_id -> (url under the image server or bucket, the reject reason it must get)
    "bad-dead-http": ("{http}/images/gone.jpg", "dead_link"),
    "bad-dead-gs": (f"gs://{IMAGE_BUCKET}/gone.jpg", "dead_link"),
    "bad-page": ("{http}/pages/sold-out.jpg", "not_an_image"),
    "bad-host": ("https://seller-cdn.invalid/a.jpg", "host_not_allowed"),
}


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def storage_client(gcs_server: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="vecflow-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server}
    )


def shop_catalog(generated, http: str, client) -> dict[dt.date, pd.DataFrame]:
    """The generated catalog as a shop would hold it: images alternately on the HTTP server and in
    the image bucket, the shop's column names, attributes, and the planted bad URLs; each day's
    file uploaded to the catalog bucket. Returns each day's rows."""
    images, catalog = client.create_bucket(IMAGE_BUCKET), client.create_bucket(CATALOG_BUCKET)
    days = {}
    for day in DAYS:
        manifest = pd.read_parquet(generated / f"listed_date={day}" / "manifest.parquet")
        urls = []
        for i, relative in enumerate(manifest["uri"]):
            name = relative.split("/images/", 1)[1]
            if i % 2:
                images.blob(f"{day}/{name}").upload_from_filename(generated / relative)
                urls.append(f"gs://{IMAGE_BUCKET}/{day}/{name}")
            else:
                urls.append(f"{http}/{relative}")
        shop = pd.DataFrame(
            {
                "item_id": manifest["image_id"],
                "url": urls,
                "shop": manifest["source"],
                "category": manifest["category"],
                "title": [f"item {i} of {day}" for i in range(len(manifest))],
                "price": [10.0 + i for i in range(len(manifest))],
            }
        )
        planted = pd.DataFrame(
            [(f"{day}-{item}", url.format(http=http), "shop_a") for item, (url, _) in PLANTED.items()],
            columns=["item_id", "url", "shop"],
        )
        days[day] = pd.concat([shop, planted], ignore_index=True)
        catalog.blob(f"daily/dt={day}/part-0.parquet").upload_from_string(days[day].to_parquet(index=False))
        catalog.blob(f"daily/dt={day}/_SUCCESS").upload_from_string(b"")
    return days


@pytest.fixture(scope="module")
def remote_pipeline(tmp_path_factory, airflow_db, search_server, gcs_server):
    home = tmp_path_factory.mktemp("remote")
    client = storage_client(gcs_server)
    client.create_bucket(STORE_BUCKET)
    served = tmp_path_factory.mktemp("served")
    (served / "pages").mkdir()
    (served / "pages" / "sold-out.jpg").write_text("<html><body>Sold out</body></html>")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VECFLOW_HOME", str(tmp_path_factory.mktemp("generator")))
        generate_catalog(
            argparse.Namespace(seed=21, start_date=START, days=len(DAYS), images_per_day=20, trends=DEFAULT_TREND_SPEC),
        )
        generated = settings().paths.catalog_dir
        for day in DAYS:  # the image server's files: the generated images, and the page
            (served / f"listed_date={day}").symlink_to(generated / f"listed_date={day}")
    handler = partial(Quiet, directory=str(served))
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as http_server:
        http = f"http://127.0.0.1:{http_server.server_address[1]}"
        days = shop_catalog(generated, http, client)
        options = json.dumps({"token": "anon", "endpoint_url": gcs_server})
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VECFLOW_HOME", str(home))
            env.setenv("VECFLOW_ES_INDEX_PREFIX", "remote")
            env.setenv("VECFLOW_CATALOG_URL", f"gs://{CATALOG_BUCKET}/daily")
            env.setenv("VECFLOW_CATALOG_PATH_TEMPLATE", "dt={date}/")
            env.setenv("VECFLOW_CATALOG_COLUMNS", json.dumps({"item_id": "image_id", "url": "uri", "shop": "source"}))
            env.setenv("VECFLOW_CATALOG_STORAGE_OPTIONS", options)
            env.setenv("VECFLOW_FETCH_ALLOWED_HOSTS", f"{http.removeprefix('http://')},gs://{IMAGE_BUCKET}")
            env.setenv("VECFLOW_FETCH_ATTEMPTS", "2")
            env.setenv("VECFLOW_STORAGE_URL", f"gs://{STORE_BUCKET}/prod")
            env.setenv("VECFLOW_STORAGE_OPTIONS", options)
            env.setenv("STORAGE_EMULATOR_HOST", gcs_server)  # for the embedding job's pyarrow filesystem
            env.setenv("VECFLOW_INDEX_BUILD_GROUPS", "3")  # build_indexes mapped, as on a production cluster
            run_partitions(DAYS)
            yield settings(), get_warehouse(), days, generated, client


def test_every_catalog_row_is_a_vector_a_duplicate_or_a_reject_with_its_reason(remote_pipeline):
    s, warehouse, days, _, _ = remote_pipeline
    catalog, clean = warehouse.table("catalog"), warehouse.table("vectors_clean")
    dedup, rejects = warehouse.table("dedup_map"), warehouse.table("rejects")
    for day, rows in days.items():
        day_catalog, day_clean, day_dedup, day_rejects = (
            t[t["listed_date"].astype(str) == str(day)] for t in (catalog, clean, dedup, rejects)
        )
        assert sorted(day_catalog["image_id"]) == sorted(rows["item_id"])
        outcomes = [*day_clean["image_id"], *day_dedup["image_id"], *day_rejects["image_id"]]
        assert sorted(outcomes) == sorted(rows["item_id"]), day  # each once: nothing dropped, nothing twice
        assert warehouse.query("funnel_violations", run_date=day).empty
        reasons = dict(zip(day_rejects["image_id"], day_rejects["reason"]))
        for item, (_, reason) in PLANTED.items():
            assert reasons[f"{day}-{item}"] == reason, (item, reasons)
        # no good image was lost to the network: the others are the generator's planted corrupt files
        assert set(reasons.values()) - {r for _, r in PLANTED.values()} <= {"corrupt"}


def test_catalog_attributes_reach_the_clean_vectors(remote_pipeline):
    _, warehouse, days, _, _ = remote_pipeline
    clean = warehouse.table("vectors_clean").set_index("image_id")
    rows = days[DAYS[0]].set_index("item_id")
    kept = [i for i in rows.index if i in clean.index]
    assert kept
    for item in kept:
        expected = {"price": rows.loc[item, "price"], "title": rows.loc[item, "title"]}
        assert json.loads(clean.loc[item, "attributes"]) == expected


def test_the_runs_staged_their_shards_in_the_bucket(remote_pipeline):
    s, _, days, _, client = remote_pipeline
    assert not (s.paths.home / "staging").exists()
    staged = [b.name for b in client.list_blobs(STORE_BUCKET, prefix="prod/staging/")]
    for day in DAYS:
        fetched = [n for n in staged if n.startswith(f"prod/staging/{day}/") and n.endswith(".fetched.parquet")]
        outputs = [n for n in staged if n.startswith(f"prod/staging/{day}/") and n.endswith(".vectors.parquet")]
        assert fetched and len(outputs) == len(fetched)
        manifest = pd.read_parquet(io.BytesIO(client.bucket(STORE_BUCKET).blob(fetched[0]).download_as_bytes()))
        # what the job embedded came in the manifest, fetched from the image server and the image bucket
        assert manifest["content"].notna().sum() > 0


def test_indexes_are_published_to_the_bucket_and_search_serves_from_there(remote_pipeline):
    from vecflow.index.search import search

    s, warehouse, days, generated, client = remote_pipeline
    assert not (s.paths.home / "index").exists()  # nothing on the worker's disk
    currents = [b.name for b in client.list_blobs(STORE_BUCKET, prefix="prod/index/") if b.name.endswith("/CURRENT")]
    assert currents
    published = {
        name.split("/")[-2]: json.loads(client.bucket(STORE_BUCKET).blob(name).download_as_bytes())["version"]
        for name in currents
    }
    clean = warehouse.table("vectors_clean")
    image = clean.iloc[0]
    path = generated / f"listed_date={image['listed_date']:%Y-%m-%d}" / "images" / f"{image['image_id']}.jpg"
    results = search(s, path, k=3)
    top = results.iloc[0]
    assert top["image_id"] == image["image_id"] and top["score"] > 0.999
    assert top["index_version"] == published[top["category"]]
    assert json.loads(top["attributes"])["title"].startswith("item ")
