"""Embedding benchmark. Prints ratios and writes bench/results/embed_<mode>.json.

CPU mode (default, `make bench`): on generated catalog JPEGs, end-to-end images/s of the
entrypoint (files -> decode -> tags -> vectors -> parquet) and model-only images/s (preprocessed
tensors through the shipped network) in the same run, their ratio, and the cost of running the
entrypoint as a child process instead of in-process.

GPU mode (`python bench/embed.py --mode gpu`, needs CUDA and torchvision): ResNet50 and
MobileNetV3-Large at 224 px with random weights, eager fp32 vs AMP + channels_last vs
torch.compile, end to end from JPEG bytes with CPU decode (PIL in DataLoader workers) and with
torchvision.io.decode_jpeg on the device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_report import write_report  # noqa: E402  (bench/ is the script's directory)


def write(mode: str, report: dict) -> None:
    import torch

    gpu = {"gpu": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {}
    write_report(f"embed_{mode}", report, python=platform.python_version(), torch=torch.__version__, **gpu)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def cpu_mode(images: int, repeats: int) -> None:
    import torch

    home = Path(tempfile.mkdtemp(prefix="vecflow-bench-"))
    os.environ.update({"VECFLOW_HOME": str(home), "VECFLOW_SHARD_SIZE": str(images)})
    from vecflow.config import settings
    from vecflow.demo.catalog.generate import CatalogParams, generate
    from vecflow.demo.catalog.spec import load_trend_spec
    from vecflow.embed.plan import plan_shards
    from vecflow.embed.runner import run_shard
    from vecflow.resources import DEFAULT_TREND_SPEC
    from vecflow.taxonomy import load_taxonomy
    from vecflow.warehouse import bootstrap, get_warehouse
    from vecflow_model.registry import load_model

    taxonomy = load_taxonomy()
    day = dt.date(2026, 1, 1)
    generate(
        home / "catalog", CatalogParams(1, day, 1, images), load_trend_spec(DEFAULT_TREND_SPEC, taxonomy), taxonomy
    )
    warehouse = get_warehouse()
    bootstrap(warehouse)
    shard = plan_shards(settings(), warehouse, day, "bench")[0]

    def entrypoint(runner: str):
        os.environ["VECFLOW_EMBED_RUNNER"] = runner
        return lambda: run_shard(shard, settings(), attempt=1)

    entrypoint("inprocess")()  # warm-up: imports and first calls are not the steady state
    end_to_end = best_of(entrypoint("inprocess"), repeats)
    child = best_of(entrypoint("subprocess"), repeats)

    model = load_model(settings().model_version, settings().embed.model_registry)
    batch = torch.rand(settings().embed.batch_size, 1, model.preprocessing.size, model.preprocessing.size)
    batches = -(-images // len(batch))

    def model_only():
        with torch.inference_mode():
            for _ in range(batches):
                model.network(batch)

    model_only()
    model_s = best_of(model_only, repeats) * images / (batches * len(batch))
    report = {
        "images": images,
        "repeats": repeats,
        "model_version": settings().model_version,
        "batch_size": settings().embed.batch_size,
        "images_per_s": {
            "end_to_end": round(images / end_to_end, 1),
            "model_only": round(images / model_s, 1),
            "end_to_end_child_process": round(images / child, 1),
        },
        "ratios": {
            "end_to_end_vs_model_only": round(model_s / end_to_end, 3),
            "child_process_vs_in_process_time": round(child / end_to_end, 2),
        },
    }
    for name, value in {**report["images_per_s"], **report["ratios"]}.items():
        print(f"{name:34s} {value:10.3f}")
    write("cpu", report)


def gpu_mode(images: int, batch_size: int, workers: int) -> None:
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    if not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device")
    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(64):  # distinct 256x256 JPEGs, cycled
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    class CpuDecoded(Dataset):
        def __len__(self):
            return images

        def __getitem__(self, i):
            image = Image.open(io.BytesIO(jpegs[i % len(jpegs)])).convert("RGB").resize((224, 224))
            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def cpu_decode_batches():
        loader = DataLoader(
            CpuDecoded(),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=True,
            prefetch_factor=4 if workers else None,
        )
        for batch in loader:
            yield batch.to(device, non_blocking=True)

    def gpu_decode_batches():
        raw = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
        for start in range(0, images, batch_size):
            data = [raw[i % len(raw)] for i in range(start, min(images, start + batch_size))]
            decoded = torch.stack(torchvision.io.decode_jpeg(data, device=device))
            yield torch.nn.functional.interpolate(decoded.float(), size=224, mode="bilinear")

    results = {}
    for arch in ("mobilenet_v3_large", "resnet50"):
        for variant in ("eager_fp32", "amp_channels_last", "compile_amp_channels_last"):
            net = torchvision.models.get_model(arch, weights=None).eval().to(device)
            amp = variant != "eager_fp32"
            if amp:
                net = net.to(memory_format=torch.channels_last)
            if variant.startswith("compile"):
                net = torch.compile(net)
            for decode, batches in (("cpu_decode", cpu_decode_batches), ("gpu_decode", gpu_decode_batches)):

                def run():
                    count = 0
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        for batch in batches():
                            x = (batch.float() - mean) / std
                            if amp:
                                x = x.contiguous(memory_format=torch.channels_last)
                            net(x)
                            count += len(x)
                    torch.cuda.synchronize()
                    return count

                run()  # warm-up (and compilation)
                started = time.perf_counter()
                count = run()
                rate = count / (time.perf_counter() - started)
                results[f"{arch}/{variant}/{decode}"] = round(rate, 1)
                print(f"{arch:20s} {variant:28s} {decode:10s} {rate:10.1f} images/s")
    best = {
        arch: max(v for k, v in results.items() if k.startswith(arch)) for arch in ("mobilenet_v3_large", "resnet50")
    }
    write(
        "gpu",
        {
            "images": images,
            "batch_size": batch_size,
            "workers": workers,
            "images_per_s": results,
            "best_images_per_s": best,
            "ratios": {
                f"{arch}_best_vs_eager_cpu_decode": round(best[arch] / results[f"{arch}/eager_fp32/cpu_decode"], 2)
                for arch in best
            },
        },
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--images", type=int, default=None, help="default 400 (cpu) or 20000 (gpu)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512, help="gpu mode")
    p.add_argument("--workers", type=int, default=12, help="gpu mode: DataLoader workers for CPU decode")
    args = p.parse_args()
    if args.mode == "cpu":
        cpu_mode(args.images or 400, args.repeats)
    else:
        gpu_mode(args.images or 20000, args.batch_size, args.workers)


if __name__ == "__main__":
    main()
