"""Decoding, content fingerprints, and the box resampling the batched measurements share.

Everything after decode works on batches: a (N, 256, 256, 3) uint8 tensor of analysis pixels on
the job's device (the GPU of a pod, next to the model), so no measurement costs a Python loop
over pixels or a call per image.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

ANALYSIS_SIZE = 256
EXIF_ORIENTATION = 0x0112


class DecodeError(ValueError):
    """The bytes are not a complete image."""


def decode(data: bytes, min_size: int = ANALYSIS_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 sRGB pixels, upright; truncated files fail here, not later. A JPEG decodes at the
    smallest DCT scale (libjpeg-turbo's n/8; Pillow's 1/2, 1/4, 1/8 for the photos it decodes) that
    keeps both sides at least `min_size`: a 12-megapixel photo costs a fraction of its full decode,
    and nothing downstream reads more than the analysis or model size. The EXIF orientation is applied (a phone photo stored sideways is analysed upright) and an
    embedded ICC profile is converted to sRGB, the space the colour analyser's hues are measured in.
    A plain RGB or grey JPEG (most catalog photos) is decoded by libjpeg-turbo straight into an array,
    without Pillow's image object and copy: a third of the time."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        if image.format == "JPEG" and image.mode in ("RGB", "L") and not _needs_transform(image):
            return simplejpeg.decode_jpeg(data, "RGB", min_height=min_size, min_width=min_size)
        image.draft("RGB", (min_size, min_size))
        image.load()
        image = _to_srgb(ImageOps.exif_transpose(image))
        return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # drop object reprs (memory addresses) so the same bad file gives the same reject detail
        raise DecodeError(re.sub(r"\s*<[^>]*>", "", str(exc)) or type(exc).__name__) from None


def _needs_transform(image: Image.Image) -> bool:
    """An ICC profile to convert or an EXIF orientation to undo (parsing EXIF only when there is some)."""
    if image.info.get("icc_profile"):
        return True
    return bool(image.info.get("exif")) and image.getexif().get(EXIF_ORIENTATION, 1) != 1


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


def analysis_planes(image: np.ndarray) -> np.ndarray:
    """(3, 256, 256) uint8 R, G and B planes of an (H, W, 3) photo: every measurement works at one
    size, so pattern frequencies are per image, and on whole planes (a channel of interleaved
    pixels is a strided view, several times slower to compute with)."""
    if image.shape[:2] != (ANALYSIS_SIZE, ANALYSIS_SIZE):
        image = np.asarray(Image.fromarray(image).resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BILINEAR))
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def channel_planes(planes: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float32 of a batch of (N, 3, H, W) uint8 analysis planes: what every
    measurement takes."""
    return planes.float()


@functools.lru_cache(maxsize=32)
def _box_matrix(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(in_size, out_size) 0/1 float32 matrix of Pillow's BOX filter (its coefficients are 1 inside
    an output pixel's span and 0 outside, decided here as Pillow decides them) and the span lengths."""
    scale = in_size / out_size
    support = 0.5 * max(scale, 1.0)
    matrix = torch.zeros(in_size, out_size)
    for out in range(out_size):
        centre = (out + 0.5) * scale
        for i in range(max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)):
            matrix[i, out] = float(-0.5 < (i - centre + 0.5) / max(scale, 1.0) <= 0.5)
    return matrix.to(device), matrix.sum(dim=0).to(device)


