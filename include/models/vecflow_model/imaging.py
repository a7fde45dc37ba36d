"""Decoding and content fingerprints."""
from __future__ import annotations

import hashlib
import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

ANALYSIS_SIZE = 256


class DecodeError(ValueError):
    """The bytes are not a complete image."""


def decode(data: bytes) -> Image.Image:
    """Full decode (truncated JPEGs fail here, not later) to RGB."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # drop object reprs (memory addresses) so the same bad file gives the same reject detail
        raise DecodeError(re.sub(r"\s*<[^>]*>", "", str(exc)) or type(exc).__name__) from None


def content_md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def dhash64(image: Image.Image) -> int:
    """64-bit difference hash (9x8 grey, left < right per row) as a signed INT64 for the warehouse.

    Survives resizing, brightness and re-encoding, which is what near duplicates differ by."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.LANCZOS), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value - (1 << 64) if value >= (1 << 63) else value


def analysis_pixels(image: Image.Image) -> np.ndarray:
    """(256, 256, 3) float32 RGB: every tagger works at one size so pattern frequencies are per image."""
    return np.asarray(image.resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BILINEAR), dtype=np.float32)
