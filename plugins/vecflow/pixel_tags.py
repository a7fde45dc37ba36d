"""Pixel analyses (what the embedding job measured, vecflow_model.pixel_tags) -> a taxonomy's colour
and pattern tags, vectorised over many images. Only the taxonomy decides the palette and patterns,
so a new palette retags stored images without reading them again.

Colour: a garment whose median saturation is low is achromatic and matched to the palette's
achromatic colours by lightness and warmth (white, grey, beige and black are told apart); else to
the chromatic colours by hue. Pattern: the strongest spectral peak among the taxonomy's (layout,
period) pairs; no peak above PEAK_RATIO_THRESHOLD is the plain fabric.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd

from vecflow_model.pixel_tags import ACHROMATIC_SATURATION

PEAK_RATIO_THRESHOLD = 50.0  # solids stay below ~26 (p90), patterns above ~70 (p10)
# warmth (red minus blue, 0..1) counts this much more than lightness between achromatic colours
WARMTH_WEIGHT = 2.0


def colour_tags(measured: pd.DataFrame, dimension) -> pd.DataFrame:
    """(tag, confidence) per row of `measured` (hue, saturation, value, warmth) for a colour
    dimension: the nearest palette colour, confidence the margin to the second nearest."""
    palette = {tag: np.array(info["rgb"], dtype=float) / 255.0 for tag, info in dimension.tags.items()}
    hsv = {tag: colorsys.rgb_to_hsv(*rgb) for tag, rgb in palette.items()}
    achromatic = [t for t in palette if hsv[t][1] < ACHROMATIC_SATURATION]
    chromatic = [t for t in palette if t not in achromatic]
    n = len(measured)
    saturation = measured["saturation"].to_numpy(float)
    hue = measured["hue"].to_numpy(float)
    grey = (saturation < ACHROMATIC_SATURATION) | np.isnan(hue)
    if not chromatic:
        grey[:] = True
    if not achromatic:
        grey[:] = False
    tags = np.empty(n, dtype=object)
    confidence = np.zeros(n)
    if chromatic and (~grey).any():
        hues = np.array([hsv[t][0] for t in chromatic])
        gap = np.abs(hue[~grey, None] - hues[None, :])
        distance = np.minimum(gap, 1.0 - gap)
        tags[~grey], confidence[~grey] = _nearest(distance, chromatic)
    if achromatic and grey.any():
        value = measured["value"].to_numpy(float)[grey]
        warmth = measured["warmth"].to_numpy(float)[grey]
        values = np.array([hsv[t][2] for t in achromatic])
        warmths = np.array([palette[t][0] - palette[t][2] for t in achromatic])
        distance = np.abs(value[:, None] - values[None, :]) + WARMTH_WEIGHT * np.abs(warmth[:, None] - warmths[None, :])
        tags[grey], conf = _nearest(distance, achromatic)
        # with one achromatic colour the margin is undefined: how far from chromatic it looks
        confidence[grey] = conf if len(achromatic) > 1 else 1.0 - saturation[grey] / ACHROMATIC_SATURATION
    return pd.DataFrame({"tag": tags, "confidence": np.round(confidence, 3)}, index=measured.index)


def _nearest(distance: np.ndarray, tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(distance, axis=1)
    best = order[:, 0]
    rows = np.arange(len(distance))
    if distance.shape[1] == 1:
        return np.array(tags, dtype=object)[best], np.ones(len(distance))
    first, second = distance[rows, best], distance[rows, order[:, 1]]
    return np.array(tags, dtype=object)[best], (second - first) / np.maximum(second, 1e-6)


def pattern_tags(measured: pd.DataFrame, dimension) -> pd.DataFrame:
    """(tag, confidence) per row of `measured` (a peak ratio per `<layout>_<period>` column) for a
    pattern dimension."""
    plain = next(tag for tag, info in dimension.tags.items() if "layout" not in info)
    marked = [
        (tag, f"{info['layout']}_{info['period_px']}") for tag, info in dimension.tags.items() if "layout" in info
    ]
    n = len(measured)
    if not marked:
        return pd.DataFrame({"tag": [plain] * n, "confidence": np.ones(n)}, index=measured.index)
    ratios = measured[[column for _, column in marked]].to_numpy(float)
    best = ratios.argmax(axis=1)
    peak = ratios[np.arange(n), best]
    patterned = peak >= PEAK_RATIO_THRESHOLD
    tags = np.where(patterned, np.array([t for t, _ in marked], dtype=object)[best], plain)
    confidence = np.where(
        patterned, np.minimum(1.0, peak / (4 * PEAK_RATIO_THRESHOLD)), 1.0 - peak / PEAK_RATIO_THRESHOLD
    )
    return pd.DataFrame({"tag": tags, "confidence": np.round(confidence, 3)}, index=measured.index)


ANALYSER_TAGS = {"colour": colour_tags, "pattern": pattern_tags}
