"""The shipped embedding network: a small CNN trained with an ArcFace (additive angular margin)
head on Fashion-MNIST. ArcFace makes same-category images cluster on the hypersphere, which is
what nearest-neighbour retrieval and the category vote need (seed 002, 2.3.2)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

EMBEDDING_DIM = 256


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class GarmentNet(nn.Module):
    """(N, 1, 28, 28) in [0, 1] -> (N, 256) L2-normalised embeddings."""

    def __init__(self, dim: int = EMBEDDING_DIM, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(1, w),
            nn.MaxPool2d(2),  # 14x14
            _block(w, 2 * w),
            _block(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 7x7
            _block(2 * w, 4 * w),
            _block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
        )
        self.embed = nn.Sequential(nn.Linear(4 * w, dim, bias=False), nn.BatchNorm1d(dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.features(images)), dim=1)


class ArcFaceHead(nn.Module):
    """Class centres on the hypersphere; at train time the true class's angle gets a margin m."""

    def __init__(self, classes: int, dim: int = EMBEDDING_DIM, scale: float = 30.0, margin: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings @ F.normalize(self.weight, dim=1).t()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        target = torch.cos(theta + self.margin)
        # keep the logit monotonic where theta + m would pass pi
        target = torch.where(theta < math.pi - self.margin, target, cosine - self.margin * math.sin(self.margin))
        onehot = F.one_hot(labels, cosine.shape[1]).bool()
        return self.scale * torch.where(onehot, target, cosine)


class GarmentModel(nn.Module):
    """Backbone plus class centres: forward gives (embeddings, category probabilities)."""

    def __init__(self, classes: int = 10, width: int = 32):
        super().__init__()
        self.backbone = GarmentNet(width=width)
        self.head = ArcFaceHead(classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.backbone(images)
        return embeddings, torch.softmax(self.head.scale * self.head.cosine(embeddings), dim=1)
