"""Search benchmark over one window of --vectors (default 1M) 256-d vectors in IVF-Flat, 2 cores:

1. Plain search at k=10 through vecflow.index.search.Window (the service's path): p50/p99 and QPS.
2. A tombstoned search (1% of the window delisted, excluded with IDSelectorNot) vs the plain one.
3. Filtered search at selectivities 50%, 5% and 0.5% (a colour tag): recall@10 against exact search
   over the filtered subset, p50 and QPS, and whether every query got k results.
4. Side by side, plain and filtered (5%), at 1 and --clients (8) concurrent clients: faiss in this
   process, vecflow's service (`python -m vecflow.cli serve` in its own process over a local index
   store, POST /search with base64 vectors over HTTP) and LanceDB (embedded, IVF_FLAT; installed by
   `make bench` from requirements-bench.txt): p50/p99, QPS, recall@10, and ratios to vecflow.
5. POST /search/batch throughput, and a load test: --clients clients for --load-seconds while two new
   versions are published and a tombstone set is written: failed requests and p99.
Vectors are synthetic (unit vectors around 4096 centres). Writes bench/results/search.json; fails
when a search returned fewer results than asked, a request failed or a tombstoned image came back
after the service loaded the tombstones, or filtered recall is under the goal (0.95).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
from bench_report import write_report  # noqa: E402  (bench/ is the script's directory)

DIM, K = 256, 10
SELECTIVITIES = {"50%": 0.5, "5%": 0.05, "0.5%": 0.005}


def build_window(n: int, nlist: int, nprobe: int, seed: int = 0):
    import faiss

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4096, DIM), dtype=np.float32)
    x = centers[rng.integers(0, 4096, n)] + rng.standard_normal((n, DIM), dtype=np.float32) * 0.6
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    index = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    index.train(x[rng.choice(n, min(n, nlist * 64), replace=False)])
    index.add_with_ids(x, ids)
    build_s = time.perf_counter() - started
    u = rng.random(n)
    colour = np.select([u < 0.005, u < 0.05, u < 0.5], ["red", "blue", "black"], "white")
    meta = pd.DataFrame(
        {
            "id": ids,
            "image_id": [f"img-{i:08d}" for i in range(n)],
            "listed_date": dt.date(2026, 5, 1),
            "source": "shop_a",
            "category": "coat",
            "tags": [[f"color={c}"] for c in colour],
            "duplicates": [[] for _ in range(n)],
            "attributes": None,
        }
    )
    manifest = {"category": "coat", "version": "v-bench", "nprobe": nprobe, "files": {}}
    return index, meta, manifest, x, colour, build_s


def timed(fn, queries) -> tuple[list[float], list]:
    times, out = [], []
    for q in queries:
        started = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - started)
    return times, out


def stats(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "qps": round(len(ms) / (ms.sum() / 1000), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=8, help="where the nprobe tuning starts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the side-by-side and load test")
    parser.add_argument("--load-seconds", type=float, default=60, help="the load test's length")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:2]))
    import faiss

    from vecflow.index.search import Window, parse_filters

    faiss.omp_set_num_threads(2)
    index, meta, manifest, x, colour, build_s = build_window(args.vectors, args.nlist, args.nprobe)
    print(f"window: {index.ntotal} vectors, IVF{args.nlist},Flat, built in {build_s:.1f} s")
    queries = x[np.random.default_rng(1).choice(len(x), args.queries, replace=False)] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # nprobe tuned to recall@10 >= 0.95 on plain search, as the index stage tunes each version
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    _, truth = exact.search(queries, K)
    del exact
    for nprobe in [args.nprobe * 2**i for i in range(12) if args.nprobe * 2**i < args.nlist] + [args.nlist]:
        index.nprobe = nprobe
        _, found = index.search(queries, K)
        plain_recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(meta["id"].to_numpy()[truth], found)]))
        if plain_recall >= 0.95:
            break
    manifest["nprobe"] = nprobe
    print(f"nprobe {nprobe}: plain recall@10 {plain_recall:.4f}")
    window = Window(index, meta, manifest)
    plain_t, plain_out = timed(lambda q: window.search(q, K), queries)
    plain = stats(plain_t)
    tomb_ids = frozenset(meta["image_id"].iloc[::100])  # 1% delisted
    tombstoned = window.with_tombstones(tomb_ids)
    keep = tombstoned.select(parse_filters([]))  # prepared once, as the service keeps it
    tomb_t, tomb_out = timed(lambda q: tombstoned.search(q, K, keep), queries)
    tomb = stats(tomb_t)
    assert all(not set(rows) & set(np.flatnonzero(~keep.keep)) for _, rows in tomb_out), "a tombstoned id was returned"
    print(f"plain k=10: {plain}; 1% tombstoned: {tomb} ({tomb['p50_ms'] / plain['p50_ms']:.2f}x p50)")
    filtered = {}
    colours_of = {"50%": ["black", "blue", "red"], "5%": ["blue", "red"], "0.5%": ["red"]}
    for name in SELECTIVITIES:
        flt = parse_filters([f"color={c}" for c in colours_of[name]])
        selection = window.select(flt)  # prepared once, as the service keeps it for the next request
        subset = np.flatnonzero(selection.keep)
        times, out = timed(lambda q: window.search(q, K, selection), queries)
        recalls, full = [], True
        for q, (_, rows) in zip(queries, out):
            exact = subset[np.argsort(-(x[subset] @ q))[:K]]
            recalls.append(len(set(rows) & set(exact)) / K)
            full &= len(rows) == K and set(rows) <= set(subset)
        filtered[name] = {
            "matching": int(len(subset)),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "always_k": bool(full),
            **stats(times),
        }
        print(f"filter {name} ({len(subset)} match): {filtered[name]}")
    side_by_side, load = compare_systems(args, index, meta, manifest, x, colour, queries, nprobe)
    report = {
        "vectors": int(index.ntotal),
        "index": f"IVF{args.nlist},Flat",
        "nprobe": nprobe,
        "plain_recall_at_10": round(plain_recall, 4),
        "queries": args.queries,
        "build_s": round(build_s, 1),
        "plain": plain,
        "tombstoned_1pct": {**tomb, "p50_vs_plain": round(tomb["p50_ms"] / plain["p50_ms"], 2)},
        "filtered": filtered,
        "side_by_side": side_by_side,
        "load_test": load,
        "goals": GOALS,
    }
    write_report("search", report, faiss=faiss.__version__)
    bad = [n for n, f in filtered.items() if f["recall_at_10"] < 0.95 or not f["always_k"]]
    failed = sum(r["failed"] for r in side_by_side["rows"]) + load["failed"]
    if bad or failed:
        print(f"FAILED: filtered recall or k at {bad}, {failed} failed or short answers", file=sys.stderr)
        return 1
    return 0


# --- side by side: faiss in process, vecflow's service over HTTP, LanceDB embedded ---------------------


def compare_systems(args, index, meta, manifest, x, colour, queries, nprobe) -> tuple[dict, dict]:
    """The same queries, plain and filtered (5%: color=blue or red), at 1 and --clients concurrent
    clients, through faiss in this process, vecflow's service (`python -m vecflow.cli serve` in a
    process of its own, over HTTP with base64 vectors) and LanceDB (embedded, IVF_FLAT, its own
    client in this process); then vecflow's batch endpoint and the load test. Every system is tuned
    to recall@10 >= 0.95 on plain search and must return k results from the subset when filtered."""
    import faiss

    subset = np.flatnonzero(np.isin(colour, FILTER_COLOURS))
    truth = {
        "plain": exact_top(x, np.arange(len(x)), queries),
        "filtered": exact_top(x, subset, queries),
    }
    ids = meta["id"].to_numpy()
    row_of = pd.Index(ids)
    in_subset = np.zeros(len(x), dtype=bool)
    in_subset[subset] = True
    selectivity = len(subset) / len(x)
    selector = faiss.IDSelectorBatch(ids[subset])
    plans = {
        "plain": faiss.SearchParametersIVF(nprobe=nprobe),
        "filtered": faiss.SearchParametersIVF(nprobe=min(args.nlist, int(np.ceil(nprobe / selectivity))), sel=selector),
    }

    def faiss_query(kind):
        def query(q):
            _, found = index.search(q[None], K, params=plans[kind])
            return row_of.get_indexer(found[0][found[0] != -1])

        return query

    rows = []
    with tempfile.TemporaryDirectory(prefix="vecflow-bench-search-") as home:
        publish_window(home, index, meta, manifest, "v-bench-1")
        with served(home) as port:
            lance = LanceWindow(home, x, colour, args.nlist, queries, truth["plain"])
            for kind in ("plain", "filtered"):
                systems = {
                    "faiss (in process)": (faiss_query(kind), None),
                    "vecflow service (HTTP)": http_query(port, kind, meta),
                    f"LanceDB {lance.version} (embedded)": (lance.query(kind), None),
                }
                for clients in (1, args.clients):
                    for system, (query, to_rows) in systems.items():
                        row = run_clients(
                            query, queries, clients, truth[kind], subset if kind == "filtered" else None, to_rows
                        )
                        rows.append({"system": system, "kind": kind, "clients": clients, **row})
                        print(f"  {kind:<8} {clients} client(s)  {system:<28} {row}", flush=True)
            batch = batch_throughput(port, queries)
            print(f"  /search/batch of {BATCH} vectors: {batch}", flush=True)
            load = load_test(port, home, index, meta, manifest, queries, args.load_seconds, args.clients)
    table = side_by_side_table(rows)
    print(table["text"])
    return {"rows": rows, "ratios_to_vecflow": table["ratios"], "batch": batch, "lance": lance.describe()}, load


GOALS = {"overhead_p50_ms": 1.0, "p99_plain_ms": 5.0, "p99_filtered_ms": 8.0, "qps_8_clients_plain": 1500}
FILTER_COLOURS = ["blue", "red"]  # 5% of the window
BATCH = 32


def exact_top(x, rows, queries) -> list[np.ndarray]:
    return [rows[np.argsort(-(x[rows] @ q))[:K]] for q in queries]


def publish_window(home, index, meta, manifest, version: str):
    """The window as a published version in a local index store under `home` (as build_indexes
    writes it); returns the settings that read it."""
    os.environ["VECFLOW_HOME"] = home
    from vecflow.config import settings
    from vecflow.index.build import ids_bytes, index_bytes
    from vecflow.index.store import index_store
    from vecflow.index.window import read_current, window_key, write_current

    s = settings()
    store = index_store(s)
    store.write_version(
        window_key(s.model_version, "coat", version),
        {"index.faiss": index_bytes(index), "ids.parquet": ids_bytes(meta)},
        {**{k: v for k, v in manifest.items() if k != "files"}, "version": version},
    )
    write_current(store, s.model_version, "coat", version, read_current(store, s.model_version, "coat"))
    return s


@contextlib.contextmanager
def served(home):
    """`python -m vecflow.cli serve` on loopback over `home`'s index store, polling every second."""
    import http.client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(home) / "serve.log", "w")
    command = [sys.executable, "-m", "vecflow.cli", "serve", "--port", str(port), "--poll-seconds", "1"]
    process = subprocess.Popen(command, env={**os.environ, "VECFLOW_HOME": home}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the search service did not start: " + (Path(home) / "serve.log").read_text()[-2000:]
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def http_query(port: int, kind: str, meta):
    """A client's query through POST /search (base64 float32), a connection per thread: the
    answer's image_ids (rows are looked up after the clock, as the other systems answer rows)."""
    import base64
    import http.client
    import json

    path = f"/search?k={K}&category=all" + (
        "".join(f"&filter=color={c}" for c in FILTER_COLOURS) if kind == "filtered" else ""
    )
    row_of = pd.Index(meta["image_id"].to_numpy())
    local = threading.local()

    def query(q):
        body = json.dumps({"vector_b64": base64.b64encode(q.astype("<f4").tobytes()).decode()})
        for attempt in (1, 2):  # the server closes a connection idle past its keep-alive: a new one
            if attempt == 2 or not hasattr(local, "connection"):
                local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                local.connection.request("POST", path, body=body, headers={"content-type": "application/json"})
                response = local.connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt == 2:
                    raise
        if response.status != 200:
            return None
        return [r["image_id"] for r in json.loads(data)["results"]]

    return query, lambda image_ids: None if image_ids is None else row_of.get_indexer(image_ids)


class LanceWindow:
    """The same vectors and colours in a LanceDB table (embedded: a directory, no server), IVF_FLAT
    with the same lists over the dot product and a bitmap index on the colour, nprobes tuned to
    recall@10 >= 0.95 on plain search as vecflow's is."""

    def __init__(self, home, x, colour, nlist, queries, truth):
        import lancedb
        import pyarrow as pa
        from lancedb.index import Bitmap, IvfFlat

        self.version = lancedb.__version__
        started = time.perf_counter()
        db = lancedb.connect(str(Path(home) / "lancedb"))
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
        self.table = db.create_table("window", pa.table({"row": np.arange(len(x)), "color": colour, "vector": vectors}))
        self.table.create_index("vector", config=IvfFlat(distance_type="dot", num_partitions=nlist))
        self.table.create_index("color", config=Bitmap())
        self.build_s = time.perf_counter() - started
        self.where = "color IN (" + ", ".join(f"'{c}'" for c in FILTER_COLOURS) + ")"
        for self.nprobes in [2**i for i in range(11)]:
            query = self.query("plain")
            if np.mean([len(set(query(q)) & set(t)) / K for q, t in zip(queries[:50], truth[:50])]) >= 0.95:
                break
        print(
            f"LanceDB {self.version}: IVF_FLAT {nlist} built in {self.build_s:.0f} s, nprobes {self.nprobes}",
            flush=True,
        )

    def query(self, kind: str):
        def query(q):
            search = (
                self.table.search(q).distance_type("dot").nprobes(self.nprobes).limit(K).select(["row", "_distance"])
            )
            if kind == "filtered":
                search = search.where(self.where, prefilter=True)
            return search.to_arrow()["row"].to_numpy()

        return query

    def describe(self) -> dict:
        return {
            "version": self.version,
            "index": "IVF_FLAT (dot) + bitmap on color",
            "nprobes": self.nprobes,
            "build_s": round(self.build_s, 1),
        }


def run_clients(query, queries, clients: int, truth, subset, to_rows=None) -> dict:
    """`clients` threads, each sending every query (in an order of its own) one at a time: latency of
    each, QPS over the wall time, recall@10, answers short of k or off the subset. `to_rows` turns
    an answer into window rows after the clock (None: it is rows)."""
    from concurrent.futures import ThreadPoolExecutor

    per_client = [np.random.default_rng(c).permutation(len(queries)) for c in range(clients)]  # each: all, shuffled
    allowed = None if subset is None else set(subset.tolist())

    def client(order):
        out = []
        for i in order:
            started = time.perf_counter()
            rows = query(queries[i])
            out.append((i, time.perf_counter() - started, rows))
        return out

    query(queries[0])  # a warm-up: connections, lazily built lookups
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for part in pool.map(client, per_client) for a in part]
    wall = time.perf_counter() - started
    if to_rows is not None:
        answers = [(i, t, to_rows(rows)) for i, t, rows in answers]
    times = [t for _, t, _ in answers]
    failed = sum(
        rows is None or len(rows) != K or (allowed is not None and not set(rows.tolist()) <= allowed)
        for _, _, rows in answers
    )
    recall = np.mean(
        [len(set(rows.tolist()) & set(truth[i].tolist())) / K for i, _, rows in answers if rows is not None]
    )
    ms = np.asarray(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "qps": round(len(answers) / wall, 1),
        "recall_at_10": round(float(recall), 4),
        "failed": int(failed),
    }


