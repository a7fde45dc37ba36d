"""Fetch benchmark: images/s from an HTTP image server on 127.0.0.1 at several concurrencies, and the
share of a shard's wall time spent fetching vs embedding (CPU).

The server answers each request after --latency-ms (a CDN's round trip; 0 measures the fetcher
itself) with catalog-like JPEGs drawn as the generator draws them. Fails when an image was not
fetched or embedded. Writes bench/results/fetch.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
from bench_report import write_report  # bench/ is the script's directory


def photos(n: int) -> list[bytes]:
    from vecflow.demo.catalog import fashion_mnist
    from vecflow.demo.catalog.render import jpeg_bytes, pattern_modulation, render

    images, _ = fashion_mnist.load("test")
    rng = np.random.default_rng(0)
    return [jpeg_bytes(render(images[i], (200, 40, 40), pattern_modulation("dots", 8, 256), rng), 90) for i in range(n)]


def serve(bodies: list[bytes], latency_s: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a CDN serves
        disable_nagle_algorithm = True  # or headers and body wait on delayed ACKs (40 ms a request)

        def do_GET(self):
            time.sleep(latency_s)
            body = bodies[int(self.path.rsplit("/", 1)[1].split(".")[0])]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512, help="images fetched per concurrency")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--shard", type=int, default=256, help="images of the fetch-vs-embed shard")
    args = p.parse_args()

    from vecflow.config import settings
    from vecflow.embed.prefetch import prefetch_shard
    from vecflow.embed.runner import run_shard
    from vecflow.fetch import fetch_images

    bodies = photos(64)
    server = serve(bodies, args.latency_ms / 1000)
    host = f"127.0.0.1:{server.server_address[1]}"
    uris = [f"http://{host}/img/{i % len(bodies)}.jpg?n={i}" for i in range(args.images)]
    base = dataclasses.replace(settings().fetch, allowed_hosts=(host,))
    throughput = {}
    for c in args.concurrency:
        fetch = dataclasses.replace(base, concurrency=c, per_host=c)
        started = time.perf_counter()
        results = fetch_images(uris, fetch, progress_every=0)
        elapsed = time.perf_counter() - started
        failed = [r for r in results if not r.ok]
        if failed:
            raise SystemExit(f"concurrency {c}: {len(failed)} images not fetched, e.g. {failed[0]}")
        throughput[c] = round(len(results) / elapsed, 1)
        print(f"concurrency {c:3d}: {throughput[c]:8.1f} images/s ({len(results)} in {elapsed:.2f} s)")

    # one shard as the daily run does it: fetch (at the default concurrency), then the CPU embedding job
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"VECFLOW_HOME": tmp, "VECFLOW_FETCH_ALLOWED_HOSTS": host})
        s = settings()
        manifest = Path(tmp) / "shard-0000.manifest.parquet"
        pd.DataFrame(
            {
                "image_id": [f"i{i}" for i in range(args.shard)],
                "uri": uris[: args.shard],
                "source": "bench",
                "listed_date": pd.Timestamp("2026-03-30").date(),
                "category": None,
            }
        ).to_parquet(manifest, index=False)
        shard = {
            "run_date": "2026-03-30",
            "run_id": "bench",
            "shard_id": 0,
            "model_version": s.model_version,
            "manifest": str(manifest),
            "output": str(Path(tmp) / "shard-0000.vectors.parquet"),
        }
        from vecflow.warehouse import bootstrap, get_warehouse

        warehouse = get_warehouse(s)
        bootstrap(warehouse)
        started = time.perf_counter()
        fetched = prefetch_shard(shard, s, warehouse, attempt=1)
        fetch_s = time.perf_counter() - started
        run_shard(fetched, s, attempt=1)
        embed_s = time.perf_counter() - started - fetch_s
        out = pd.read_parquet(shard["output"])
        embedded = int(out["reject_reason"].isna().sum())
        if embedded != args.shard:
            raise SystemExit(
                f"shard: {embedded} of {args.shard} images embedded: {out['reject_reason'].value_counts()}"
            )
    share = fetch_s / (fetch_s + embed_s)
    print(f"shard of {args.shard}: fetch {fetch_s:.2f} s, embed {embed_s:.2f} s (CPU): fetching is {share:.0%}")
    print(
        f"ratio: concurrency {args.concurrency[-1]} fetches {throughput[args.concurrency[-1]] / throughput[args.concurrency[0]]:.1f}x "
        f"faster than concurrency {args.concurrency[0]}"
    )
    write_report(
        "fetch",
        {
            "images": args.images,
            "latency_ms": args.latency_ms,
            "images_per_s_by_concurrency": throughput,
            "shard": {
                "images": args.shard,
                "fetch_s": round(fetch_s, 2),
                "embed_cpu_s": round(embed_s, 2),
                "fetch_share": round(share, 3),
            },
        },
    )
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
