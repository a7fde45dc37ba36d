"""Colour and pattern tags computed from pixels (the embedding is meant to ignore them).

Colour: hue and saturation of the garment (pixels that differ from the background), matched to
the taxonomy palette. Pattern: spectral peaks of the garment's log-luminance at the frequencies of
each pattern's period; no peak above the threshold means solid.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from vecflow_model.imaging import ANALYSIS_SIZE
from vecflow_model.preprocess import background_distance

MASK_THRESHOLD = 40.0
MIN_GARMENT_PIXELS = 300
ACHROMATIC_SATURATION = 0.28
PEAK_RATIO_THRESHOLD = 50.0  # solids stay below ~26 (p90), patterns above ~70 (p10)


@dataclass(frozen=True)
class Tag:
    value: str
    confidence: float


def _pattern_frequencies(pattern: str, period_px: int) -> list[tuple[float, float]]:
    f = ANALYSIS_SIZE / period_px
    if pattern == "striped":  # horizontal bands vary along y
        return [(f, 0.0)]
    if pattern == "checked":  # a checkerboard's fundamentals lie on the diagonals
        return [(f, f), (f, -f)]
    if pattern == "dotted":
        return [(f, 0.0), (0.0, f)]
    raise ValueError(f"no detector for pattern {pattern!r}")


def _power_spectrum(signal: np.ndarray) -> np.ndarray:
    """|FFT|^2 of a real square image, from the half spectrum (rfft2, ~3x cheaper than fft2):
    the missing half mirrors through the origin, P(y, x) = P(-y, -x)."""
    n = signal.shape[0]
    half = np.abs(np.fft.rfft2(signal)) ** 2
    rows = (-np.arange(n)) % n
    mirrored = half[rows][:, 1 : n - half.shape[1] + 1][:, ::-1]
    return np.concatenate([half, mirrored], axis=1)


class PixelTagger:
    def __init__(self, taxonomy: dict):
        dims = taxonomy["dimensions"]
        self.hues = {}
        self.achromatic = []
        for tag, info in dims["color"]["tags"].items():
            h, s, _ = colorsys.rgb_to_hsv(*(c / 255.0 for c in info["rgb"]))
            if s < ACHROMATIC_SATURATION:
                self.achromatic.append(tag)
            else:
                self.hues[tag] = h
        if len(self.achromatic) > 1:
            raise ValueError(f"palette has several achromatic colours {self.achromatic}; only one is detectable")
        self.patterns = {
            tag: _pattern_frequencies(tag, info["period_px"])
            for tag, info in dims["pattern"]["tags"].items()
            if "period_px" in info
        }
        self.plain_pattern = next(tag for tag, info in dims["pattern"]["tags"].items() if "period_px" not in info)

    def color(self, pixels: np.ndarray, distance: np.ndarray, mask: np.ndarray) -> Tag:
        # every other row and column is plenty for colour statistics (4x less work)
        pixels, distance, mask = pixels[::2, ::2], distance[::2, ::2], mask[::2, ::2]
        # the garment's core: edge pixels are blended with the background and look desaturated
        core = mask & (distance >= np.median(distance[mask]))
        garment = pixels[core] / 255.0
        r, g, b = garment[:, 0], garment[:, 1], garment[:, 2]
        mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
        saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
        median_sat = float(np.median(saturation))
        if median_sat < ACHROMATIC_SATURATION and self.achromatic:
            return Tag(self.achromatic[0], round(1.0 - median_sat / ACHROMATIC_SATURATION, 3))
        chroma = garment[saturation >= ACHROMATIC_SATURATION]
        r, g, b = chroma[:, 0], chroma[:, 1], chroma[:, 2]
        # hue as an angle, averaged on the circle
        angle = np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)
        mean_angle = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())
        hue = (mean_angle / (2 * np.pi)) % 1.0
        distances = {tag: min(abs(hue - h), 1.0 - abs(hue - h)) for tag, h in self.hues.items()}
        best = min(distances, key=distances.get)
        ordered = sorted(distances.values())
        margin = (ordered[1] - ordered[0]) / max(ordered[1], 1e-6) if len(ordered) > 1 else 1.0
        return Tag(best, round(float(margin), 3))

    def pattern(self, pixels: np.ndarray, mask: np.ndarray) -> Tag:
        log_lum = np.log1p(pixels.mean(axis=2))
        signal = np.where(mask, log_lum - log_lum[mask].mean(), 0.0)
        power = _power_spectrum(signal.astype(np.float32))
        ratios = {tag: np.mean([self._peak_ratio(power, f) for f in freqs]) for tag, freqs in self.patterns.items()}
        best = max(ratios, key=ratios.get)
        if ratios[best] < PEAK_RATIO_THRESHOLD:
            return Tag(self.plain_pattern, round(float(1.0 - ratios[best] / PEAK_RATIO_THRESHOLD), 3))
        return Tag(best, round(float(min(1.0, ratios[best] / (4 * PEAK_RATIO_THRESHOLD))), 3))

    @staticmethod
    def _peak_ratio(power: np.ndarray, freq: tuple[float, float]) -> float:
        """Peak power near a frequency over the median power of the ring around it."""
        n = power.shape[0]
        fy, fx = int(round(freq[0])), int(round(freq[1]))
        ys = np.arange(fy - 6, fy + 7) % n
        xs = np.arange(fx - 6, fx + 7) % n
        window = power[np.ix_(ys, xs)]
        peak = window[5:8, 5:8].max()
        ring = np.concatenate(
            [window[:3].ravel(), window[-3:].ravel(), window[3:-3, :3].ravel(), window[3:-3, -3:].ravel()]
        )
        return float(peak / max(np.median(ring), 1e-9))

    def tag(self, pixels: np.ndarray, distance: np.ndarray | None = None) -> dict[str, Tag | None]:
        """Tags of a (256, 256, 3) image; `distance` is its background_distance if already computed."""
        distance = background_distance(pixels) if distance is None else distance
        mask = distance > MASK_THRESHOLD
        if mask.sum() < MIN_GARMENT_PIXELS:
            return {"color": None, "pattern": None}
        return {"color": self.color(pixels, distance, mask), "pattern": self.pattern(pixels, mask)}
