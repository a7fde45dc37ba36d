"""Embedding models, loaded by model_version.

`randconv-v1` is a fixed, seeded random convolutional encoder: deterministic on every machine, with
no weights to ship. It groups near-identical images (the index and dedup stages need no more), but
it is not trained for same-style retrieval; the trained ArcFace model replaces it as default.
"""
from __future__ import annotations

import torch
from torch import nn

EMBEDDING_DIM = 256
INPUT_SIZE = 64


class RandomConvEncoder(nn.Module):
    def __init__(self, seed: int = 20260101, dim: int = EMBEDDING_DIM):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.project = nn.Linear(64 * 16, dim)
        for param in self.parameters():
            with torch.no_grad():
                param.copy_(torch.randn(param.shape, generator=generator) / max(1, param[0].numel()) ** 0.5)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.project(self.features(images)), dim=1)


MODELS = {"randconv-v1": RandomConvEncoder}


def load_model(model_version: str) -> nn.Module:
    try:
        return MODELS[model_version]()
    except KeyError:
        raise ValueError(f"unknown model_version {model_version!r}; known: {sorted(MODELS)}") from None
