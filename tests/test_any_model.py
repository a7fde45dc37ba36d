"""Any model: the model card's embedding_dim, input_size, resize mode and normalisation reach the
embedding job, the clean stage and the quality suite; a malformed card is refused when read."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vecflow.config import settings
from vecflow_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, rgb_input
from vecflow_model.registry import DEFAULT_REGISTRY, ModelRegistryError, file_md5, load_model, read_card

DAY = dt.date(2026, 1, 1)
MODEL = "own-384-v1"
CARD = {
    "kind": "torch-export",
    "weights_file": "model.pt2",
    "embedding_dim": 384,
    "input_size": 64,
    "resize": "center_crop",
    "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
}


def thirds(width: int = 300, height: int = 100) -> np.ndarray:
    """A wide photo: red, green and blue thirds from left to right."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    for channel in range(3):
        pixels[:, channel * width // 3 : (channel + 1) * width // 3, channel] = 255
    return pixels


def test_squash_keeps_the_whole_photo_and_center_crop_its_middle():
    raw = Preprocessing("rgb", 6, "squash", None, None)
    squashed = rgb_input(thirds(), raw)
    assert squashed.shape == (3, 6, 6) and squashed.dtype == np.float32
    # every third survives, squeezed into two columns (bilinear blends the columns where they meet)
    assert np.allclose(squashed[0, :, 0], 1) and np.allclose(squashed[2, :, 5], 1)
    assert (squashed[1, :, 2:4] > 0.5).all() and (squashed[[0, 2], :, 2:4] < 0.5).all()
    cropped = rgb_input(thirds(), Preprocessing("rgb", 6, "center_crop", None, None))
    # the centre square (the shorter side kept whole) is green; its edge columns blend in a little of
    # their neighbours, as a resize before a crop does (torchvision's and CLIP's preprocessing)
    assert np.allclose(cropped[1, :, 1:5], 1) and (cropped[1] > 0.8).all() and (cropped[[0, 2]] < 0.2).all()
    # a tall photo is cropped top and bottom
    tall = rgb_input(np.rot90(thirds()).copy(), Preprocessing("rgb", 6, "center_crop", None, None))
    assert np.allclose(tall[1, 1:5], 1) and (tall[[0, 2]] < 0.2).all()


def test_normalisation_is_the_cards_mean_and_std_or_none():
    image = np.full((20, 40, 3), (255, 128, 0), dtype=np.uint8)
    rgb = np.array([1.0, 128 / 255, 0.0], dtype=np.float32)[:, None, None]
    raw = rgb_input(image, Preprocessing("rgb", 8, "squash", None, None))
    assert raw.shape == (3, 8, 8) and np.allclose(raw, rgb)
    imagenet = rgb_input(image, Preprocessing("rgb", 8))
    expected = (rgb - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
    assert np.allclose(imagenet, expected, atol=1e-6)
    own = rgb_input(image, Preprocessing("rgb", 8, "squash", (0.5, 0.5, 0.5), (0.5, 0.25, 0.5)))
    assert np.allclose(own[:, 0, 0], [1.0, (128 / 255 - 0.5) / 0.25, -1.0], atol=1e-6)


def write_card(registry, version: str, card: dict, weights: bytes = b"stand-in weights") -> None:
    """A card in `registry`, `weights` written to its weights_file and their md5 recorded."""
    directory = registry / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / card["weights_file"]).write_bytes(weights)
    (directory / "card.json").write_text(
        json.dumps({**card, "weights_md5": file_md5(directory / card["weights_file"])})
    )


def test_a_card_declares_its_input_and_read_card_takes_it(tmp_path):
    write_card(tmp_path, MODEL, CARD)
    card, _ = read_card(MODEL, tmp_path)
    assert card["embedding_dim"] == 384
    # what is not declared is the default: squash, ImageNet's mean and std
    minimal = {k: v for k, v in CARD.items() if k not in ("resize", "normalize")}
    write_card(tmp_path, "minimal", minimal)
    from vecflow_model.registry import card_preprocessing

    assert card_preprocessing(read_card("minimal", tmp_path)[0]) == Preprocessing("rgb", 64)
    assert card_preprocessing({**minimal, "normalize": "none"}) == Preprocessing("rgb", 64, "squash", None, None)
    assert card_preprocessing(CARD) == Preprocessing("rgb", 64, "center_crop", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert card_preprocessing(read_card("garment-arcface-v1", DEFAULT_REGISTRY)[0]).kind == "silhouette28"


@pytest.mark.parametrize(
    "change, field, problem",
    [
        ({"embedding_dim": 0}, "embedding_dim", "not a positive integer"),
        ({"embedding_dim": "384"}, "embedding_dim", "not a positive integer"),
        ({"input_size": None}, "input_size", "missing"),
        ({"input_size": 6.5}, "input_size", "not a positive integer"),
        ({"resize": "crop"}, "resize", "one of ['squash', 'center_crop']"),
        ({"normalize": "imagenet"}, "normalize", '"none"'),
        ({"normalize": {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}}, "normalize", "3 finite numbers"),
        ({"normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0, 0.2]}}, "normalize", "must be > 0"),
        ({"normalize": {"mean": [0.5] * 3}}, "normalize", '"std"'),
        ({"kind": "onnx"}, "kind", "known kinds"),
        ({"kind": "torchvision"}, "architecture", "missing"),
        ({"kind": "garment-arcface", "categories": ["coat"]}, "input_size", "not allowed for kind 'garment-arcface'"),
    ],
)
def test_a_malformed_card_is_refused_naming_the_card_and_the_field(tmp_path, change, field, problem):
    card = {k: v for k, v in {**CARD, **change}.items() if v is not None}
    write_card(tmp_path, MODEL, card)
    with pytest.raises(ModelRegistryError) as refused:
        read_card(MODEL, tmp_path)
    message = str(refused.value)
    assert str(tmp_path / MODEL / "card.json") in message and f"field {field!r}" in message and problem in message


class _Own384(torch.nn.Module):
    """Stands for a brought backbone with a 384-d output (DINOv2-S's width) and a 64 px input."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()
        )
        self.head = torch.nn.Linear(8 * 16, 384)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def wide_photos(directory) -> pd.DataFrame:
    """A manifest of four rendered garments, each on a canvas half as wide again (centre crop and
    squash differ), with the shipped model's category names from their Fashion-MNIST labels."""
    from vecflow.demo.catalog import fashion_mnist
    from vecflow.demo.catalog.render import jpeg_bytes, pattern_modulation, render

    names = read_card("garment-arcface-v1", DEFAULT_REGISTRY)[0]["categories"]
    images, labels = fashion_mnist.load("test")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        garment = render(images[i], (40, 60, 200), pattern_modulation(None, None, 256), rng)
        canvas = Image.new("RGB", (384, 256), garment.getpixel((0, 0)))
        canvas.paste(garment, (64 + 16 * i, 0))
        path = directory / f"own{i}.jpg"
        path.write_bytes(jpeg_bytes(canvas, 90))
        rows.append({"image_id": f"own{i}", "uri": path.as_uri(), "category": names[int(labels[i])]})
    return pd.DataFrame(rows).assign(source="shop_a", listed_date=DAY)


@pytest.mark.integration  # exports and loads a real backbone, runs a shard and the clean stage
@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_a_384d_exported_model_is_embedded_and_cleaned_by_its_card(tmp_path, warehouse, monkeypatch):
    from vecflow.clean import clean_partition
    from vecflow.embed.runner import run_shard
    from vecflow.tasks import load_vector_log
    from vecflow_model.imaging import decode

    registry = tmp_path / "registry"
    (registry / MODEL).mkdir(parents=True)
    torch.manual_seed(0)
    program = torch.export.export(
        _Own384().eval(), (torch.randn(2, 3, 64, 64),), dynamic_shapes={"images": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(program, registry / MODEL / "model.pt2")
    write_card(registry, MODEL, CARD, weights=(registry / MODEL / "model.pt2").read_bytes())
    card = json.loads((registry / MODEL / "card.json").read_text())
    monkeypatch.setenv("VECFLOW_MODEL_REGISTRY", str(registry))
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", MODEL)

    manifest = wide_photos(tmp_path)
    manifest.to_parquet(tmp_path / "shard.parquet", index=False)
    shard = {
        "manifest": str(tmp_path / "shard.parquet"),
        "output": str(tmp_path / "shard.vectors.parquet"),
        "shard_id": 0,
        "run_id": "r1",
        "model_version": MODEL,
    }
    run_shard(shard, settings(), attempt=1)
    out = pd.read_parquet(shard["output"]).set_index("image_id").sort_index()
    assert out["reject_reason"].isna().all(), out["reject_detail"]
    vectors = np.stack(out["embedding"].to_numpy())
    assert vectors.shape == (4, 384) and (out["dim"] == 384).all()

    # the job's vectors are the card's preprocessing (centre crop, its own mean and std) through the model
    model = load_model(MODEL, registry)
    assert model.preprocessing == Preprocessing("rgb", 64, "center_crop", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))

    def embedded(preprocessing: Preprocessing) -> np.ndarray:
        photos = [decode((tmp_path / f"{i}.jpg").read_bytes()) for i in out.index]
        batch = torch.from_numpy(np.stack([rgb_input(p, preprocessing) for p in photos]))
        with torch.inference_mode():
            return model.network(batch)[0].numpy()

    assert np.allclose(vectors, embedded(model.preprocessing), atol=1e-5)
    squashed = Preprocessing("rgb", 64, "squash", model.preprocessing.mean, model.preprocessing.std)
    assert not np.allclose(vectors, embedded(squashed), atol=1e-3)  # the crop made a difference

    # the clean stage expects the card's 384: every vector kept, none rejected wrong_dim
    load_vector_log(settings(), warehouse, DAY, "r1", [shard])
    clean_partition(settings(), warehouse, DAY, "r1")
    clean = warehouse.table("vectors_clean").query("model_version == @MODEL")
    assert sorted(clean["image_id"]) == sorted(out.index)
    assert {len(v) for v in warehouse.table("vector_log")["embedding"]} == {384}
    rejects = warehouse.table("rejects")
    assert "wrong_dim" not in set(rejects["reason"])

    # a card that says 512 for the same program: every vector a wrong_dim reject naming both lengths
    (registry / MODEL / "card.json").write_text(json.dumps({**card, "embedding_dim": 512}))
    clean_partition(settings(), warehouse, DAY, "r1")
    wrong = warehouse.table("rejects").query("stage == 'validate'")
    assert sorted(wrong["image_id"]) == sorted(out.index) and set(wrong["reason"]) == {"wrong_dim"}
    assert set(wrong["detail"]) == {"dim 384 != 512"}
    assert warehouse.table("vectors_clean").query("model_version == @MODEL").empty


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_the_vector_log_suite_expects_the_serving_cards_dim(tmp_path, warehouse, monkeypatch):
    import hashlib

    from warehouse_rows import D1, catalog, load, row, unit

    from vecflow.quality import DataQualityError, check_partition

    write_card(tmp_path, MODEL, CARD)  # the suite reads the card, never the weights
    monkeypatch.setenv("VECFLOW_MODEL_REGISTRY", str(tmp_path))
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", MODEL)
    ids = [f"v{i}" for i in range(3)]
    catalog(warehouse, D1, ids)
    md5 = {i: hashlib.md5(i.encode()).hexdigest() for i in ids}
    load(
        warehouse, [row(i, D1, md5=md5[i], embedding=unit(n, 384), model_version=MODEL) for n, i in enumerate(ids)], D1
    )
    assert check_partition(settings(), warehouse, D1, suites=("vector_log",))["vector_log"]["success"]
    # the same vectors against a card that says 256: the suite fails on the dim it expected
    write_card(tmp_path, MODEL, {**CARD, "embedding_dim": 256})
    with pytest.raises(DataQualityError, match=r"column='dim', mostly=0.99, value_set=\[256\]"):
        check_partition(settings(), warehouse, D1, suites=("vector_log",))
