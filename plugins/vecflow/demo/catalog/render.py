"""Renders a 28x28 Fashion-MNIST garment as a tinted, patterned product photo."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

BACKGROUND = 246.0
PATTERN_DARKENING = 0.55


def pattern_modulation(layout: str | None, period_px: int | None, size: int) -> np.ndarray:
    """Multiplicative (size, size) map: 1 on the base fabric, PATTERN_DARKENING on the pattern marks of
    a taxonomy pattern's `layout` (stripes, checks, dots) and period; no layout is the plain fabric."""
    if layout is None or period_px is None:
        return np.ones((size, size), dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size]
    if layout == "stripes":
        marks = (y % period_px) < period_px // 2
    elif layout == "checks":
        half = period_px // 2
        marks = ((x // half) + (y // half)) % 2 == 1
    elif layout == "dots":
        cy = (y % period_px) - period_px / 2 + 0.5
        cx = (x % period_px) - period_px / 2 + 0.5
        marks = cx * cx + cy * cy <= (period_px * 0.3) ** 2
    else:
        raise ValueError(f"no renderer for pattern layout {layout!r}")
    return np.where(marks, PATTERN_DARKENING, 1.0).astype(np.float32)


def render(
    garment28: np.ndarray, rgb: tuple[int, int, int], modulation: np.ndarray, rng: np.random.Generator
) -> Image.Image:
    size = modulation.shape[0]
    upscaled = Image.fromarray(garment28).resize((size, size), Image.LANCZOS)
    gray = np.asarray(upscaled, dtype=np.float32) / 255.0
    # Shading is blurred: upscaling a 28 px texture leaves spectral replicas at pattern frequencies.
    smooth = np.asarray(upscaled.filter(ImageFilter.GaussianBlur(size / 64)), dtype=np.float32) / 255.0
    coverage = np.clip(gray * 2.0, 0.0, 1.0)[..., None]
    shade = (0.65 + 0.35 * smooth) * modulation
    garment = np.asarray(rgb, dtype=np.float32)[None, None, :] * shade[..., None]
    background = BACKGROUND + rng.normal(0.0, 1.5, size=(size, size, 1))
    pixels = coverage * garment + (1.0 - coverage) * background
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def render_tagged(
    garment28: np.ndarray, taxonomy, color: str, pattern: str, rng: np.random.Generator, size: int = 256
) -> Image.Image:
    """`render` in a taxonomy's tags: the rgb of `color` (dimension "color") and the layout and
    period of `pattern` (dimension "pattern")."""
    info = taxonomy.tag_info("pattern", pattern)
    modulation = pattern_modulation(info.get("layout"), info.get("period_px"), size)
    return render(garment28, tuple(taxonomy.tag_info("color", color)["rgb"]), modulation, rng)


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def near_duplicate(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """A visually equal copy: resized, brightened and re-encoded at another quality."""
    size = int(rng.integers(200, 241))
    brightness = float(rng.uniform(1.05, 1.2))
    quality = int(rng.integers(60, 80))
    copy = ImageEnhance.Brightness(image.resize((size, size), Image.BICUBIC)).enhance(brightness)
    return jpeg_bytes(copy, quality), f"resize={size} brightness={brightness:.2f} quality={quality}"