def batch_throughput(port: int, queries) -> dict:
    """Queries a second through POST /search/batch, BATCH base64 vectors a request, one client."""
    import base64
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    bodies = [
        json.dumps(
            {"vectors_b64": [base64.b64encode(q.astype("<f4").tobytes()).decode() for q in queries[i : i + BATCH]]}
        )
        for i in range(0, len(queries), BATCH)
    ]
    answered, started = 0, time.perf_counter()
    for body in bodies:
        connection.request(
            "POST", f"/search/batch?k={K}&category=all", body=body, headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        data = json.loads(response.read())
        answered += sum(len(r) == K for r in data["results"]) if response.status == 200 else 0
    wall = time.perf_counter() - started
    if answered != len(queries):
        raise RuntimeError(f"/search/batch answered {answered} of {len(queries)} queries with k results")
    return {"batch": BATCH, "qps": round(len(queries) / wall, 1), "ms_per_request": round(1000 * wall / len(bodies), 2)}


def load_test(port, home, index, meta, manifest, queries, seconds: float, clients: int) -> dict:
    """`clients` clients for `seconds` while two new versions are published and a tombstone set is
    written (the service loads each whole and md5-checked, then swaps): failed requests, p99, the
    versions that answered, and whether a tombstoned image was returned after the service loaded it."""
    import base64
    import http.client
    import json

    from vecflow.index.search import TOMBSTONES
    from vecflow.index.store import index_store

    stop = threading.Event()
    tombstoned = set(meta["image_id"].iloc[::50])  # 2% delisted
    state = {"tombstones_loaded": False}
    results = []

    def healthz():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/healthz")
        return json.loads(connection.getresponse().read())

    def client(seed):
        rng = np.random.default_rng(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            q = queries[rng.integers(len(queries))]
            body = json.dumps({"vector_b64": base64.b64encode(q.astype("<f4").tobytes()).decode()})
            loaded = state["tombstones_loaded"]
            started = time.perf_counter()
            try:
                connection.request(
                    "POST", f"/search?k={K}&category=all", body=body, headers={"content-type": "application/json"}
                )
                response = connection.getresponse()
                data = json.loads(response.read())
                ok = response.status == 200 and len(data["results"]) == K
                versions = {r["index_version"] for r in data["results"]} if ok else set()
                leaked = loaded and ok and any(r["image_id"] in tombstoned for r in data["results"])
            except OSError:
                ok, versions, leaked = False, set(), False
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            results.append((time.perf_counter() - started, ok, versions, leaked))

    def wait_for(what, check):
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not load {what} within {seconds} s")
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    events = []
    time.sleep(seconds / 6)
    for step, version in enumerate(["v-bench-2", "v-bench-3"]):
        s = publish_window(home, index, meta, manifest, version)
        wait_for(version, lambda v=version: healthz()["versions"].get("coat") == v)
        events.append({"at_s": round(time.perf_counter() - started, 1), "event": f"serving {version}"})
        if step == 0:
            buffer = io.BytesIO()
            pd.DataFrame({"image_id": sorted(tombstoned)}).to_parquet(buffer)
            index_store(s).write_file(TOMBSTONES, buffer.getvalue())
            wait_for("the tombstones", lambda: healthz()["tombstones"] == len(tombstoned))
            state["tombstones_loaded"] = True
            events.append({"at_s": round(time.perf_counter() - started, 1), "event": f"{len(tombstoned)} tombstones"})
    time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
    stop.set()
    for t in threads:
        t.join(60)
    wall = time.perf_counter() - started
    ms = np.asarray([r[0] for r in results]) * 1000
    load = {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(results),
        "failed": int(sum(not r[1] for r in results)),
        "tombstoned_returned": int(sum(r[3] for r in results)),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "qps": round(len(results) / wall, 1),
        "versions_answering": sorted(set().union(*(r[2] for r in results))),
        "events": events,
    }
    load["failed"] += load["tombstoned_returned"]
    print(f"  load test: {load}", flush=True)
    return load


def side_by_side_table(rows: list[dict]) -> dict:
    """The rows as a table, with each system's p50, p99 and QPS as a ratio to vecflow's."""
    ours = {(r["kind"], r["clients"]): r for r in rows if r["system"].startswith("vecflow")}
    lines = [
        f"{'kind':<9}{'clients':>8}  {'system':<30}{'p50 ms':>9}{'p99 ms':>9}{'QPS':>9}{'recall':>8}   vs vecflow (p50, p99, QPS)"
    ]
    ratios = []
    for r in rows:
        base = ours[(r["kind"], r["clients"])]
        ratio = {
            "system": r["system"],
            "kind": r["kind"],
            "clients": r["clients"],
            "p50": round(r["p50_ms"] / base["p50_ms"], 2),
            "p99": round(r["p99_ms"] / base["p99_ms"], 2),
            "qps": round(r["qps"] / base["qps"], 2),
        }
        ratios.append(ratio)
        lines.append(
            f"{r['kind']:<9}{r['clients']:>8}  {r['system']:<30}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['qps']:>9}"
            f"{r['recall_at_10']:>8}   {ratio['p50']}x, {ratio['p99']}x, {ratio['qps']}x"
        )
    return {"text": "\n".join(lines), "ratios": ratios}


if __name__ == "__main__":
    sys.exit(main())
