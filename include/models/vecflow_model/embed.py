"""Embed one shard: `python -m vecflow_model.embed --manifest SHARD.parquet --output OUT.parquet ...`

The container contract of the embedding job, the same on a GPU pod and as a local process. Reads
a shard manifest (image_id, uri, source, listed_date, category), reads, hashes and decodes images in
DataLoader workers, measures each batch on the job's device (vecflow_model.measure: fingerprints,
pixel analyses, the model's input), embeds it under torch.inference_mode (AMP and channels_last on
CUDA, optionally torch.compile) and writes one parquet file with a row per image: fingerprints, the
vector, the pixel analyses and the model head's class (`analyses`, JSON keyed by analyser: what a
taxonomy's tags are computed from, vecflow.tagging), and for an image that could not be used a
reject_reason instead of a vector. The job knows no taxonomy: tags are the worker's business. The file is written under a temporary name and renamed, so a
killed job never leaves a partial output. Exit status is non-zero only for fatal errors (bad
arguments, unreadable manifest, unknown model or wrong md5); a bad image is a row.

The arguments are vecflow_model.contract.ShardJob's, and the output file its OUTPUT_SCHEMA.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from vecflow_model.contract import OUTPUT_SCHEMA, ShardJob, open_location, resolve_uri, vector_checks
from vecflow_model.imaging import DecodeError, analysis_planes, content_md5, decode
from vecflow_model.measure import measure
from vecflow_model.preprocess import Preprocessing, rgb_input
from vecflow_model.registry import DEFAULT_REGISTRY, ModelRegistryError, load_model

log = logging.getLogger("vecflow_model.embed")


def parse_args(argv: list[str] | None = None) -> ShardJob:
    """The job from its arguments (ShardJob.to_args); ATTEMPT in the environment stands in for
    --attempt (how a Kubernetes pod learns its try number)."""
    p = argparse.ArgumentParser(prog="python -m vecflow_model.embed", description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="shard manifest (parquet): a path, gs:// or s3:// URL")
    p.add_argument("--output", required=True, help="output parquet file: a path, gs:// or s3:// URL")
    p.add_argument("--catalog-root", required=True, type=Path, help="base for relative image URIs")
    p.add_argument("--model-version", required=True, help="model in the registry")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="model registry folder")
    p.add_argument("--run-id", required=True)
    p.add_argument("--shard-id", required=True, type=int)
    p.add_argument("--attempt", type=int, default=int(os.environ.get("ATTEMPT") or 1), help="[ATTEMPT]")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding")
    p.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="auto",
        help="mixed precision on CUDA (auto = bf16); ignored on CPU",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    return ShardJob(**vars(p.parse_args(argv)))


class ShardImages(Dataset):
    """One manifest row -> (analysis planes, RGB model input, output row); a reject has no planes.
    Runs in DataLoader workers: reading, hashing and decoding are per image, every measurement is
    made on the batch (measure_batch)."""

    def __init__(self, rows: list[dict], catalog_root: Path, preprocessing: Preprocessing):
        self.rows, self.root = rows, catalog_root
        self.preprocessing = preprocessing  # the card's input: size, resize mode, normalisation

    def __len__(self) -> int:
        return len(self.rows)

    def read_local(self, uri: str) -> tuple[bytes | None, dict | None]:
        """The bytes of an image the fetch stage left as a local path, or the reject it gets."""
        path = resolve_uri(uri, self.root)
        if path is None:
            return None, {
                "reject_reason": "unsupported_uri",
                "reject_detail": f"{uri}: only local paths and file:// URIs are read",
            }
        try:
            return path.read_bytes(), None
        except FileNotFoundError:
            return None, {"reject_reason": "missing", "reject_detail": f"{path} does not exist"}
        except OSError as exc:
            return None, {"reject_reason": "unreadable", "reject_detail": f"{path}: {exc}"}

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
        item = self.rows[i]
        row = {
            "image_id": item["image_id"],
            "source": item.get("source"),
            "listed_date": item.get("listed_date"),
            "catalog_category": item.get("category"),
            "reject_reason": None,
            "reject_detail": None,
        }
        if item.get("reject_reason"):  # decided before the job (the fetch stage): passed on as it is
            return (
                None,
                None,
                {**row, "reject_reason": item["reject_reason"], "reject_detail": item.get("reject_detail")},
            )
        data = item.get("content")  # fetched before the job
        if data is None:
            data, reject = self.read_local(item["uri"])
            if reject:
                return None, None, {**row, **reject}
        row["content_md5"] = content_md5(data)
        try:
            image = decode(data, self.preprocessing.decode_size)
        except DecodeError as exc:
            return None, None, {**row, "reject_reason": "corrupt", "reject_detail": f"cannot decode: {exc}"}
        return analysis_planes(image), rgb_input(image, self.preprocessing), row


Batch = tuple[torch.Tensor | None, torch.Tensor | None, list[dict], list[dict]]


def collate(items: list[tuple[np.ndarray | None, np.ndarray | None, dict]]) -> Batch:
    """(analysis planes, RGB model inputs or None, rows of decoded images, rows of rejects)."""
    decoded = [item for item in items if item[0] is not None]
    planes = torch.from_numpy(np.stack([p for p, _, _ in decoded])) if decoded else None
    rgb = torch.from_numpy(np.stack([x for _, x, _ in decoded])) if decoded and decoded[0][1] is not None else None
    return planes, rgb, [row for _, _, row in decoded], [row for p, _, row in items if p is None]


def measure_batch(
    planes: torch.Tensor, rgb: torch.Tensor | None, rows: list[dict], preprocessing: Preprocessing
) -> tuple[torch.Tensor, list[dict], list[dict]]:
    """Fingerprints and pixel analyses of a batch of analysis planes, written into `rows`: (model
    inputs of the images with a garment, their rows, the rows rejected for having none)."""
    measured = measure(planes, preprocessing, rgb)
    kept, rejected = [], []
    for i, (row, dhash, edges, analyses) in enumerate(
        zip(rows, measured.dhash, measured.edge_signature, measured.analyses)
    ):
        row["dhash"], row["edge_signature"] = dhash, edges.tolist()
        if analyses is None:
            rejected.append({**row, "reject_reason": "no_garment", "reject_detail": "no foreground pixels found"})
        else:
            row["analyses"] = analyses
            kept.append(i)
    return measured.inputs[kept], [rows[i] for i in kept], rejected


# glibc gives a freed block above its mmap threshold back to the kernel at once, so every chunk's
# megabytes of float planes were fresh pages to fault in: ~40% of the measuring time on CPU
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 256 << 20


def keep_freed_memory() -> None:
    """Keep freed blocks of up to KEEP_FREED_BYTES in the process's heap for reuse (glibc only)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: its allocator is its own
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest
    mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def _autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def embed_shard(args: ShardJob) -> dict:
    started = time.perf_counter()
    manifest_fs, manifest_path = open_location(args.manifest)
    manifest = pq.read_table(manifest_path, filesystem=manifest_fs).to_pylist()
    model = load_model(args.model_version, args.registry)
    device = torch.device(args.device)
    network = model.network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    if args.compile:
        network = torch.compile(network)
    loader = DataLoader(
        ShardImages(manifest, args.catalog_root, model.preprocessing),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    base = {
        "model_version": args.model_version,
        "run_id": args.run_id,
        "shard_id": args.shard_id,
        "reused": False,
        "attempt": args.attempt,
        "embedded_at": dt.datetime.now(dt.UTC),
    }
    rows: list[dict] = []
    model_seconds = measure_seconds = 0.0
    keep_freed_memory()
    with torch.inference_mode():
        for planes, rgb, decoded, rejected in loader:
            if planes is not None:
                tick = time.perf_counter()
                inputs, embedded, no_garment = measure_batch(
                    planes.to(device, non_blocking=True), rgb, decoded, model.preprocessing
                )
                measure_seconds += time.perf_counter() - tick
                rejected += no_garment
            else:
                embedded = []
            rows.extend({**base, **r} for r in rejected)
            if embedded:
                tick = time.perf_counter()
                if device.type == "cuda":
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with _autocast(device, args.amp):  # the model only: the measurements stay exact
                    vectors, probabilities = network(inputs)
                vectors = vectors.float().cpu().numpy()
                if probabilities is not None:  # the model's own category head: its class, for the taxonomy
                    confidence, label = probabilities.float().max(dim=1)
                    for row, i, p in zip(embedded, label.cpu().tolist(), confidence.cpu().tolist()):
                        row["analyses"]["model"] = {"category": model.categories[i], "confidence": round(p, 4)}
                model_seconds += time.perf_counter() - tick
                norms, finite = vector_checks(vectors)
                for row, vector, norm, ok in zip(embedded, vectors, norms.tolist(), finite.tolist()):
                    rows.append(
                        {
                            **base,
                            **row,
                            "analyses": json.dumps(row["analyses"], separators=(",", ":")),
                            "embedding": vector.tolist(),
                            "embedding_norm": norm,
                            "embedding_finite": ok,
                            "dim": len(vector),
                        }
                    )
            if len(rows) // 5000 != (len(rows) - len(embedded) - len(rejected)) // 5000:
                log.info(
                    "shard %s: %d/%d images, %.1f images/s",
                    args.shard_id,
                    len(rows),
                    len(manifest),
                    len(rows) / (time.perf_counter() - started),
                )
    table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
    write_output(table, args.output)
    elapsed = time.perf_counter() - started
    rejected_count = sum(r["reject_reason"] is not None for r in rows)
    stats = {
        "shard_id": args.shard_id,
        "images": len(rows),
        "embedded": len(rows) - rejected_count,
        "rejected": rejected_count,
        "seconds": round(elapsed, 3),
        "model_seconds": round(model_seconds, 3),
        "measure_seconds": round(measure_seconds, 3),
        "images_per_s": round(len(rows) / elapsed, 1) if elapsed else None,
        "output": str(args.output),
    }
    log.info("shard %s done: %s", args.shard_id, stats)
    return stats


def write_output(table: pa.Table, location: str) -> None:
    """An object appears whole in one upload; a local file is written under a temporary name and
    renamed, so a killed job never leaves a partial output."""
    fs, path = open_location(location)
    if not isinstance(fs, pafs.LocalFileSystem):
        pq.write_table(table, path, filesystem=fs)
        return
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, output)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        embed_shard(args)
    except (OSError, ValueError, ModelRegistryError, pa.ArrowException) as exc:
        log.error("fatal: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
