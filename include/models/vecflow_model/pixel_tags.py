"""Colour and pattern measured from pixels (the embedding is meant to ignore them).

Colour: hue, saturation, lightness and warmth of the garment (pixels that differ from the
background). Pattern: spectral peaks of the garment's log-luminance at the frequencies of each
layout and period. The job writes these measurements; vecflow.pixel_tags turns them into a
taxonomy's tags (palette and patterns), so they do not depend on the taxonomy.
"""

from __future__ import annotations

import numpy as np

from vecflow_model.imaging import ANALYSIS_SIZE
from vecflow_model.preprocess import background_distance

MASK_THRESHOLD = 40.0
MIN_GARMENT_PIXELS = 300
ACHROMATIC_SATURATION = 0.28


# pattern periods measured (px at ANALYSIS_SIZE); a taxonomy's pattern names one (vecflow.taxonomy)
PATTERN_PERIODS = (4, 6, 8, 10, 12, 14, 16, 20, 24, 32)
PATTERN_LAYOUTS = ("stripes", "checks", "dots")


def _layout_frequencies(layout: str, period_px: int) -> list[tuple[float, float]]:
    f = ANALYSIS_SIZE / period_px
    if layout == "stripes":  # horizontal bands vary along y
        return [(f, 0.0)]
    if layout == "checks":  # a checkerboard's fundamentals lie on the diagonals
        return [(f, f), (f, -f)]
    return [(f, 0.0), (0.0, f)]  # dots: a grid along both axes


# every (layout, period) measured, in the order of its frequencies below: two per key (a stripe's
# one twice), so one gather reads every window of an image's spectrum
PATTERN_KEYS = [f"{layout}_{period}" for layout in PATTERN_LAYOUTS for period in PATTERN_PERIODS]


def _two_frequencies(layout: str, period_px: int) -> list[tuple[float, float]]:
    frequencies = _layout_frequencies(layout, period_px)
    return frequencies * (2 // len(frequencies))


_FREQUENCIES = np.array(
    [_two_frequencies(layout, period) for layout in PATTERN_LAYOUTS for period in PATTERN_PERIODS]
).reshape(-1, 2)
_OFFSETS = np.arange(-6, 7)
_RING = np.ones((13, 13), dtype=bool)
_RING[3:-3, 3:-3] = False  # the 3-pixel border of the 13x13 window around a frequency


def _peak_ratios(power: np.ndarray) -> np.ndarray:
    """Per frequency of _FREQUENCIES: the peak power near it over the median power of the ring
    around it (a pattern's period shows as a peak standing out of its surroundings)."""
    n = power.shape[0]
    centres = np.rint(_FREQUENCIES).astype(int)
    ys = (centres[:, 0, None] + _OFFSETS) % n
    xs = (centres[:, 1, None] + _OFFSETS) % n
    windows = power[ys[:, :, None], xs[:, None, :]]  # (frequencies, 13, 13)
    peak = windows[:, 5:8, 5:8].max(axis=(1, 2))
    return peak / np.maximum(np.median(windows[:, _RING], axis=1), 1e-9)


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask less `steps` pixels along its border (4-neighbour erosion); the mask itself if
    nothing would be left."""
    inner = mask.copy()
    for _ in range(steps):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        if not shrunk.any():
            return inner
        inner = shrunk
    return inner


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    """The max over the last (R, G, B) axis, channel by channel: a reduction over a length-3 last
    axis is a slow strided loop in numpy."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _power_spectrum(signal: np.ndarray) -> np.ndarray:
    """|FFT|^2 of a real square image, from the half spectrum (rfft2, ~3x cheaper than fft2):
    the missing half mirrors through the origin, P(y, x) = P(-y, -x)."""
    n = signal.shape[0]
    half = np.abs(np.fft.rfft2(signal)) ** 2
    rows = (-np.arange(n)) % n
    mirrored = half[rows][:, 1 : n - half.shape[1] + 1][:, ::-1]
    return np.concatenate([half, mirrored], axis=1)


class PixelAnalyser:
    """What the embedding job measures of a garment's pixels, whatever the taxonomy: its colour
    (hue, saturation, value, warmth) and, per pattern layout and period, the spectral peak ratio.
    vecflow.pixel_tags maps them to a taxonomy's palette and patterns, so a new palette or pattern
    retags stored images without reading them again."""

    def colour(self, pixels: np.ndarray, distance: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        # every other row and column is plenty for colour statistics (4x less work)
        pixels, distance, mask = pixels[::2, ::2], distance[::2, ::2], mask[::2, ::2]
        # the garment's core: edge pixels are blended with the background and look desaturated
        core = mask & (distance >= np.median(distance[mask]))
        garment = pixels[core] / 255.0
        r, g, b = garment[:, 0], garment[:, 1], garment[:, 2]
        mx, mn = _channel_max(garment), np.minimum(np.minimum(r, g), b)
        saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
        chromatic = saturation >= ACHROMATIC_SATURATION
        hue = float("nan")
        if chromatic.any():
            r, g, b = r[chromatic], g[chromatic], b[chromatic]
            # hue as an angle, averaged on the circle
            angle = np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)
            hue = float((np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) / (2 * np.pi)) % 1.0)
        return {
            "hue": hue,
            "saturation": float(np.median(saturation)),
            # the lit, unmarked fabric away from its edges (blended with the background): shading
            # and pattern marks darken the rest
            "value": float(np.percentile(_channel_max(pixels[_eroded(mask, 3)]), 90)) / 255.0,
            "warmth": float(np.median(garment[:, 0] - garment[:, 2])),
        }

    def pattern(self, pixels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        # channel by channel and log(1 + x), not a sum over the last axis and log1p: both of those
        # are unvectorised in numpy and were 90% of this function
        log_lum = np.log((pixels[..., 0] + pixels[..., 1] + pixels[..., 2]) / np.float32(3.0) + np.float32(1.0))
        signal = np.where(mask, log_lum - log_lum[mask].mean(), 0.0)
        power = _power_spectrum(signal.astype(np.float32))
        ratios = _peak_ratios(power).reshape(len(PATTERN_KEYS), -1).mean(axis=1)
        return {key: round(float(r), 3) for key, r in zip(PATTERN_KEYS, ratios)}

    def analyse(self, pixels: np.ndarray, distance: np.ndarray | None = None) -> dict[str, dict] | None:
        """Analyses of a (256, 256, 3) image by analyser name, or None when no garment stands out
        from the background; `distance` is its background_distance if already computed."""
        distance = background_distance(pixels) if distance is None else distance
        mask = distance > MASK_THRESHOLD
        if mask.sum() < MIN_GARMENT_PIXELS:
            return None
        return {"colour": self.colour(pixels, distance, mask), "pattern": self.pattern(pixels, mask)}
