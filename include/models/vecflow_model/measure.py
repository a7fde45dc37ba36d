"""Everything the embedding job measures of a batch of photos, on the batch's device: content
fingerprints (dHash, edge signature), the pixel analyses (colour, pattern) and the model's input.

The photos arrive as (N, 3, 256, 256) uint8 analysis planes (imaging.analysis_planes, made in the
DataLoader workers next to decoding). On a CPU the batch is measured in chunks of MEASURE_CHUNK
photos: a chunk's float planes then stay in the processor's caches across the measurements, which
on 2 cores is ~1.5x faster than whole batches of 256 (each op a pass over 200 MB). On a GPU the
whole batch is one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vecflow_model.imaging import EDGE_SIGNATURE_DIM, channel_planes, dhash64, edge_signature
from vecflow_model.pixel_tags import analyse
from vecflow_model.preprocess import Preprocessing, background_distance, silhouette_input

MEASURE_CHUNK = 8


@dataclass
class Measured:
    """Per photo of a batch, in order: its dHash (signed INT64), edge signature (128 float32),
    analyses (None: no garment stands out of the background) and model input."""

    dhash: list[int]
    edge_signature: np.ndarray
    analyses: list[dict | None]
    inputs: torch.Tensor


def measure(planes: torch.Tensor, preprocessing: Preprocessing, rgb: torch.Tensor | None = None) -> Measured:
    """Measure (N, 3, 256, 256) uint8 analysis planes on their device. The model input is the
    silhouette for the shipped model, else `rgb`: (N, 3, S, S) float32 made from the decoded
    photos (preprocess.rgb_input), which are not the 256-pixel planes."""
    if preprocessing.kind != "silhouette28" and rgb is None:
        raise ValueError(f"a {preprocessing.kind!r} model takes its input from the decoded photos: pass rgb")
    step = len(planes) if planes.device.type == "cuda" else MEASURE_CHUNK
    dhash, edges, analyses, inputs = [], [], [], []
    for start in range(0, len(planes), step):
        chunk = channel_planes(planes[start : start + step])
        dhash += dhash64(chunk).tolist()
        edges.append(edge_signature(chunk))
        distance = background_distance(chunk)
        analyses += analyse(chunk, distance)
        if rgb is None:
            inputs.append(silhouette_input(distance))
    return Measured(
        dhash,
        np.concatenate(edges) if edges else np.zeros((0, EDGE_SIGNATURE_DIM), np.float32),
        analyses,
        torch.cat(inputs) if rgb is None else rgb.to(planes.device),
    )
