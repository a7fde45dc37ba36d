"""Trains the shipped embedding model on Fashion-MNIST, on CPU, reproducibly, and writes it to the
model registry with its card:

    python include/models/train.py --epochs 12 --seed 0

Writes include/models/registry/<model_version>/{model.pt, card.json}. The card holds the data,
the command, the metrics (recall@1 of the test split against the train gallery, category accuracy,
accuracy on rendered catalog images) and the md5 of the weights, which loaders check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from vecflow_model.arcface_net import GarmentModel

log = logging.getLogger("train")
HERE = Path(__file__).resolve().parent


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """The same per-image scaling as preprocess.silhouette_input: 99.5th percentile -> 1."""
    top = torch.quantile(batch.flatten(1), 0.995, dim=1).clamp_min(1e-6)
    return (batch / top[:, None, None, None]).clamp(0, 1)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = batch.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    # a saturated tint flattens the garment's shading: push intensities towards 1
    gain = 1 + 3 * torch.rand(n, 1, 1, 1, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.5)
    batch = (batch * gain).clamp(0, 1)
    # small shifts: garments are not always centred
    padded = F.pad(batch, (2, 2, 2, 2))
    dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + 28, dx : dx + 28]


@torch.no_grad()
def embed_all(model: GarmentModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    outputs = [model(images[i : i + 1024]) for i in range(0, len(images), 1024)]
    return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])


def recall_at_1(
    queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor
) -> float:
    hits = 0
    for i in range(0, len(queries), 1000):
        nearest = (queries[i : i + 1000] @ gallery.t()).argmax(dim=1)
        hits += (gallery_labels[nearest] == query_labels[i : i + 1000]).sum().item()
    return hits / len(queries)


def rendered_catalog_accuracy(
    model: GarmentModel, images: np.ndarray, labels: np.ndarray, count: int, seed: int
) -> float:
    """Category accuracy on product photos drawn like the catalog (tint, pattern, JPEG), through
    the same decode -> preprocess path as the embedding job."""
    from vecflow.demo.catalog.render import jpeg_bytes, render_tagged
    from vecflow.taxonomy import load_taxonomy
    from vecflow_model.imaging import analysis_planes, decode
    from vecflow_model.measure import measure
    from vecflow_model.preprocess import SILHOUETTE

    taxonomy = load_taxonomy()
    rng = np.random.default_rng(seed)
    colors, patterns = taxonomy.tags("color"), taxonomy.tags("pattern")
    batch = []
    for i in range(count):
        color, pattern = rng.choice(colors), rng.choice(patterns)
        picture = decode(jpeg_bytes(render_tagged(images[i], taxonomy, color, pattern, rng), 90))
        batch.append(analysis_planes(picture))
    silhouettes = measure(torch.from_numpy(np.stack(batch)), SILHOUETTE).inputs
    _, probabilities = embed_all(model, silhouettes)
    return float((probabilities.argmax(1).numpy() == labels[:count]).mean())


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-version", default="garment-arcface-v1")
    p.add_argument("--registry", type=Path, default=HERE / "registry")
    args = p.parse_args()

    from vecflow.demo.catalog import fashion_mnist

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(args.seed)
    train_np, train_labels_np = fashion_mnist.load("train")
    test_np, test_labels_np = fashion_mnist.load("test")
    train = normalise(torch.from_numpy(train_np).float()[:, None] / 255.0)
    test = normalise(torch.from_numpy(test_np).float()[:, None] / 255.0)
    train_labels, test_labels = torch.from_numpy(train_labels_np).long(), torch.from_numpy(test_labels_np).long()

    model = GarmentModel()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = args.epochs * ((len(train) + args.batch_size - 1) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for i in range(0, len(train), args.batch_size):
            index = order[i : i + args.batch_size]
            embeddings = model.backbone(augment(train[index], generator))
            loss = F.cross_entropy(model.head(embeddings, train_labels[index]), train_labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        test_embeddings, test_probabilities = embed_all(model, test)
        accuracy = (test_probabilities.argmax(1) == test_labels).float().mean().item()
        log.info(
            "epoch %d/%d loss %.3f test category accuracy %.4f (%.0f s)",
            epoch,
            args.epochs,
            total / len(train),
            accuracy,
            time.perf_counter() - started,
        )

    train_embeddings, _ = embed_all(model, train)
    test_embeddings, test_probabilities = embed_all(model, test)
    metrics = {
        "recall_at_1_test_vs_train_gallery": round(
            recall_at_1(test_embeddings, test_labels, train_embeddings, train_labels), 4
        ),
        "category_accuracy_test": round((test_probabilities.argmax(1) == test_labels).float().mean().item(), 4),
        "category_accuracy_rendered_catalog_1000": round(
            rendered_catalog_accuracy(model, test_np, test_labels_np, 1000, args.seed), 4
        ),
    }
    out = args.registry / args.model_version
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.pt"
    torch.save(model.state_dict(), weights)
    from vecflow.taxonomy import load_taxonomy

    labels = load_taxonomy().category_by_label()
    card = {
        "model_version": args.model_version,
        "kind": "garment-arcface",
        "width": 32,
        "categories": [labels[i] for i in range(len(labels))],
        "architecture": "GarmentModel (vecflow_model.arcface_net): 6 conv blocks (width 32), GAP, 256-d "
        "BatchNorm projection, L2-normalised; ArcFace head s=30 m=0.3 over 10 classes",
        "parameters": sum(p.numel() for p in model.backbone.parameters()),
        "input": "1x28x28 background-distance map in [0, 1] (vecflow_model.preprocess)",
        "embedding_dim": 256,
        "category": "argmax of the ArcFace class centres' cosine (classifier head); probability = softmax(s * cos)",
        "color_and_pattern": "computed from pixels (vecflow_model.pixel_tags), not by this model",
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist, MIT): 60k train for training and as the "
        "gallery, 10k test as queries; augmentation: flips, 2 px shifts, intensity gain 1-4x",
        "training_command": "python include/models/train.py " + " ".join(sys.argv[1:]),
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "threads": args.threads,
            "seconds": round(time.perf_counter() - started, 1),
            "device": "cpu",
            "torch": torch.__version__,
        },
        "metrics": metrics,
        "weights_file": "model.pt",
        "weights_md5": hashlib.md5(weights.read_bytes()).hexdigest(),
        "created": dt.date.today().isoformat(),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s: %s", out, json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
