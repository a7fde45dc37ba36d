"""Reads Fashion-MNIST IDX files as installed by Debian's `dataset-fashion-mnist`."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(split: str = "all", directory: Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) for 'train', 'test' or 'all' (train then test)."""
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    missing = [p for p in prefixes if not (directory / f"{p}-images-idx3-ubyte.gz").exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {directory}: install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set FASHION_MNIST_DIR"
        )
    images = [_read_idx(directory / f"{p}-images-idx3-ubyte.gz") for p in prefixes]
    labels = [_read_idx(directory / f"{p}-labels-idx1-ubyte.gz") for p in prefixes]
    return np.concatenate(images), np.concatenate(labels)
