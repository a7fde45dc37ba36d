"""Delisting and filtered search: a delisted image leaves search at once (tombstones) and the next
window physically, comes back when listed again, and its quarter's trends stay; filtered search
returns only matching items with recall >= 0.95 against exact search on the subset."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from test_index import DAYS, clustered, index_env  # noqa: F401  (a fixture)
from warehouse_rows import catalog, load, row, tag_partition

from vecflow.clean import clean_partition
from vecflow.config import settings
from vecflow.index.build import build_day_indexes
from vecflow.index.search import SearchError, SearchFilter, Window, load_library, parse_filters
from vecflow.index.store import index_store
from vecflow.index.window import build_and_publish, load_published
from vecflow.lifecycle import apply_delist_feed
from vecflow.tags import compute_trends
from vecflow.taxonomy import load_taxonomy


def day_rows(day, n, centers, run_id="run-1"):
    colors = ["red", "blue", "black", "white"]
    return [
        row(f"{day:%m%d}-{i:03d}", day, category="coat", embedding=v, color=colors[i % 4], run_id=run_id)
        for i, v in enumerate(clustered(day.toordinal(), n, centers))
    ]


def run_day(warehouse, day, rows, feed=None):
    """One daily run of the stages that matter here: catalog, vectors, clean + delist feed, tags, indexes."""
    s = settings()
    catalog(warehouse, day, [r["image_id"] for r in rows], category="coat")
    load(warehouse, rows, day)
    if feed is not None:
        folder = s.paths.catalog_dir / "delisted" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(feed).to_csv(folder / "feed.csv", index=False)
    clean_partition(s, warehouse, day, "run-1")
    counts = apply_delist_feed(s, warehouse, day, "run-1")
    tag_partition(warehouse, day, "run-1", "m1")
    build_day_indexes(s, warehouse, day, "run-1")
    build_and_publish(s, warehouse, day, "run-1", ["coat"])
    return counts


def delisted_funnel(warehouse) -> dict:
    """The funnel of stage `delisted`: metric -> value."""
    return warehouse.table("funnel_metrics").query("stage == 'delisted'").groupby("metric")["value"].sum().to_dict()


def served_ids(s) -> set[str]:
    return set(load_published(index_store(s), "m1", "coat")[1]["image_id"])


def test_a_delisted_image_leaves_search_and_the_index_and_comes_back_when_listed_again(index_env):  # noqa: F811
    warehouse, centers = index_env
    s = settings()
    for day in DAYS[:2]:
        run_day(warehouse, day, day_rows(day, 50, centers))
    gone = f"{DAYS[0]:%m%d}-007"
    trends_before = compute_trends(warehouse, s.trends, load_taxonomy())
    # the feed of day 3: one removal, one id the catalog never listed, one malformed time
    feed = {
        "image_id": [gone, "never-listed", f"{DAYS[0]:%m%d}-008"],
        "reason": ["sold_out", None, None],
        "delisted_at": ["2026-05-03T09:00:00Z", None, "not a time"],
    }
    counts = run_day(warehouse, DAYS[2], day_rows(DAYS[2], 50, centers), feed)
    assert (counts["delisted"], counts["rejected"], counts["tombstones"]) == (1, 2, 1)
    rejects = warehouse.table("rejects").query("stage == 'delisted'")
    assert sorted(rejects["reason"]) == ["bad_timestamp", "unknown_image"]
    assert delisted_funnel(warehouse) == {
        "in": 3,
        "out": 1,
        "dropped.bad_timestamp": 1,
        "dropped.unknown_image": 1,
    }
    # the next window dropped it physically; vectors_clean keeps the row, with delisted_at in the view
    assert gone not in served_ids(s)
    assert gone in set(warehouse.table("vectors_clean")["image_id"])
    view = warehouse.table("v_vectors_clean").set_index("image_id")
    assert view.loc[gone, "delist_reason"] == "sold_out" and pd.notna(view.loc[gone, "delisted_at"])
    # trends of its quarter do not change
    assert compute_trends(warehouse, s.trends, load_taxonomy()).equals(trends_before) or trends_before.empty
    # listed again on day 4: served again
    back = day_rows(DAYS[3], 50, centers) + [row(gone, DAYS[3], category="coat", embedding=clustered(1, 1, centers)[0])]
    run_day(warehouse, DAYS[3], back)
    assert gone in served_ids(s)
    assert warehouse.query("select_delisted").empty


def test_tombstones_hide_a_delisted_image_before_the_next_merge(index_env):  # noqa: F811
    warehouse, centers = index_env
    s = settings()
    rows = day_rows(DAYS[0], 100, centers)
    run_day(warehouse, DAYS[0], rows)
    target = np.asarray(rows[5]["embedding"], dtype=np.float32)
    library = load_library(index_store(s), "m1")
    assert library.search(target, 3)[0]["image_id"] == rows[5]["image_id"]
    # delisted by a feed applied outside the daily run (no merge since): the tombstone hides it
    folder = s.paths.catalog_dir / "delisted" / f"date={DAYS[1]}"
    folder.mkdir(parents=True)
    pd.DataFrame({"image_id": [rows[5]["image_id"]]}).to_csv(folder / "feed.csv", index=False)
    catalog(warehouse, DAYS[1], [])
    apply_delist_feed(s, warehouse, DAYS[1], "run-2")
    refreshed = load_library(index_store(s), "m1", previous=library)
    assert refreshed.windows["coat"].index is library.windows["coat"].index  # same version, new tombstones
    assert rows[5]["image_id"] in served_ids(s)  # still in the index file
    results = refreshed.search(target, 3)
    assert rows[5]["image_id"] not in {r["image_id"] for r in results} and len(results) == 3


def test_filters_are_parsed_with_clear_errors():
    flt = parse_filters(["color=red", "color=blue", "source=shop_a"], dt.date(2026, 1, 1))
    assert flt.values("color") == {"red", "blue"} and flt.values("source") == {"shop_a"}
    for bad, says in [("color", "key=value"), ("colour=red", "unknown key"), ("color=mauve", "not a color tag")]:
        with pytest.raises(SearchError, match=says):
            parse_filters([bad])


def synthetic_window(n=60_000, d=32, nlist=64, nprobe=4, seed=0):
    """An IVF window of clustered vectors with a colour tag per row drawn to give the selectivities."""
    import faiss

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(nlist, d))
    x = centers[rng.integers(0, nlist, n)] + rng.normal(scale=0.4, size=(n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add_with_ids(x, ids)
    u = rng.random(n)
    color = np.where(u < 0.005, "red", np.where(u < 0.05, "blue", np.where(u < 0.5, "black", "white")))
    meta = pd.DataFrame(
        {
            "id": ids,
            "image_id": [f"i{i}" for i in range(n)],
            "listed_date": dt.date(2026, 5, 1),
            "source": "shop_a",
            "category": "coat",
            "tags": [[f"color={c}"] for c in color],
            "duplicates": [[] for _ in range(n)],
            "attributes": None,
        }
    )
    manifest = {"category": "coat", "version": "v-test", "nprobe": nprobe}
    return Window(index, meta, manifest), x, color


@pytest.mark.parametrize("colors, share", [(["red"], 0.005), (["red", "blue"], 0.05), (["black", "red", "blue"], 0.5)])
def test_filtered_search_keeps_recall_at_every_selectivity(colors, share):
    window, x, color = synthetic_window()
    flt = parse_filters([f"color={c}" for c in colors])
    keep = window.mask(flt)
    assert abs(keep.mean() - share) < share * 0.25
    subset = np.flatnonzero(np.isin(color, colors))
    recalls = []
    for q in np.random.default_rng(1).choice(len(x), 50, replace=False):
        scores, rows = window.search(x[q], 10, keep)
        assert len(rows) == 10 and set(rows) <= set(subset)  # always k, only matches
        exact = subset[np.argsort(-(x[subset] @ x[q]), kind="stable")[:10]]
        recalls.append(len(set(rows) & set(exact)) / 10)
    assert np.mean(recalls) >= 0.95


def test_a_mid_selective_filter_searches_an_index_of_its_subset(monkeypatch):
    """Between the exactly searched subsets and the broad ones: an IVF-Flat index of the matches on
    the window's quantizer, with recall and always k as the other ways."""
    from vecflow.index import search as search_module

    monkeypatch.setattr(search_module, "EXACT_SUBSET", 1000)
    window, x, color = synthetic_window()
    selection = window.select(parse_filters(["color=blue", "color=red"]))
    assert selection.index is not None and selection.index.ntotal == selection.allowed
    subset = np.flatnonzero(selection.keep)
    recalls = []
    for q in np.random.default_rng(2).choice(len(x), 50, replace=False):
        _, rows = window.search(x[q], 10, selection)
        assert len(rows) == 10 and set(rows) <= set(subset)
        exact = subset[np.argsort(-(x[subset] @ x[q]), kind="stable")[:10]]
        recalls.append(len(set(rows) & set(exact)) / 10)
    assert np.mean(recalls) >= 0.95


