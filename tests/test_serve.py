"""The search service on 127.0.0.1 (uvicorn, real HTTP): it swaps to a newly published version under
concurrent requests with no failed request, refuses a damaged version (the old one keeps serving),
applies tombstones, and answers expected errors with 4xx JSON."""

from __future__ import annotations

import io
import socket
import threading

import httpx
import numpy as np
import pytest
from test_index import DAYS, index_env  # noqa: F401  (a fixture)
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
        with httpx.Client(base_url=client.base_url, timeout=10) as own:
            for i in range(400):  # bounded: stops early once the swap has been seen
                if stop.is_set():
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
    wait_until(lambda: second in answered or len(answered) >= 1600, 30, what="a request answered by it")
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
