"""Model registry: a model is a directory <registry>/<model_version>/ with card.json and a weights
file whose md5 the card records. The registry is a local directory by default (the shipped
include/models/registry) and a mounted PVC or synced GCS prefix in production. Nothing is
downloaded at run time.

Card kinds:
- "garment-arcface": the shipped GarmentModel (embedding + category head), 28x28 input.
- "torchvision": a torchvision classification backbone (e.g. resnet50, mobilenet_v3_large) whose
  classifier is dropped; the pooled features are L2-normalised. Input size from the card. Needs
  torchvision beside torch in the image.
- "torch-export": any backbone saved with torch.export.save (a torchvision model with its classifier
  replaced by nn.Identity, or a model of one's own; batch dimension dynamic) that maps (N, 3, S, S)
  RGB to (N, D) features; they are L2-normalised. Needs nothing but torch at run time.

Every card has `weights_file`, `weights_md5` and `embedding_dim` (D: the clean stage, the quality
suite and index sizing expect it). An RGB card (torchvision, torch-export) also has `input_size` (S)
and may have `resize` ("squash", default, or "center_crop") and `normalize` ({"mean": [r, g, b],
"std": [r, g, b]}; ImageNet's by default; "none" for a model that normalises inside itself, as a
CLIP tower exported with its own preprocessing does). read_card refuses a card that breaks these.

A card may declare a text tower for zero_shot tags: `text_tower` {"weights_file", "weights_md5",
"max_length": L}, a torch.export program (batch dimension dynamic) mapping (N, L) int64 UTF-8 byte
ids (0-padded, truncated to L) to (N, D) text embeddings in the image embedding space
(load_text_tower).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vecflow_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, SILHOUETTE, Preprocessing

DEFAULT_REGISTRY = Path(__file__).resolve().parents[1] / "registry"


class ModelRegistryError(ValueError):
    """A model is missing, its card is malformed, or its weights do not match their md5."""


KIND_INPUTS = {"garment-arcface": "silhouette28", "torch-export": "rgb", "torchvision": "rgb"}
RGB_FIELDS = ("input_size", "resize", "normalize")


@dataclass
class LoadedModel:
    model_version: str
    card: dict
    network: nn.Module
    preprocessing: Preprocessing
    categories: list[str] | None  # class names of the category head, when the model has one

    @property
    def embedding_dim(self) -> int:
        return int(self.card["embedding_dim"])


class _FeatureEmbedder(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.normalize(self.backbone(images).flatten(1), dim=1), None

    def train(self, mode: bool = True) -> _FeatureEmbedder:
        # the backbone is put in eval mode when loaded; an exported program cannot switch modes
        self.training = mode
        return self


def file_md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _channel_values(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def card_preprocessing(card: dict, where: str = "card") -> Preprocessing:
    """The model input a card declares; ModelRegistryError naming `where` (the card) and the field
    when a field is missing, of the wrong type or not allowed for the card's kind."""
    kind = card.get("kind", "garment-arcface")
    if kind not in KIND_INPUTS:
        raise ModelRegistryError(f"{where}: field 'kind' is {kind!r}; known kinds: {sorted(KIND_INPUTS)}")
    if not _positive_int(card["embedding_dim"]):
        raise ModelRegistryError(f"{where}: field 'embedding_dim' is {card['embedding_dim']!r}, not a positive integer")
    if KIND_INPUTS[kind] == "silhouette28":
        fixed = [field for field in RGB_FIELDS if field in card]
        if fixed:
            raise ModelRegistryError(
                f"{where}: field {fixed[0]!r} is not allowed for kind {kind!r} (its input is the 28x28 silhouette)"
            )
        if not isinstance(card.get("categories"), list):
            raise ModelRegistryError(f"{where}: field 'categories' missing (the class names of the category head)")
        return SILHOUETTE
    if kind == "torchvision" and "architecture" not in card:
        raise ModelRegistryError(f"{where}: field 'architecture' missing (a torchvision model name, e.g. resnet50)")
    if "input_size" not in card:
        raise ModelRegistryError(f"{where}: field 'input_size' missing (the side of the square RGB input)")
    if not _positive_int(card["input_size"]):
        raise ModelRegistryError(f"{where}: field 'input_size' is {card['input_size']!r}, not a positive integer")
    resize = card.get("resize", "squash")
    if resize not in RESIZE_MODES:
        raise ModelRegistryError(f"{where}: field 'resize' is {resize!r}; one of {list(RESIZE_MODES)}")
    normalize = card.get("normalize", {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    if normalize == "none":
        return Preprocessing("rgb", card["input_size"], resize, None, None)
    if not isinstance(normalize, dict) or set(normalize) != {"mean", "std"}:
        raise ModelRegistryError(
            f'{where}: field \'normalize\' is {normalize!r}; {{"mean": [r, g, b], "std": [r, g, b]}} or "none"'
        )
    if not (_channel_values(normalize["mean"]) and _channel_values(normalize["std"])):
        raise ModelRegistryError(f"{where}: field 'normalize' needs 3 finite numbers in 'mean' and in 'std'")
    if min(normalize["std"]) <= 0:
        raise ModelRegistryError(f"{where}: field 'normalize' has std {normalize['std']}; each must be > 0")
    return Preprocessing(
        "rgb", card["input_size"], resize, tuple(map(float, normalize["mean"])), tuple(map(float, normalize["std"]))
    )


def read_card(model_version: str, registry: Path = DEFAULT_REGISTRY) -> tuple[dict, Path]:
    directory = Path(registry) / model_version
    card_path = directory / "card.json"
    if not card_path.exists():
        known = (
            sorted(p.name for p in Path(registry).iterdir() if (p / "card.json").exists())
            if Path(registry).is_dir()
            else []
        )
        raise ModelRegistryError(f"model_version {model_version!r} not in registry {registry} (known: {known})")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelRegistryError(f"{card_path} is not valid JSON: {exc}") from None
    for field in ("weights_file", "weights_md5", "embedding_dim"):
        if field not in card:
            raise ModelRegistryError(f"{card_path}: field {field!r} missing")
    card_preprocessing(card, str(card_path))
    weights = directory / card["weights_file"]
    if not weights.exists():
        raise ModelRegistryError(f"{model_version}: weights {weights} missing")
    actual = file_md5(weights)
    if actual != card["weights_md5"]:
        raise ModelRegistryError(f"{model_version}: md5 of {weights} is {actual}, card says {card['weights_md5']}")
    return card, weights


def load_model(model_version: str, registry: Path = DEFAULT_REGISTRY) -> LoadedModel:
    card, weights = read_card(model_version, registry)
    preprocessing = card_preprocessing(card)
    kind = card.get("kind", "garment-arcface")
    if kind == "torch-export":
        try:
            backbone = torch.export.load(weights).module()
        except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelRegistryError(f"{model_version}: {weights} is not a torch.export program: {exc}") from None
        return LoadedModel(model_version, card, _FeatureEmbedder(backbone).eval(), preprocessing, None)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if kind == "garment-arcface":
        from vecflow_model.arcface_net import GarmentModel

        network = GarmentModel(classes=len(card["categories"]), width=card.get("width", 32))
        network.load_state_dict(state)
        return LoadedModel(model_version, card, network.eval(), preprocessing, list(card["categories"]))
    # kind "torchvision", the last one card_preprocessing knows
    try:
        import torchvision
    except ImportError:
        raise ModelRegistryError(f"{model_version}: kind 'torchvision' needs torchvision installed") from None
    backbone = torchvision.models.get_model(card["architecture"], weights=None)
    backbone.load_state_dict(state)
    # drop the classifier: the pooled features are the embedding
    if hasattr(backbone, "fc"):
        backbone.fc = nn.Identity()
    elif hasattr(backbone, "classifier"):
        backbone.classifier = nn.Identity()
    else:
        raise ModelRegistryError(f"{model_version}: no fc/classifier to drop on {card['architecture']}")
    return LoadedModel(model_version, card, _FeatureEmbedder(backbone.eval()).eval(), preprocessing, None)


@dataclass
class TextTower:
    """A card's text tower: texts -> L2-normalised (N, D) vectors in the image embedding space."""

    model_version: str
    max_length: int
    embedding_dim: int
    network: nn.Module
    # each text is embedded once per loaded tower (a retag tags many chunks with the same prompts)
    embedded: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    def byte_ids(self, texts: list[str]) -> torch.Tensor:
        ids = torch.zeros((len(texts), self.max_length), dtype=torch.int64)
        for i, text in enumerate(texts):
            data = text.encode("utf-8")[: self.max_length]
            ids[i, : len(data)] = torch.tensor(list(data), dtype=torch.int64)
        return ids

    def embed(self, texts: list[str]) -> np.ndarray:
        new = [text for text in dict.fromkeys(texts) if text not in self.embedded]
        if new:
            with torch.no_grad():
                out = self.network(self.byte_ids(new))
            if tuple(out.shape) != (len(new), self.embedding_dim):
                raise ModelRegistryError(
                    f"{self.model_version}: the text tower maps {len(new)} texts to shape {tuple(out.shape)}, "
                    f"not ({len(new)}, {self.embedding_dim}) (the card's embedding_dim)"
                )
            self.embedded.update(zip(new, F.normalize(out.float(), dim=1).numpy()))
        return np.stack([self.embedded[text] for text in texts])


def load_text_tower(model_version: str, registry: Path = DEFAULT_REGISTRY) -> TextTower | None:
    """The text tower the model's card declares (md5-checked like the model), or None when it
    declares none; ModelRegistryError naming the card and the field when the declaration is bad."""
    card, _ = read_card(model_version, registry)
    spec = card.get("text_tower")
    if spec is None:
        return None
    where = f"{Path(registry) / model_version / 'card.json'}: text_tower"
    if not isinstance(spec, dict):
        raise ModelRegistryError(f'{where} is {spec!r}; {{"weights_file", "weights_md5", "max_length"}}')
    for name in ("weights_file", "weights_md5"):
        if not isinstance(spec.get(name), str) or not spec[name]:
            raise ModelRegistryError(f"{where}: field {name!r} missing or not a string")
    if not _positive_int(spec.get("max_length")):
        raise ModelRegistryError(f"{where}: field 'max_length' is {spec.get('max_length')!r}, not a positive integer")
    weights = Path(registry) / model_version / spec["weights_file"]
    if not weights.exists():
        raise ModelRegistryError(f"{model_version}: text tower weights {weights} missing")
    actual = file_md5(weights)
    if actual != spec["weights_md5"]:
        raise ModelRegistryError(f"{model_version}: md5 of {weights} is {actual}, card says {spec['weights_md5']}")
    try:
        network = torch.export.load(weights).module()
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelRegistryError(f"{model_version}: {weights} is not a torch.export program: {exc}") from None
    return TextTower(model_version, spec["max_length"], int(card["embedding_dim"]), network)


def link_model(model_dir: Path, registry: Path, model_version: str | None = None) -> Path:
    """A model of another registry in `registry` (as `model_version`, its own name by default), its
    card and weights linked, not copied: a scratch registry that shares the shipped weights and
    keeps its own head sets (written under <model>/heads/) out of the shipped one."""
    target = Path(registry) / (model_version or model_dir.name)
    target.mkdir(parents=True, exist_ok=True)
    card = json.loads((model_dir / "card.json").read_text())
    weights = target / card["weights_file"]
    if not weights.exists():
        weights.symlink_to((model_dir / card["weights_file"]).resolve())
    (target / "card.json").write_text(json.dumps({**card, "model_version": target.name}, indent=2))
    return target
