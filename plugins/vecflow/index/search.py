"""Search by image: embed a picture with the serving model, search the published window index of
its predicted category (or of every category), and return the nearest canonical images with their
scores, tags and the duplicates folded into them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vecflow.index.store import index_store
from vecflow.index.window import load_published, published_categories


def embed_image(path: Path, model_version: str, registry: Path) -> tuple[np.ndarray, str | None]:
    """(unit vector, predicted category or None for a model without a category head)."""
    import torch

    from vecflow_model.imaging import analysis_pixels, decode
    from vecflow_model.preprocess import background_distance, network_input
    from vecflow_model.registry import load_model

    model = load_model(model_version, registry)
    image = decode(Path(path).read_bytes())
    tensor = network_input(image, background_distance(analysis_pixels(image)), model.input_kind, model.input_size)
    with torch.inference_mode():
        vector, probabilities = model.network(torch.from_numpy(tensor[None]))
    category = model.categories[int(probabilities.argmax())] if probabilities is not None else None
    return vector[0].numpy().astype(np.float32), category


def search(settings, warehouse, image: Path, k: int = 10, category: str | None = None) -> pd.DataFrame:
    """Top-k of the published index of `category` (default: the image's predicted category; "all":
    every category with a published index)."""
    vector, predicted = embed_image(image, settings.model_version, settings.embed.model_registry)
    wanted = category or predicted
    store = index_store(settings)
    categories = published_categories(settings, settings.model_version) if wanted in (None, "all") else [wanted]
    hits = []
    for cat in categories:
        index, ids, manifest = load_published(store, settings.model_version, cat)
        if hasattr(index, "nprobe"):
            index.nprobe = manifest.get("nprobe", settings.index.nprobe)
        scores, found = index.search(vector[None], min(k, index.ntotal))
        image_of = dict(zip(ids["id"], ids["image_id"]))
        hits += [
            {"image_id": image_of[i], "score": float(s), "category": cat, "index_version": manifest["version"]}
            for s, i in zip(scores[0], found[0])
            if i != -1
        ]
    results = pd.DataFrame(hits, columns=["image_id", "score", "category", "index_version"])
    results = results.sort_values("score", ascending=False).head(k).reset_index(drop=True)
    if results.empty:
        return results
    details = warehouse.query(
        "select_search_results", image_ids=results["image_id"].tolist(), model_version=settings.model_version
    )
    results = results.merge(details, on="image_id", how="left")
    results.insert(0, "rank", range(1, len(results) + 1))
    results.attrs["predicted_category"] = predicted
    return results