def box_resize_uint8(planes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's BOX resize of 8-bit images, bit for bit: (..., H, W) float32 holding integers in
    0..255 -> (..., height, width) likewise. Pillow resamples rows, then columns, each pass summing
    a span (exactly: integers below 2^24 in float32) weighted in 22-bit fixed point, rounded to 8 bits."""
    precision = 22

    def one_pass(x: torch.Tensor, size: int) -> torch.Tensor:
        """Along the last axis, returned transposed: (..., rows, W) -> (..., size, rows)."""
        matrix, counts = _box_matrix(x.shape[-1], size, x.device)
        weights = (0.5 + (1.0 / counts.double()) * (1 << precision)).int()[:, None]
        # the span sums as matrix @ x^T: a BLAS product with 'size' rows is several times faster on CPU
        # than x @ matrix with 'size' columns. sum <= 255 * span and weight ~ 2^22 / span: below 2^31
        sums = (matrix.t() @ x.transpose(-1, -2)).int()
        return ((sums * weights + (1 << (precision - 1))) >> precision).clamp_(0, 255).float()

    return one_pass(one_pass(planes, width), height)


def box_resize_float(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's BOX resize of float32 ("F") images, (..., H, W) -> (..., height, width), to within a
    float32 rounding of Pillow's double-precision sums (exact for half-integer inputs)."""
    rows, row_counts = _box_matrix(values.shape[-2], height, values.device)
    columns, column_counts = _box_matrix(values.shape[-1], width, values.device)
    # columns first: (height x H) @ (H x W) is the fast shape of the BLAS product on CPU
    return ((rows.t() @ values) @ columns) / (row_counts[:, None] * column_counts)


_LUMA = (19595 / 65536, 38470 / 65536, 7471 / 65536)


def luminance(planes: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L conversion, (R * 19595 + G * 38470 + B * 7471 + 2^15) >> 16, as one product
    with the weights over 2^16: exact in float32 (every term and partial sum is a multiple of 2^-16
    below 2^8). (N, H, W) float32 integers."""
    return (
        (planes[:, 0] * _LUMA[0])
        .add_(planes[:, 1], alpha=_LUMA[1])
        .add_(planes[:, 2], alpha=_LUMA[2])
        .add_(0.5)
        .floor_()
    )


def histogram_quantile(
    keys: torch.Tensor, mask: torch.Tensor | None, q: float | torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """numpy's linear quantile q (one for all rows or one per row) of each row of (R, M) quantities
    taking few distinct values, counted in a histogram instead of sorted: `keys` (int64) are the
    bins, `values` (B,) the value of each bin, ascending within each quantity's range of bins (rows
    of several quantities share one call with their bins offset); only where `mask`. (R,) float32,
    NaN for a row with nothing in it."""
    rows, bins = len(keys), len(values)
    flat = keys + torch.arange(0, rows * bins, bins, device=keys.device)[:, None]
    if mask is not None:
        flat.masked_fill_(~mask, rows * bins)  # one bin past the rows' for what is left out
    counts = torch.bincount(flat.flatten(), minlength=rows * bins + 1)[: rows * bins]
    cumulative = counts.reshape(rows, bins).cumsum(dim=1)
    total = cumulative[:, -1:]
    q = torch.as_tensor(q, dtype=torch.float64, device=keys.device).reshape(-1, 1)
    position = q * (total - 1).clamp_min(0)
    lo = position.floor().long()
    ranks = torch.cat([lo, position.ceil().long()], dim=1)
    ends = values.index_select(0, torch.searchsorted(cumulative, ranks, right=True).clamp_max(bins - 1).flatten())
    ends = ends.reshape(rows, 2)
    value = ends[:, 0] + (ends[:, 1] - ends[:, 0]) * (position - lo)[:, 0]
    return value.float().masked_fill_(total[:, 0] == 0, torch.nan)


# A horizontal step must exceed this many grey levels to count as 1. Flat areas (a product photo's
# background) then give stable 0 bits instead of bits that flip with sensor noise or brightness
# clipping, which is what made near duplicates differ by 10+ bits with a plain dHash.
DHASH_FLAT_MARGIN = 3
_BIT_VALUES = torch.tensor([1 << (63 - i) for i in range(1, 64)], dtype=torch.long)


def dhash64(planes: torch.Tensor) -> np.ndarray:
    """64-bit difference hashes of images given as channel_planes: 9x8 box-averaged grey, right brighter
    than left by more than DHASH_FLAT_MARGIN, per row; signed INT64 for the warehouse.

    Survives resizing, brightness and re-encoding, which is what near duplicates differ by."""
    grey = box_resize_uint8(luminance(planes), 8, 9)
    bits = (grey[:, :, 1:] - grey[:, :, :-1] > DHASH_FLAT_MARGIN).reshape(len(grey), 64).long().cpu()
    # the first step's bit is the sign bit of the signed 64-bit value
    return ((bits[:, 1:] * _BIT_VALUES).sum(1) + bits[:, 0] * torch.iinfo(torch.long).min).numpy()


EDGE_GRID = 24
EDGE_SIGNATURE_DIM = 128
EDGE_PROJECTION_SEED = 20260101


@functools.cache
def _edge_projection() -> np.ndarray:
    # Fixed Gaussian projection: cosines between signatures approximate those of the full gradients.
    inputs = 2 * EDGE_GRID * (EDGE_GRID - 1) * 3
    return np.random.default_rng(EDGE_PROJECTION_SEED).standard_normal((inputs, EDGE_SIGNATURE_DIM)).astype(np.float32)


def edge_signature(planes: torch.Tensor) -> np.ndarray:
    """(N, 128) float32 unit vectors of the colour gradients of images given as channel_planes on a 24x24 grid (log intensity,
    so a brightness change scales nothing): two pictures of one product have cosine ~0.97-1.0, two
    different products of the same shape and colour stay below ~0.95. It confirms near-duplicate
    candidates, which a 64-bit dHash cannot tell apart among similar garments."""
    grid = torch.log1p(box_resize_uint8(planes, EDGE_GRID, EDGE_GRID)).permute(0, 2, 3, 1)  # (N, 24, 24, RGB)
    n = len(grid)
    gradients = torch.cat([grid.diff(dim=1).reshape(n, -1), grid.diff(dim=2).reshape(n, -1)], dim=1)
    gradients -= gradients.mean(dim=1, keepdim=True)
    projected = gradients @ torch.from_numpy(_edge_projection()).to(gradients.device)
    norm = projected.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, projected / norm.clamp_min(1e-30), projected).cpu().numpy()
