"""The index store (vecflow.index.store) on a local directory and on a GCS server on 127.0.0.1
(fake-gcs-server, through the real gcsfs and google-cloud-storage clients): versions are whole or
refused, loads are md5-checked, pointers are swapped only from the state they were read in, and the
daily build publishes, serves and rolls back from a bucket."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from test_index import DAYS, index_env, run_day  # noqa: F401 (index_env: a fixture)

from vecflow.config import settings
from vecflow.index.store import IndexIntegrityError, IndexStore, PointerConflict, index_store
from vecflow.index.window import load_published, read_current, rollback


def new_bucket(gcs_server: str) -> str:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="vecflow-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server}
    )
    return client.create_bucket(f"index-{uuid.uuid4().hex[:12]}").name


def gcs_options(gcs_server: str) -> dict:
    return {"token": "anon", "endpoint_url": gcs_server}


@pytest.fixture
def store(request, tmp_path):
    if request.param == "local":
        return IndexStore(str(tmp_path / "index"))
    gcs_server = request.getfixturevalue("gcs_server")
    return IndexStore(f"gs://{new_bucket(gcs_server)}/prod/index", gcs_options(gcs_server))


BOTH = pytest.mark.parametrize("store", ["local", pytest.param("gcs", marks=pytest.mark.integration)], indirect=True)


@BOTH
def test_a_version_reads_back_whole_and_md5_checked(store):
    manifest = store.write_version("m/coat/day=2026-05-01", {"index.faiss": b"faiss", "ids.parquet": b"ids"}, {"n": 2})
    files, read = store.read_version("m/coat/day=2026-05-01")
    assert files == {"index.faiss": b"faiss", "ids.parquet": b"ids"} and read == manifest
    assert read["files"]["index.faiss"] == "665b73e70a83e8488185f3a18b1357e0"  # md5 of b"faiss"
    assert store.children("m") == ["coat"] and store.children("m/coat") == ["day=2026-05-01"]

    store.fs.pipe_file(store.path("m/coat/day=2026-05-01/index.faiss"), b"faisz")
    with pytest.raises(IndexIntegrityError, match=r"index\.faiss: md5 .*, manifest says 665b73e7"):
        store.read_version("m/coat/day=2026-05-01")


@BOTH
def test_files_without_their_manifest_are_not_a_version(store):
    store.fs.makedirs(store.path("m/coat/window/v-1"), exist_ok=True)  # a local disk needs the folder
    store.fs.pipe_file(store.path("m/coat/window/v-1/index.faiss"), b"half written")
    with pytest.raises(IndexIntegrityError, match="no manifest.json"):
        store.read_version("m/coat/window/v-1")


@BOTH
def test_a_pointer_is_swapped_only_from_the_state_it_was_read_in(store):
    assert store.read_pointer("m/coat/CURRENT") is None
    store.swap_pointer("m/coat/CURRENT", {"version": "v-1"}, expected=None)
    first = store.read_pointer("m/coat/CURRENT")
    assert first.payload == {"version": "v-1"}
    with pytest.raises(PointerConflict, match="changed since it was read"):
        store.swap_pointer("m/coat/CURRENT", {"version": "v-x"}, expected=None)

    # two writers read v-1; the first switch lands, the second is refused instead of undoing it
    store.swap_pointer("m/coat/CURRENT", {"version": "v-2"}, expected=first)
    with pytest.raises(PointerConflict):
        store.swap_pointer("m/coat/CURRENT", {"version": "v-3"}, expected=first)
    assert store.read_pointer("m/coat/CURRENT").payload == {"version": "v-2"}


def test_a_storage_url_other_than_a_path_or_a_bucket_is_refused(monkeypatch):
    from vecflow.config import ConfigError

    monkeypatch.setenv("VECFLOW_STORAGE_URL", "s3://bucket/index")
    with pytest.raises(ConfigError, match=r"VECFLOW_STORAGE_URL='s3://bucket/index' must be a local path or gs://"):
        _ = settings().paths.index_url


@pytest.fixture
def bucket_index_env(index_env, gcs_server, monkeypatch):  # noqa: F811 (the fixture imported above)
    bucket = new_bucket(gcs_server)
    monkeypatch.setenv("VECFLOW_STORAGE_URL", f"gs://{bucket}/vecflow")
    monkeypatch.setenv("VECFLOW_STORAGE_OPTIONS", json.dumps(gcs_options(gcs_server)))
    return (*index_env, bucket, gcs_server)


def test_the_daily_build_publishes_serves_and_rolls_back_from_a_bucket(bucket_index_env):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    warehouse, centers, bucket, gcs_server = bucket_index_env
    s = settings()
    store = index_store(s)
    assert store.url == f"gs://{bucket}/vecflow/index"
    versions = [run_day(warehouse, day, 50, centers)[0]["version"] for day in DAYS[:3]]

    # what a search service reads: the bucket's objects, through the plain storage client
    client = storage.Client(
        project="vecflow-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server}
    )
    current = json.loads(client.bucket(bucket).blob("vecflow/index/m1/coat/CURRENT").download_as_bytes())
    assert current["version"] == versions[-1]
    names = {b.name for b in client.bucket(bucket).list_blobs(prefix=f"vecflow/index/m1/coat/window/{versions[-1]}/")}
    assert {n.rsplit("/", 1)[-1] for n in names} == {"index.faiss", "ids.parquet", "manifest.json"}
    registry = warehouse.table("index_registry")
    assert registry["path"].str.startswith(f"gs://{bucket}/vecflow/index/m1/coat/").all()

    index, ids, manifest = load_published(store, "m1", "coat")
    assert manifest["version"] == versions[-1] and index.ntotal == len(ids) == 150
    vectors = warehouse.table("v_vectors_clean")
    first = vectors.iloc[0]
    _, found = index.search(np.asarray([first["embedding"]], dtype="float32"), 1)
    assert ids.set_index("id").loc[found[0][0], "image_id"] == first["image_id"]

    assert rollback(s, warehouse, "coat") == versions[-2]
    assert read_current(store, "m1", "coat").payload["version"] == versions[-2]
    # another writer switched CURRENT after this one read it: the late switch is refused
    stale = read_current(store, "m1", "coat")
    assert rollback(s, warehouse, "coat") == versions[-3]
    with pytest.raises(PointerConflict):
        store.swap_pointer("m1/coat/CURRENT", {"version": versions[-1]}, expected=stale)
