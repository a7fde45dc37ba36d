"""Decoding and content fingerprints."""

from __future__ import annotations

import functools
import hashlib
import io
import re

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

ANALYSIS_SIZE = 256


class DecodeError(ValueError):
    """The bytes are not a complete image."""


def decode(data: bytes, min_size: int = ANALYSIS_SIZE) -> Image.Image:
    """Decode (truncated JPEGs fail here, not later) to sRGB, upright. A JPEG decodes at the smallest
    DCT scale (1/2, 1/4, 1/8) that keeps both sides at least `min_size`: a 12-megapixel photo costs an
    eighth of its full decode, and nothing downstream reads more than the analysis or model size. The
    EXIF orientation is applied (a phone photo stored sideways is analysed upright) and an embedded ICC
    profile is converted to sRGB, the space the colour analyser's hues are measured in."""
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (min_size, min_size))
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_srgb(image).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # drop object reprs (memory addresses) so the same bad file gives the same reject detail
        raise DecodeError(re.sub(r"\s*<[^>]*>", "", str(exc)) or type(exc).__name__) from None


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(image: Image.Image) -> Image.Image:
    """The image in sRGB when it carries an ICC profile that littleCMS can apply to its mode; as it
    is otherwise (an unusable profile is the photo's, and its pixels are still the best we have)."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, _srgb(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


def content_md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# A horizontal step must exceed this many grey levels to count as 1. Flat areas (a product photo's
# background) then give stable 0 bits instead of bits that flip with sensor noise or brightness
# clipping, which is what made near duplicates differ by 10+ bits with a plain dHash.
DHASH_FLAT_MARGIN = 3


def dhash64(image: Image.Image) -> int:
    """64-bit difference hash (9x8 box-averaged grey, right brighter than left by more than
    DHASH_FLAT_MARGIN, per row) as a signed INT64 for the warehouse.

    Survives resizing, brightness and re-encoding, which is what near duplicates differ by."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.BOX), dtype=np.int16)
    bits = (grey[:, 1:] - grey[:, :-1] > DHASH_FLAT_MARGIN).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value - (1 << 64) if value >= (1 << 63) else value


EDGE_GRID = 24
EDGE_SIGNATURE_DIM = 128
EDGE_PROJECTION_SEED = 20260101


@functools.cache
def _edge_projection() -> np.ndarray:
    # Fixed Gaussian projection: cosines between signatures approximate those of the full gradients.
    inputs = 2 * EDGE_GRID * (EDGE_GRID - 1) * 3
    return np.random.default_rng(EDGE_PROJECTION_SEED).standard_normal((inputs, EDGE_SIGNATURE_DIM)).astype(np.float32)


def edge_signature(image: Image.Image) -> np.ndarray:
    """128-d unit vector of the image's colour gradients on a 24x24 grid (log intensity, so a
    brightness change scales nothing): two pictures of one product have cosine ~0.97-1.0, two
    different products of the same shape and colour stay below ~0.95. It confirms dHash candidates,
    which at 64 bits cannot tell similar garments apart."""
    pixels = np.log1p(np.asarray(image.convert("RGB").resize((EDGE_GRID, EDGE_GRID), Image.BOX), dtype=np.float32))
    gradients = np.concatenate([np.diff(pixels, axis=0).ravel(), np.diff(pixels, axis=1).ravel()])
    gradients -= gradients.mean()
    projected = gradients @ _edge_projection()
    norm = float(np.linalg.norm(projected))
    return projected / norm if norm > 0 else projected


def analysis_pixels(image: Image.Image) -> np.ndarray:
    """(256, 256, 3) float32 RGB: every tagger works at one size so pattern frequencies are per image."""
    return np.asarray(image.resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BILINEAR), dtype=np.float32)
