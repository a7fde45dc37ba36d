"""Model input: the garment's silhouette and shading, with colour and pattern taken out.

A product photo becomes what Fashion-MNIST looks like: the distance of each pixel from the
background colour (0 = background), area-downsampled to 28x28 (which averages fine patterns out)
and scaled to [0, 1]. The model trains on Fashion-MNIST with the same scaling, plus augmentation
that flattens shading the way a saturated tint does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from vecflow_model.imaging import ANALYSIS_SIZE

MODEL_INPUT_SIZE = 28


def background_distance(pixels: np.ndarray) -> np.ndarray:
    """Per-pixel max-channel distance from the median border colour, float32 (H, W)."""
    border = np.concatenate(
        [
            pixels[:4].reshape(-1, 3),
            pixels[-4:].reshape(-1, 3),
            pixels[:, :4].reshape(-1, 3),
            pixels[:, -4:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    # channel by channel: a max over a length-3 last axis is a slow strided reduction
    distance = np.abs(pixels[..., 0] - background[0])
    for channel in (1, 2):
        np.maximum(distance, np.abs(pixels[..., channel] - background[channel]), out=distance)
    return distance


def model_input(distance: np.ndarray) -> np.ndarray:
    """(28, 28) float32 in [0, 1] from a background-distance map of any size."""
    small = Image.fromarray(distance.astype(np.float32), mode="F").resize(
        (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE), Image.BOX
    )
    array = np.asarray(small, dtype=np.float32)
    top = float(np.percentile(array, 99.5))
    return np.clip(array / top, 0.0, 1.0) if top > 0 else array


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


def network_input(image: Image.Image, distance: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The tensor a model takes, without the batch axis: (1, 28, 28) silhouette for the shipped
    model, (3, S, S) RGB for a backbone brought by a deployment."""
    if preprocessing.kind == "silhouette28":
        return model_input(distance)[None]
    rgb = image.convert("RGB")
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
