"""The search service on 127.0.0.1 (uvicorn, real HTTP): it swaps to a newly published version under
concurrent requests with no failed request, refuses a damaged version (the old one keeps serving),
applies tombstones, and answers expected errors with 4xx JSON; and `python -m vecflow.cli serve` does
the same from an index store in a bucket (fake-gcs-server on 127.0.0.1, real gcsfs and
google-cloud-storage clients)."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from test_index import DAYS, index_env  # noqa: F401  (a fixture)
from test_index_store import gcs_options, new_bucket
from test_lifecycle import day_rows, run_day
from waiting import wait_until

from vecflow.config import settings
from vecflow.index.search import TOMBSTONES
from vecflow.index.store import index_store
from vecflow.index.window import read_current, window_key


@pytest.fixture
def service(index_env):  # noqa: F811
    import uvicorn

    from vecflow.serve import SearchService, create_app

    warehouse, centers = index_env
    rows = day_rows(DAYS[0], 100, centers)
    rows[99]["content_md5"] = rows[10]["content_md5"]  # the same file again: folded into rows[10]
    run_day(warehouse, DAYS[0], rows)
    svc = SearchService(settings(), poll_seconds=0.05)
    svc.start_polling()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    wait_until(lambda: _up(client), 20, what="the search service to answer /healthz")
    yield svc, client, warehouse, centers, rows
    server.should_exit = True
    thread.join(10)
    svc.stop()


def _up(client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_the_service_swaps_versions_under_load_with_no_failed_request(service):
    svc, client, warehouse, centers, rows = service
    first = client.get("/healthz").json()["versions"]["coat"]
    failures, answered, stop = [], [], threading.Event()

    def loop():
        deadline = time.monotonic() + 90  # bounded in time: stops early once the swap has been seen
        with httpx.Client(base_url=client.base_url, timeout=10) as own:
            for i in itertools.count():
                if stop.is_set() or time.monotonic() > deadline:
                    return
                r = own.get("/search", params={"image_id": rows[i % 50]["image_id"], "k": 5})
                if r.status_code != 200 or len(r.json()["results"]) != 5:
                    failures.append((r.status_code, r.text[:200]))
                answered.append(r.json()["results"][0]["index_version"] if r.status_code == 200 else None)

    workers = [threading.Thread(target=loop) for _ in range(4)]
    for w in workers:
        w.start()
    run_day(warehouse, DAYS[1], day_rows(DAYS[1], 100, centers))  # publishes a new version meanwhile
    second = wait_until(
        lambda: (v := client.get("/healthz").json()["versions"]["coat"]) != first and v,
        30,
        what="the service to serve the new version",
    )
    wait_until(lambda: second in answered, 30, what="a request answered by it")
    stop.set()
    for w in workers:
        w.join(30)
    assert failures == []
    assert set(answered) <= {first, second} and second in answered


def test_a_damaged_version_is_refused_and_the_old_one_keeps_serving(service):
    svc, client, warehouse, centers, rows = service
    s = settings()
    store = index_store(s)
    serving = client.get("/healthz").json()["versions"]["coat"]
    svc.stop()  # no polling: the new version is damaged on disk before the service looks
    run_day(warehouse, DAYS[1], day_rows(DAYS[1], 100, centers))
    new = read_current(store, "m1", "coat").payload["version"]
    path = store.path(window_key("m1", "coat", new)) + "/index.faiss"
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00damaged\x00")
    assert svc.refresh() is False and "md5" in svc.last_error
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and health["versions"]["coat"] == serving
    assert client.get("/search", params={"image_id": rows[0]["image_id"]}).status_code == 200


def test_tombstones_filters_vectors_and_errors_over_http(service):
    svc, client, warehouse, centers, rows = service
    s = settings()
    target = rows[3]
    # a tombstone written by the lifecycle step (a feed applied outside the daily run)
    import pandas as pd

    from vecflow.index.build import stable_id

    buffer = io.BytesIO()
    pd.DataFrame({"image_id": [target["image_id"]], "id": [stable_id(target["image_id"])]}).to_parquet(buffer)
    index_store(s).write_file(TOMBSTONES, buffer.getvalue())
    wait_until(lambda: client.get("/healthz").json()["tombstones"] == 1, 20, what="the tombstone set to load")
    by_vector = client.post("/search", json={"vector": target["embedding"]}, params={"k": 3}).json()
    assert target["image_id"] not in [r["image_id"] for r in by_vector["results"]]
    assert len(by_vector["results"]) == 3
    red = client.get("/search", params={"image_id": rows[0]["image_id"], "filter": "color=red", "k": 10}).json()
    assert red["results"] and all("color=red" in r["tags"] for r in red["results"])
    assert rows[0]["image_id"] not in [r["image_id"] for r in red["results"]]  # more like it: not itself
    for params, status in [
        ({"image_id": "nope"}, 404),
        ({"image_id": rows[0]["image_id"], "filter": "colour=red"}, 400),
        ({"image_id": rows[0]["image_id"], "listed_after": "yesterday"}, 400),
    ]:
        r = client.get("/search", params=params)
        assert r.status_code == status and "error" in r.json()
    assert client.post("/search", content=b"not an image", headers={"content-type": "image/jpeg"}).status_code == 415
    wrong = client.post("/search", json={"vector": [0.1, 0.2]})
    assert wrong.status_code == 400 and "numbers" in wrong.json()["error"]
    assert np.isclose(by_vector["results"][0]["score"], max(r["score"] for r in by_vector["results"]))


def _ids(results) -> list:
    return [[r["image_id"] for r in answer] for answer in results]


def _base64(vector) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def test_batches_base64_vectors_and_a_duplicate_searched_as_its_canonical(service):
    """POST /search/batch answers as single searches do (numbers, base64 float32 or catalog ids);
    a folded duplicate's image_id searches as its canonical image, which lists it."""
    _, client, _, _, rows = service
    vectors = [rows[i]["embedding"] for i in (1, 2, 3)]
    singles = [client.post("/search", json={"vector": v}, params={"k": 4}).json()["results"] for v in vectors]
    as_numbers = client.post("/search/batch", json={"vectors": vectors}, params={"k": 4}).json()
    as_base64 = client.post("/search/batch", json={"vectors_b64": [_base64(v) for v in vectors]}, params={"k": 4})
    assert _ids(as_numbers["results"]) == _ids(as_base64.json()["results"]) == _ids(singles)
    assert [r["score"] for r in as_numbers["results"][0]] == pytest.approx([r["score"] for r in singles[0]])
    one = client.post("/search", json={"vector_b64": _base64(vectors[0])}, params={"k": 4}).json()
    assert _ids([one["results"]]) == _ids(singles[:1])
    duplicate, canonical = rows[99]["image_id"], rows[10]["image_id"]
    by_duplicate = client.get("/search", params={"image_id": duplicate, "k": 4}).json()
    by_canonical = client.get("/search", params={"image_id": canonical, "k": 4}).json()
    assert by_duplicate["searched_as"] == canonical and by_canonical["searched_as"] == canonical
    assert _ids([by_duplicate["results"]]) == _ids([by_canonical["results"]])
    assert canonical not in _ids([by_duplicate["results"]])[0]
    by_ids = client.post("/search/batch", json={"image_ids": [rows[1]["image_id"], duplicate]}, params={"k": 4}).json()
    assert by_ids["searched_as"] == [rows[1]["image_id"], canonical]
    assert _ids(by_ids["results"])[1] == _ids([by_canonical["results"]])[0]
    [hit] = client.post("/search", json={"vector": rows[10]["embedding"]}, params={"k": 1}).json()["results"]
    assert hit["image_id"] == canonical and duplicate in hit["duplicates"]
    from vecflow.serve import MAX_BATCH

    for body, says in [
        ({"vectors": [vectors[0]] * (MAX_BATCH + 1)}, "1 to"),
        ({"vectors_b64": ["not base64!"]}, "vectors_b64"),
        ({"vectors": [vectors[0], vectors[0][:5]]}, "lengths"),
        ({"image_ids": ["nope"]}, "not in any published index"),
    ]:
        r = client.post("/search/batch", json=body)
        assert r.status_code in (400, 404) and says in r.json()["error"], r.text


