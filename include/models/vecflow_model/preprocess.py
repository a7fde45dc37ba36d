"""Model input: the garment's silhouette and shading, with colour and pattern taken out.

A product photo becomes what Fashion-MNIST looks like: the distance of each pixel from the
background colour (0 = background), area-downsampled to 28x28 (which averages fine patterns out)
and scaled to [0, 1]. The model trains on Fashion-MNIST with the same scaling, plus augmentation
that flattens shading the way a saturated tint does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

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


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def network_input(image: Image.Image, distance: np.ndarray, input_kind: str, input_size: int) -> np.ndarray:
    """The tensor a model takes, without the batch axis: (1, 28, 28) silhouette for the shipped
    model, (3, S, S) ImageNet-normalised RGB for a backbone brought by a deployment."""
    if input_kind == "silhouette28":
        return model_input(distance)[None]
    rgb = np.asarray(image.convert("RGB").resize((input_size, input_size), Image.BILINEAR), dtype=np.float32) / 255.0
    return ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
