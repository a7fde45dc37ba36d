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
  ImageNet-normalised RGB to (N, D) features; they are L2-normalised. Needs nothing but torch at
  run time.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_REGISTRY = Path(__file__).resolve().parents[1] / "registry"


class ModelRegistryError(ValueError):
    """A model is missing, its card is malformed, or its weights do not match their md5."""


@dataclass
class LoadedModel:
    model_version: str
    card: dict
    network: nn.Module
    input_kind: str  # "silhouette28" (GarmentModel) or "rgb" (torchvision)
    input_size: int
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
    weights = directory / card["weights_file"]
    if not weights.exists():
        raise ModelRegistryError(f"{model_version}: weights {weights} missing")
    actual = file_md5(weights)
    if actual != card["weights_md5"]:
        raise ModelRegistryError(f"{model_version}: md5 of {weights} is {actual}, card says {card['weights_md5']}")
    return card, weights


def load_model(model_version: str, registry: Path = DEFAULT_REGISTRY) -> LoadedModel:
    card, weights = read_card(model_version, registry)
    kind = card.get("kind", "garment-arcface")
    if kind == "torch-export":
        try:
            backbone = torch.export.load(weights).module()
        except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelRegistryError(f"{model_version}: {weights} is not a torch.export program: {exc}") from None
        return LoadedModel(
            model_version, card, _FeatureEmbedder(backbone).eval(), "rgb", int(card.get("input_size", 224)), None
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if kind == "garment-arcface":
        from vecflow_model.arcface_net import GarmentModel

        network = GarmentModel(classes=len(card["categories"]), width=card.get("width", 32))
        network.load_state_dict(state)
        return LoadedModel(model_version, card, network.eval(), "silhouette28", 28, list(card["categories"]))
    if kind == "torchvision":
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
        return LoadedModel(
            model_version, card, _FeatureEmbedder(backbone.eval()).eval(), "rgb", int(card.get("input_size", 224)), None
        )
    raise ModelRegistryError(f"{model_version}: unknown model kind {kind!r}")
