"""zero_shot tags: a model card's text tower embeds each tag's prompts; an image takes the tag its
stored vector is nearest to (single-label) or every tag above the threshold (multi-label). The tower
here is a stand-in built in the test (byte trigrams hashed into the embedding space): it checks the
wiring, not the quality of any real text tower."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from warehouse_rows import D1, load, row

from vecflow.clean import clean_partition
from vecflow.config import settings
from vecflow.tagging import TaggingError, publish_taxonomy, tag_frame, tag_partition, text_tower
from vecflow.taxonomy import load_taxonomy, parse_taxonomy
from vecflow.warehouse import get_warehouse, migrate
from vecflow_model.registry import DEFAULT_REGISTRY, ModelRegistryError, file_md5, load_text_tower

MODEL = "m1"  # the serving model the warehouse rows name
DIM = 256  # the shipped card's embedding_dim
MAX_LENGTH = 48

LOOK = {
    "source": "zero_shot",
    "tags": {
        "floral": {"prompts": ["a floral summer dress", "flowers printed all over the fabric"]},
        "leather": {"prompts": ["a black leather biker jacket"]},
        "sporty": {"prompts": ["athletic running gear", "sportswear for the gym"]},
    },
}
MOOD = {
    "source": "zero_shot",
    "multi_label": True,
    "zero_shot_threshold": 0.4,
    "tags": {
        "party": {"prompts": ["sequins for a night out"]},
        "beach": {"prompts": ["swimwear on the sand by the sea"]},
        "office": {"prompts": ["a tailored blazer for work meetings"]},
    },
}


class _ByteTrigrams(nn.Module):
    """Counts a text's byte trigrams in hashed buckets and projects them with a fixed random matrix:
    texts that share trigrams point alike, texts that share few are near orthogonal."""

    BUCKETS = 4096

    def __init__(self, dim: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("mix", torch.randn(self.BUCKETS, dim, generator=generator) / math.sqrt(dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        grams = (ids[:, :-2] * 256 + ids[:, 1:-1]) * 256 + ids[:, 2:]
        buckets = (grams * 40503) % self.BUCKETS
        present = ((ids[:, :-2] > 0) & (ids[:, 1:-1] > 0) & (ids[:, 2:] > 0)).float()
        counts = (F.one_hot(buckets, self.BUCKETS).float() * present.unsqueeze(-1)).sum(dim=1)
        return counts @ self.mix


def _card_with_tower(registry, name: str, tower: dict | None, **fields) -> None:
    """The shipped model's card under `name` (weights linked), with `tower` as its text_tower and
    `fields` changed."""
    shipped = DEFAULT_REGISTRY / "garment-arcface-v1"
    card = json.loads((shipped / "card.json").read_text())
    (registry / name).mkdir(parents=True)
    (registry / name / card["weights_file"]).symlink_to(shipped / card["weights_file"])
    card = {**card, "model_version": name, **fields} | ({"text_tower": tower} if tower is not None else {})
    (registry / name / "card.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """m1 with a text tower into its DIM-d space, `no-tower` without one, `narrow` whose card says 64."""
    registry = tmp_path_factory.mktemp("registry")
    ids = torch.randint(1, 256, (2, MAX_LENGTH))
    program = torch.export.export(
        _ByteTrigrams(DIM).eval(), (ids,), dynamic_shapes={"ids": {0: torch.export.Dim("batch")}}
    )
    path = tmp_path_factory.mktemp("tower") / "text.pt2"
    torch.export.save(program, path)
    tower = {"weights_file": "text.pt2", "weights_md5": file_md5(path), "max_length": MAX_LENGTH}
    for name, dim in ((MODEL, DIM), ("narrow", 64)):
        _card_with_tower(registry, name, tower, embedding_dim=dim)
        shutil.copy(path, registry / name / "text.pt2")
    _card_with_tower(registry, "no-tower", None)
    return registry


def _taxonomy(**dimensions):
    raw = {"dimensions": {"category": {"source": "catalog", "tags": {"dress": {}, "coat": {}}}, **dimensions}}
    return parse_taxonomy(raw, "test taxonomy", "v-test")


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"img{i}" for i in range(n)], "catalog_category": "dress", "source": "shop_a"})


def _near(vectors: np.ndarray, rng, scale: float = 0.02) -> np.ndarray:
    noisy = vectors + rng.normal(scale=scale, size=vectors.shape)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def _direction(tower, prompts: list[str]) -> np.ndarray:
    """A tag's direction: the mean of its prompts' embeddings, normalised."""
    mean = tower.embed(prompts).mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_images_near_a_prompt_get_its_tag(registry):
    tower = load_text_tower(MODEL, registry)
    taxonomy = _taxonomy(look=LOOK)
    rng = np.random.default_rng(3)
    # each image near one prompt of one tag, every prompt used
    chosen = [(tag, prompt) for tag, info in LOOK["tags"].items() for prompt in info["prompts"]] * 4
    vectors = _near(tower.embed([prompt for _, prompt in chosen]), rng)
    tags = tag_frame(_frame(len(chosen)), taxonomy, vectors=vectors, tower=tower).tags
    look = tags[tags["dimension"] == "look"].sort_values("row")
    assert list(look["tag"]) == [tag for tag, _ in chosen]
    assert set(look["tag_source"]) == {"zero_shot"}
    # softmax(100 * cosine): near one tag's direction, the probability is close to 1
    assert look["confidence"].between(0.9, 1.0).all()
    # a vector half way between two tags' directions: each is as likely
    floral, leather = (_direction(tower, LOOK["tags"][tag]["prompts"]) for tag in ("floral", "leather"))
    between = (floral + leather)[None, :] / np.linalg.norm(floral + leather)
    [confidence] = tag_frame(_frame(1), taxonomy, vectors=between, tower=tower).tags.query("dimension == 'look'")[
        "confidence"
    ]
    assert confidence == pytest.approx(0.5, abs=0.01)


def test_multi_label_takes_every_tag_above_the_threshold(registry):
    tower = load_text_tower(MODEL, registry)
    taxonomy = _taxonomy(mood=MOOD)
    party, beach, office = tower.embed([info["prompts"][0] for info in MOOD["tags"].values()])
    # the three texts share few trigrams: their directions are far apart
    assert max(abs(party @ beach), abs(party @ office), abs(beach @ office)) < 0.3
    vectors = _near(np.stack([party + beach, office, party + beach + office]), np.random.default_rng(5))
    tags = tag_frame(_frame(3), taxonomy, vectors=vectors, tower=tower).tags
    mood = tags[tags["dimension"] == "mood"]
    assert {r: set(g["tag"]) for r, g in mood.groupby("row")} == {
        0: {"party", "beach"},
        1: {"office"},
        2: {"party", "beach", "office"},
    }
    assert (mood["confidence"] > 0.4).all()  # the cosine
    # a higher threshold keeps only what is nearer
    strict = _taxonomy(mood={**MOOD, "zero_shot_threshold": 0.72})
    tags = tag_frame(_frame(3), strict, vectors=vectors, tower=tower).tags
    assert set(tags.loc[tags["dimension"] == "mood", "row"]) == {0, 1}


def test_prompts_are_embedded_once_and_as_bytes(registry):
    tower = load_text_tower(MODEL, registry)
    ids = tower.byte_ids(["ab", "é" * 40])
    assert ids.shape == (2, MAX_LENGTH) and ids.dtype == torch.int64
    assert ids[0, :3].tolist() == [97, 98, 0]  # UTF-8 bytes, 0-padded
    assert ids[1].tolist() == list("é".encode() * 24)  # truncated to max_length bytes
    first = tower.embed(["a floral summer dress"])
    assert np.isclose(np.linalg.norm(first), 1.0, atol=1e-5)
    tower.network = None  # a second call must not run the network again
    assert np.array_equal(tower.embed(["a floral summer dress"]), first)


def test_a_card_without_a_text_tower_is_named(registry, monkeypatch):
    monkeypatch.setenv("VECFLOW_MODEL_REGISTRY", str(registry))
    taxonomy = _taxonomy(look=LOOK)
    assert load_text_tower("no-tower", registry) is None
    with pytest.raises(
        TaggingError, match=r"\['look'\] are zero_shot and model no-tower's card declares no `text_tower`"
    ):
        text_tower(settings(), taxonomy, "no-tower")
    with pytest.raises(TaggingError, match="dimension 'look': source zero_shot needs a text tower"):
        tag_frame(_frame(2), taxonomy, vectors=np.ones((2, DIM), np.float32))
    # a taxonomy without zero_shot dimensions never loads a tower
    assert text_tower(settings(), _taxonomy(), "no-tower") is None


def test_a_bad_text_tower_is_refused(registry, tmp_path):
    with pytest.raises(ModelRegistryError, match="text tower maps 1 texts to shape \\(1, 256\\), not \\(1, 64\\)"):
        load_text_tower("narrow", registry).embed(["a dress"])
    tower = load_text_tower(MODEL, registry)
    with pytest.raises(
        TaggingError, match="dimension 'look': the text tower embeds in 256 dimensions, the vectors have 8"
    ):
        tag_frame(_frame(2), _taxonomy(look=LOOK), vectors=np.ones((2, 8), np.float32), tower=tower)
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy, symlinks=True)
    card_path = copy / MODEL / "card.json"
    card = json.loads(card_path.read_text())
    for bad, message in [
        ({**card["text_tower"], "weights_md5": "0" * 32}, "card says 0000"),
        ({**card["text_tower"], "max_length": 0}, "text_tower: field 'max_length' is 0, not a positive integer"),
        ({"max_length": 8}, "text_tower: field 'weights_file' missing"),
        ({**card["text_tower"], "weights_file": "gone.pt2"}, "text tower weights .*gone.pt2 missing"),
        ({**card["text_tower"], "weights_file": "model.pt", "weights_md5": card["weights_md5"]}, "not a torch.export"),
    ]:
        card_path.write_text(json.dumps({**card, "text_tower": bad}))
        with pytest.raises(ModelRegistryError, match=message):
            load_text_tower(MODEL, copy)
    with pytest.raises(Exception, match="zero_shot_threshold 2 must be a number between -1 and 1"):
        _taxonomy(mood={**MOOD, "zero_shot_threshold": 2})


@pytest.mark.integration  # SQL on the warehouse
def test_the_daily_tagging_step_reads_the_vectors_of_zero_shot_dimensions(
    registry, tmp_path, vecflow_home, monkeypatch
):
    """A zero_shot dimension added to the shipped taxonomy: tag_partition reads the stored vectors
    (no head set is trained) and writes the tags into image_tags."""
    raw = json.loads(json.dumps(load_taxonomy().raw))
    raw["dimensions"]["look"] = LOOK
    (tmp_path / "taxonomy.json").write_text(json.dumps(raw))
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", str(tmp_path / "taxonomy.json"))
    monkeypatch.setenv("VECFLOW_MODEL_REGISTRY", str(registry))
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", MODEL)
    tower = load_text_tower(MODEL, registry)
    expected = {"z1": "floral", "z2": "sporty", "z3": "leather"}
    prompts = {
        "z1": "flowers printed all over the fabric",
        "z2": "athletic running gear",
        "z3": LOOK["tags"]["leather"]["prompts"][0],
    }
    vectors = _near(tower.embed(list(prompts.values())), np.random.default_rng(9), scale=0.01)
    warehouse = get_warehouse(settings())
    migrate(warehouse)
    publish_taxonomy(warehouse, load_taxonomy())  # what loading a shard does first
    load(warehouse, [row(i, D1, embedding=v.astype(float).tolist()) for i, v in zip(prompts, vectors)], D1)
    clean_partition(settings(), warehouse, D1, "run-1")
    stats = tag_partition(settings(), warehouse, load_taxonomy(), D1, "run-1", MODEL)
    tags = warehouse.table("image_tags")
    look = tags[tags["dimension"] == "look"]
    assert dict(zip(look["image_id"], look["tag"])) == expected
    assert set(look["tag_source"]) == {"zero_shot"} and stats["head_version"] is None
    assert "look" not in stats["untagged"]
