"""Embed one shard: `python -m vecflow_model.embed --manifest SHARD.parquet --output OUT.parquet ...`

The container contract of the embedding job, the same on a GPU pod and as a local process. Reads
a shard manifest (image_id, uri, source, listed_date, category), decodes and preprocesses images in
DataLoader workers, embeds them under torch.inference_mode (AMP and channels_last on CUDA,
optionally torch.compile) and writes one parquet file with a row per image: fingerprints, the
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
from vecflow_model.imaging import (
    DecodeError,
    analysis_pixels,
    content_md5,
    decode,
    dhash64,
    edge_signature,
)
from vecflow_model.pixel_tags import PixelAnalyser
from vecflow_model.preprocess import Preprocessing, background_distance, network_input
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
    """One manifest row -> (model input or None, output row). Runs in DataLoader workers."""

    def __init__(self, rows: list[dict], catalog_root: Path, preprocessing: Preprocessing):
        self.rows, self.root, self.analyser = rows, catalog_root, PixelAnalyser()
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

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, dict]:
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
            return None, {**row, "reject_reason": item["reject_reason"], "reject_detail": item.get("reject_detail")}
        data = item.get("content")  # fetched before the job
        if data is None:
            data, reject = self.read_local(item["uri"])
            if reject:
                return None, {**row, **reject}
        row["content_md5"] = content_md5(data)
        try:
            image = decode(data, self.preprocessing.decode_size)
        except DecodeError as exc:
            return None, {**row, "reject_reason": "corrupt", "reject_detail": f"cannot decode: {exc}"}
        row["dhash"] = dhash64(image)
        row["edge_signature"] = edge_signature(image).tolist()
        pixels = analysis_pixels(image)
        distance = background_distance(pixels)
        analyses = self.analyser.analyse(pixels, distance)
        if analyses is None:
            return None, {**row, "reject_reason": "no_garment", "reject_detail": "no foreground pixels found"}
        row["analyses"] = analyses
        return network_input(image, distance, self.preprocessing), row


def collate(batch: list[tuple[np.ndarray | None, dict]]) -> tuple[torch.Tensor | None, list[dict], list[dict]]:
    inputs = [x for x, _ in batch if x is not None]
    embedded = [row for x, row in batch if x is not None]
    rejected = [row for x, row in batch if x is None]
    return (torch.from_numpy(np.stack(inputs)) if inputs else None), embedded, rejected


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
    model_seconds = 0.0
    with torch.inference_mode(), _autocast(device, args.amp):
        for inputs, embedded, rejected in loader:
            rows.extend({**base, **r} for r in rejected)
            if inputs is not None:
                tick = time.perf_counter()
                inputs = inputs.to(device, non_blocking=True)
                if device.type == "cuda":
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
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