# --- the CLI's service over a bucket ------------------------------------------------------------------


@contextlib.contextmanager
def cli_service(log_path):
    """`python -m vecflow.cli serve` in a process of its own (this process's settings, from the
    environment), polling every 0.2 s; yields (process, client) once /healthz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(log_path, "w")
    command = [sys.executable, "-m", "vecflow.cli", "serve", "--port", str(port), "--poll-seconds", "0.2"]
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_until(
            lambda: process.poll() is not None or _up(client),
            90,
            what="`vecflow.cli serve` to answer /healthz",
            detail=lambda: log_path.read_text()[-3000:],
        )
        assert process.poll() is None, log_path.read_text()[-3000:]
        yield process, client
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a test that failed while it was paused
            process.terminate()
            process.wait(timeout=20)
        log.close()


def served(client, rows) -> tuple[dict, set[str]]:
    """/healthz, and the index versions that answered a search by a catalog image."""
    r = client.get("/search", params={"image_id": rows[0]["image_id"], "k": 5})
    assert r.status_code == 200 and len(r.json()["results"]) == 5, r.text
    return client.get("/healthz").json(), {hit["index_version"] for hit in r.json()["results"]}


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)  # about the store: one warehouse is enough
def test_the_cli_service_serves_from_a_bucket_and_follows_it_md5_verified(index_env, gcs_server, monkeypatch, tmp_path):  # noqa: F811
    warehouse, centers = index_env
    bucket = new_bucket(gcs_server)
    monkeypatch.setenv("VECFLOW_STORAGE_URL", f"gs://{bucket}/prod")
    monkeypatch.setenv("VECFLOW_STORAGE_OPTIONS", json.dumps(gcs_options(gcs_server)))
    s = settings()
    store = index_store(s)
    rows = day_rows(DAYS[0], 100, centers)
    run_day(warehouse, DAYS[0], rows)
    first = read_current(store, "m1", "coat").payload["version"]
    assert not (s.paths.home / "index").exists()  # the bucket is the only copy

    with cli_service(tmp_path / "serve.log") as (process, client):
        health, versions = served(client, rows)
        assert health["status"] == "ok" and health["versions"] == {"coat": first} and versions == {first}

        # day 2 publishes a new version into the bucket and delists one of day 1's images: followed
        gone = rows[7]["image_id"]
        run_day(warehouse, DAYS[1], day_rows(DAYS[1], 100, centers), feed={"image_id": [gone]})
        second = read_current(store, "m1", "coat").payload["version"]
        assert second != first
        wait_until(
            lambda: client.get("/healthz").json()["versions"] == {"coat": second},
            30,
            what="the service to serve the bucket's new version",
        )
        health, versions = served(client, rows)
        assert versions == {second} and health["tombstones"] == 1
        assert client.get("/search", params={"image_id": gone}).status_code == 404

        # day 3 publishes while the service is paused, and an object of the new version is damaged
        # before the service looks: it keeps serving day 2's version and says why
        process.send_signal(signal.SIGSTOP)
        try:
            run_day(warehouse, DAYS[2], day_rows(DAYS[2], 100, centers))
            third = read_current(store, "m1", "coat").payload["version"]
            key = window_key("m1", "coat", third) + "/index.faiss"
            good = store.read_bytes(key)
            store.fs.pipe_file(store.path(key), good[:100] + b"\x00damaged\x00" + good[109:])
        finally:
            process.send_signal(signal.SIGCONT)
        health = wait_until(
            lambda: (h := client.get("/healthz").json())["status"] == "degraded" and h,
            30,
            what="the service to refuse the damaged version",
        )
        assert "md5" in health["last_error"] and "index.faiss" in health["last_error"]
        health, versions = served(client, rows)
        assert health["versions"] == {"coat": second} and versions == {second}

        # repaired in the bucket: served
        store.fs.pipe_file(store.path(key), good)
        health = wait_until(
            lambda: (h := client.get("/healthz").json())["versions"] == {"coat": third} and h,
            30,
            what="the service to serve the repaired version",
        )
        assert health["status"] == "ok" and health["last_error"] is None
        assert served(client, rows)[1] == {third}