def test_a_filter_with_fewer_matches_than_k_returns_all_of_them():
    window, x, color = synthetic_window(n=5000, nlist=16)
    few = np.flatnonzero(color == "red")
    keep = np.zeros(len(x), dtype=bool)
    keep[few] = True
    _, rows = window.search(x[0], 50, keep)
    assert set(rows) == set(few)
    assert window.mask(SearchFilter()) is None


def test_the_sweep_delists_a_link_dead_twice_and_keeps_one_that_failed_once(index_env, monkeypatch):  # noqa: F811
    import io as _io
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from loopback import serving
    from PIL import Image

    from vecflow.lifecycle import sweep_links

    warehouse, centers = index_env
    png = _io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    dead = {"/a.png", "/c.png"}  # c comes back before the second sweep

    class Images(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path in dead:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png.getvalue())))
            self.end_headers()
            self.wfile.write(png.getvalue())

        def log_message(self, *args):
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Images)) as server:
        host = f"127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("VECFLOW_FETCH_ALLOWED_HOSTS", host)
        s = settings()
        rows = [row(name, DAYS[0], category="coat") for name in ("a", "b", "c")]
        load(warehouse, rows, DAYS[0])
        catalog(warehouse, DAYS[0], ["a", "b", "c"], category="coat", uris=[f"http://{host}/{n}.png" for n in "abc"])
        clean_partition(s, warehouse, DAYS[0], "run-1")
        first = sweep_links(s, warehouse, DAYS[0], "sweep-1")
        assert (first["checked"], first["outcome.dead_link"], first["delisted"]) == (3, 2, 0)
        dead.discard("/c.png")
        second = sweep_links(s, warehouse, DAYS[1], "sweep-2")
        assert second["delisted_ids"] == ["a"] and second["outcome.dead_link"] == 1
        rerun = sweep_links(s, warehouse, DAYS[1], "sweep-2")  # idempotent per day
        assert rerun["delisted_ids"] == ["a"]
        delisted = warehouse.query("select_delisted")
        assert delisted[["image_id", "reason", "origin"]].to_dict("records") == [
            {"image_id": "a", "reason": "dead_link", "origin": "sweep"}
        ]
        report = warehouse.query("select_lifecycle_report", run_date=DAYS[1])
        assert report[["kind", "outcome", "images"]].values.tolist() == [
            ["removed", "dead_link", 1],
            ["link sweep", "dead_link", 1],
            ["link sweep", "ok", 2],
        ]
        third = sweep_links(s, warehouse, DAYS[2], "sweep-3")
        assert third["checked"] == 2  # a is no longer served


