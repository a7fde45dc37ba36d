"""Embed one shard: `python -m vecflow_model.embed --manifest SHARD.parquet --output OUT.parquet ...`

Reads a shard manifest (image_id, uri, source, listed_date, category), decodes every image,
and writes one parquet file with a row per image: fingerprints, the vector, colour and pattern tags
and, for images that could not be used, reject_reason instead of a vector. The output is written to
a temporary name and renamed, so a killed job never leaves a partial file. Exit status is non-zero
only for fatal errors (bad arguments, unreadable manifest, unknown model); a bad image is a row.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from vecflow_model.imaging import DecodeError, analysis_pixels, content_md5, decode, dhash64
from vecflow_model.model import INPUT_SIZE, load_model
from vecflow_model.pixel_tags import PixelTagger

log = logging.getLogger("vecflow_model.embed")

OUTPUT_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("source", pa.string()), ("listed_date", pa.date32()),
    ("category", pa.string()), ("content_md5", pa.string()), ("dhash", pa.int64()),
    ("model_version", pa.string()), ("dim", pa.int32()), ("embedding", pa.list_(pa.float64())),
    ("color", pa.string()), ("color_confidence", pa.float64()),
    ("pattern", pa.string()), ("pattern_confidence", pa.float64()),
    ("run_id", pa.string()), ("shard_id", pa.int32()), ("attempt", pa.int32()),
    ("embedded_at", pa.timestamp("us", tz="UTC")),
    ("reject_reason", pa.string()), ("reject_detail", pa.string()),
])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vecflow_model.embed", description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, type=Path, help="shard manifest (parquet)")
    p.add_argument("--catalog-root", required=True, type=Path, help="base for relative image URIs")
    p.add_argument("--output", required=True, type=Path, help="output parquet file")
    p.add_argument("--taxonomy", required=True, type=Path, help="taxonomy.json (palette and patterns)")
    p.add_argument("--model-version", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--shard-id", required=True, type=int)
    p.add_argument("--attempt", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def _resolve(uri: str, root: Path) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    path = Path(uri)
    return path if path.is_absolute() else root / path


def _read_image(uri: str, root: Path) -> tuple[bytes | None, str | None, str | None]:
    path = _resolve(uri, root)
    try:
        return path.read_bytes(), None, None
    except FileNotFoundError:
        return None, "missing", f"{path} does not exist"
    except OSError as exc:
        return None, "unreadable", f"{path}: {exc}"


def embed_shard(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    manifest = pq.read_table(args.manifest).to_pylist()
    tagger = PixelTagger(json.loads(args.taxonomy.read_text()))
    device = torch.device(args.device)
    model = load_model(args.model_version).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    now = dt.datetime.now(dt.timezone.utc)
    base = {"model_version": args.model_version, "run_id": args.run_id, "shard_id": args.shard_id,
            "attempt": args.attempt, "embedded_at": now}
    rows, batch, batch_rows = [], [], []

    def flush() -> None:
        if not batch:
            return
        tensor = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0).to(device)
        with torch.inference_mode():
            vectors = model(tensor).double().cpu().numpy()
        for row, vector in zip(batch_rows, vectors):
            row["embedding"] = vector.tolist()
            row["dim"] = len(vector)
        batch.clear()
        batch_rows.clear()

    for i, item in enumerate(manifest, 1):
        row = {**base, **{k: item.get(k) for k in ("image_id", "source", "listed_date", "category")},
               "reject_reason": None, "reject_detail": None}
        rows.append(row)
        data, reason, detail = _read_image(item["uri"], args.catalog_root)
        if data is None:
            row.update(reject_reason=reason, reject_detail=detail)
            continue
        row["content_md5"] = content_md5(data)
        try:
            image = decode(data)
        except DecodeError as exc:
            row.update(reject_reason="corrupt", reject_detail=f"cannot decode: {exc}")
            continue
        row["dhash"] = dhash64(image)
        tags = tagger.tag(analysis_pixels(image))
        if tags["color"] is None:
            row.update(reject_reason="no_garment", reject_detail="no foreground pixels found")
            continue
        row.update(color=tags["color"].value, color_confidence=tags["color"].confidence,
                   pattern=tags["pattern"].value, pattern_confidence=tags["pattern"].confidence)
        batch.append(np.asarray(image.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR), dtype=np.uint8))
        batch_rows.append(row)
        if len(batch) >= args.batch_size:
            flush()
        if i % 1000 == 0:
            log.info("shard %s: %d/%d images, %.1f images/s", args.shard_id, i, len(manifest),
                     i / (time.perf_counter() - started))
    flush()
    table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, args.output)
    elapsed = time.perf_counter() - started
    rejected = sum(r["reject_reason"] is not None for r in rows)
    stats = {"shard_id": args.shard_id, "images": len(rows), "embedded": len(rows) - rejected,
             "rejected": rejected, "seconds": round(elapsed, 3),
             "images_per_s": round(len(rows) / elapsed, 1) if elapsed else None, "output": str(args.output)}
    log.info("shard %s done: %s", args.shard_id, stats)
    return stats


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        embed_shard(args)
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.error("fatal: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
