"""Model input: the garment's silhouette and shading, with colour and pattern taken out.

A product photo becomes what Fashion-MNIST looks like: the distance of each pixel from the
background colour (0 = background), area-downsampled to 28x28 (which averages fine patterns out)
and scaled to [0, 1]. The model trains on Fashion-MNIST with the same scaling, plus augmentation
that flattens shading the way a saturated tint does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vecflow_model.imaging import ANALYSIS_SIZE, box_resize_float, histogram_quantile

MODEL_INPUT_SIZE = 28
BORDER_PX = 4


def background_distance(planes: torch.Tensor) -> torch.Tensor:
    """(N, H, W) float32: each pixel's max-channel distance from the median colour of its image's
    4-pixel border, for images given as imaging.channel_planes."""
    b = BORDER_PX
    border = torch.cat(
        [p.flatten(2) for p in (planes[:, :, :b], planes[:, :, -b:], planes[:, :, :, :b], planes[:, :, :, -b:])], dim=2
    )
    levels = torch.arange(256, dtype=torch.float64, device=planes.device)
    background = histogram_quantile(border.flatten(0, 1).long(), None, 0.5, levels).reshape(-1, 3, 1, 1)
    distance = (planes[:, 0] - background[:, 0]).abs_()
    for channel in (1, 2):
        torch.maximum(distance, (planes[:, channel] - background[:, channel]).abs_(), out=distance)
    return distance


def silhouette_input(distance: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) float32 in [0, 1] from (N, H, W) background distances: area-downsampled as
    Pillow's BOX filter does, scaled by each image's 99.5th percentile."""
    small = box_resize_float(distance, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)
    top = torch.quantile(small.reshape(len(small), -1), 0.995, dim=1)[:, None, None]
    scaled = torch.where(top > 0, (small / top.clamp_min(1e-30)).clamp(0.0, 1.0), small)
    return scaled[:, None]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("squash", "center_crop")


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a model's input, as its card declares it: the shipped model's 28x28
    silhouette ("silhouette28"), or "rgb" of `size` x `size` pixels, resized by `resize` ("squash":
    the whole photo to a square; "center_crop": its centre square, the shorter side kept whole, as
    CLIP's and most torchvision evaluations do) and normalised per channel by `mean` and `std` (both
    None: RGB left in [0, 1], for a model that normalises inside itself)."""

    kind: str
    size: int
    resize: str = "squash"
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD

    @property
    def decode_size(self) -> int:
        """The smallest side a photo needs decoded at: the analysers' size or the model's input."""
        return max(ANALYSIS_SIZE, self.size)


SILHOUETTE = Preprocessing("silhouette28", MODEL_INPUT_SIZE, mean=None, std=None)


def rgb_input(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray | None:
    """(3, S, S) float32 for a backbone taking RGB (preprocessing.kind "rgb"), from the decoded (H, W, 3)
    uint8 photo; None for the silhouette model, whose input is measured from the analysis planes."""
    if preprocessing.kind != "rgb":
        return None
    rgb = Image.fromarray(image)
    size = preprocessing.size
    box = None
    if preprocessing.resize == "center_crop":
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        box = (left, top, left + side, top + side)  # cropped and resized in one resampling
    array = np.asarray(rgb.resize((size, size), Image.BILINEAR, box=box), dtype=np.float32) / 255.0
    if preprocessing.mean is not None:
        array = (array - np.asarray(preprocessing.mean, np.float32)) / np.asarray(preprocessing.std, np.float32)
    return array.transpose(2, 0, 1)