# --- the delist feed from each of the catalog's sources -------------------------------------------------

FEED_DAY = dt.date(2026, 5, 3)
FEED = pd.DataFrame(  # one removal, an id the catalog never listed, one image removed twice (the later row counts)
    {
        "item": ["a", "never-listed", "b", "b"],
        "removed_at": pd.to_datetime(
            ["2026-05-03T09:00:00Z", "2026-05-03T10:00:00Z", "2026-05-03T08:00:00Z", "2026-05-03T23:59:59Z"]
        ),
        "reason": ["sold_out", None, "recalled", "policy"],
    }
)
NEXT_DAY = pd.DataFrame(  # another day's removal: not read on FEED_DAY
    {"item": ["c"], "removed_at": pd.to_datetime(["2026-05-04T00:00:00Z"]), "reason": ["sold_out"]}
)


def _feed_in_bucket(gcs_server, monkeypatch):
    """The feed as CSV files under a catalog root in a bucket (the file source through gcsfs)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from test_index_store import gcs_options, new_bucket

    bucket = new_bucket(gcs_server)
    blobs = storage.Client(
        project="vecflow-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server}
    ).bucket(bucket)
    for day, frame in [(FEED_DAY, FEED), (FEED_DAY + dt.timedelta(days=1), NEXT_DAY)]:
        blobs.blob(f"shop/removals/{day}/part-0.csv").upload_from_string(frame.to_csv(index=False))
    monkeypatch.setenv("VECFLOW_CATALOG_URL", f"gs://{bucket}/shop")
    monkeypatch.setenv("VECFLOW_CATALOG_STORAGE_OPTIONS", json.dumps(gcs_options(gcs_server)))
    monkeypatch.setenv("VECFLOW_CATALOG_DELIST_TEMPLATE", "removals/{date}/")


def _feed_in_a_table(warehouse, monkeypatch):
    """The feed as a warehouse table (delisted_at a TIMESTAMP), the catalog a warehouse table too."""
    table = f"{warehouse.dataset}.shop_removals"
    with warehouse.connect() as con:
        con.execute(f"CREATE TABLE {table} (item VARCHAR, removed_at TIMESTAMPTZ, reason VARCHAR)")
        for frame in (FEED, NEXT_DAY, pd.DataFrame({"item": ["d"], "removed_at": [pd.NaT], "reason": [None]})):
            con.register("feed_rows", frame)
            con.execute(f"INSERT INTO {table} SELECT * FROM feed_rows")
            con.unregister("feed_rows")
    monkeypatch.setenv("VECFLOW_CATALOG_SOURCE", "warehouse")
    monkeypatch.setenv("VECFLOW_CATALOG_TABLE", f"{warehouse.dataset}.catalog")
    monkeypatch.setenv("VECFLOW_CATALOG_DELIST_TABLE", table)


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
@pytest.mark.parametrize("source", ["local files", "files in a bucket", "warehouse table"])
def test_the_delist_feed_is_read_from_each_catalog_source_with_the_same_rejects_and_funnel(
    source, warehouse, vecflow_home, monkeypatch, request
):
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", "m1")
    # the shop's own column names, renamed as the catalog's are
    monkeypatch.setenv("VECFLOW_CATALOG_COLUMNS", json.dumps({"item": "image_id", "removed_at": "delisted_at"}))
    if source == "local files":
        for day, frame in [(FEED_DAY, FEED), (FEED_DAY + dt.timedelta(days=1), NEXT_DAY)]:
            folder = vecflow_home / "catalog" / "delisted" / f"date={day}"
            folder.mkdir(parents=True)
            frame.to_csv(folder / "feed.csv", index=False)
    elif source == "files in a bucket":
        _feed_in_bucket(request.getfixturevalue("gcs_server"), monkeypatch)
    else:
        _feed_in_a_table(warehouse, monkeypatch)
    s = settings()
    catalog(warehouse, FEED_DAY - dt.timedelta(days=1), ["a", "b", "c", "d"])

    counts = apply_delist_feed(s, warehouse, FEED_DAY, "run-1")
    assert (counts["feed_rows"], counts["delisted"], counts["rejected"], counts["tombstones"]) == (4, 2, 2, 2)
    rejects = warehouse.table("rejects").query("stage == 'delisted'")
    assert sorted(zip(rejects["image_id"], rejects["reason"])) == [
        ("b", "duplicate_row"),
        ("never-listed", "unknown_image"),
    ]
    assert delisted_funnel(warehouse) == {
        "in": 4,
        "out": 2,
        "dropped.duplicate_row": 1,
        "dropped.unknown_image": 1,
    }
    delistings = warehouse.table("delistings").sort_values("image_id")
    assert delistings[["image_id", "reason", "origin"]].values.tolist() == [
        ["a", "sold_out", "feed"],
        ["b", "policy", "feed"],
    ]
    assert pd.to_datetime(delistings["delisted_at"], utc=True).tolist() == [
        pd.Timestamp("2026-05-03T09:00:00Z"),
        pd.Timestamp("2026-05-03T23:59:59Z"),
    ]
    assert set(warehouse.query("select_delisted")["image_id"]) == {"a", "b"}

    # the next day's removal is read on its day; a day without a feed removes nothing
    assert apply_delist_feed(s, warehouse, FEED_DAY + dt.timedelta(days=1), "run-2")["delisted"] == 1
    assert apply_delist_feed(s, warehouse, FEED_DAY + dt.timedelta(days=2), "run-3")["feed_rows"] == 0
    assert set(warehouse.query("select_delisted")["image_id"]) == {"a", "b", "c"}  # d: no time, no day


def test_a_warehouse_catalog_without_a_delist_table_removes_nothing(vecflow_home, monkeypatch):
    from vecflow.catalog import read_delist_feed

    monkeypatch.setenv("VECFLOW_CATALOG_SOURCE", "warehouse")
    monkeypatch.setenv("VECFLOW_CATALOG_TABLE", "shop.catalog")
    folder = vecflow_home / "catalog" / "delisted" / f"date={FEED_DAY}"
    folder.mkdir(parents=True)
    FEED.to_csv(folder / "feed.csv", index=False)  # files are the files source's feed, not read here
    assert read_delist_feed(settings(), None, FEED_DAY) is None


def test_a_filter_is_prepared_once_and_new_tombstones_are_never_served_stale():
    window, _, _ = synthetic_window(n=6000, nlist=16)
    flt = parse_filters(["color=blue"])
    first = window.select(flt)
    assert window.select(flt) is first and window.select(parse_filters([])) is None
    gone = window.meta["image_id"].iloc[np.flatnonzero(first.keep)[0]]
    twin = window.with_tombstones(frozenset([gone]))
    assert twin.select(flt) is not first and twin.select(flt).allowed == first.allowed - 1
    assert twin.select(parse_filters([])).allowed == window.size - 1
