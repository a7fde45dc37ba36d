"""Colour and pattern measured from pixels (the embedding is meant to ignore them).

Colour: hue, saturation, lightness and warmth of the garment (pixels that differ from the
background). Pattern: spectral peaks of the garment's log-luminance at the frequencies of each
layout and period. The job writes these measurements; vecflow.pixel_tags turns them into a
taxonomy's tags (palette and patterns), so they do not depend on the taxonomy.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from vecflow_model.imaging import ANALYSIS_SIZE, histogram_quantile

MASK_THRESHOLD = 40.0
MIN_GARMENT_PIXELS = 300
ACHROMATIC_SATURATION = 0.28
COLOUR_KEYS = ("hue", "saturation", "value", "warmth")


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
_WINDOW = 13  # a 13x13 window around each frequency: its 3x3 centre holds the peak
_RING = np.ones((_WINDOW, _WINDOW), dtype=bool)
_RING[3:-3, 3:-3] = False  # the 3-pixel border of the window: what the peak must stand out of


@functools.lru_cache(maxsize=8)
def _window_indices(n: int, half_width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into an (n, half_width) half spectrum (rfft2) of the 13x13 windows around
    _FREQUENCIES: their 3x3 centres (frequencies, 9) and rings (frequencies, 120). The other half
    of the spectrum mirrors through the origin, P(y, x) = P(-y, -x)."""
    offsets = np.arange(_WINDOW) - _WINDOW // 2
    centres = np.rint(_FREQUENCIES).astype(int)
    ys = ((centres[:, 0, None] + offsets) % n)[:, :, None] * np.ones(_WINDOW, dtype=int)
    xs = ((centres[:, 1, None] + offsets) % n)[:, None, :] * np.ones((_WINDOW, 1), dtype=int)
    mirrored = xs >= half_width
    flat = np.where(mirrored, (-ys) % n, ys) * half_width + np.where(mirrored, n - xs, xs)
    centre = np.zeros((_WINDOW, _WINDOW), dtype=bool)
    centre[5:8, 5:8] = True
    return torch.from_numpy(flat[:, centre]).to(device), torch.from_numpy(flat[:, _RING]).to(device)


def _peak_ratios(spectra: torch.Tensor) -> torch.Tensor:
    """(N, frequencies): per frequency of _FREQUENCIES, the peak power near it over the median power
    of the ring around it (a pattern's period shows as a peak standing out of its surroundings), from
    (N, n, n // 2 + 1) half spectra (rfft2): only the windows' power is computed."""
    centre, ring = _window_indices(spectra.shape[1], spectra.shape[2], spectra.device)
    flat = spectra.flatten(1)

    def power(index: torch.Tensor) -> torch.Tensor:
        values = torch.view_as_real(flat.index_select(1, index.flatten()))
        return values.square().sum(dim=-1).reshape(len(spectra), *index.shape)

    peak = power(centre).amax(dim=2)
    ring = power(ring)
    half = ring.shape[2] // 2  # an even count: the median is the mean of the two middle values
    middle = (ring.kthvalue(half, dim=2).values + ring.kthvalue(half + 1, dim=2).values) / 2
    return peak / middle.clamp_min(1e-9)


def _eroded(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """(N, H, W) masks less `steps` pixels along their border (4-neighbour erosions; the image's edge
    erodes nothing); a mask that a step would leave empty is the one before that step."""
    stages = [mask]
    for _ in range(steps):
        inner, shrunk = stages[-1], stages[-1].clone()
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[:, :, 1:] &= inner[:, :, :-1]
        shrunk[:, :, :-1] &= inner[:, :, 1:]
        stages.append(shrunk)
    eroded, found = stages[-1], stages[-1].flatten(1).any(dim=1)
    if not found.all():  # rare (a garment a few pixels thin): the last stage that leaves something
        for stage in reversed(stages[:-1]):
            eroded = torch.where(found[:, None, None], eroded, stage)
            found = found | stage.flatten(1).any(dim=1)
    return eroded


SATURATION_BINS = 4096  # the median saturation is that of its bin's middle: within 1/8192


@functools.lru_cache(maxsize=4)
def _colour_tables(device: torch.device) -> dict[str, torch.Tensor]:
    """Lookup tables of the colour statistics of two 8-bit levels, computed in float32 as per pixel,
    and the values of their histograms' bins in one range (histogram_quantile): saturation bins of
    (max, min) levels, then warmth (red less blue) of (red, blue) levels, then 8-bit levels."""
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    high, low = levels[:, None], levels[None, :]
    saturation = torch.where(high > 0, (high - low) / high.clamp_min(1e-6), 0.0).flatten()
    warmth_values, warmth_rank = torch.unique((high - low).flatten(), sorted=True, return_inverse=True)
    saturation_bins = torch.arange(SATURATION_BINS, dtype=torch.float64)
    tables = {
        "saturation": saturation,
        "saturation_bin": (saturation * SATURATION_BINS).long().clamp_max(SATURATION_BINS - 1),
        "warmth_bin": warmth_rank + SATURATION_BINS,
        "level_bin": torch.arange(256) + SATURATION_BINS + len(warmth_values),
        "bin_values": torch.cat(
            [(saturation_bins + 0.5) / SATURATION_BINS, warmth_values.double(), torch.arange(256, dtype=torch.float64)]
        ),
        "half_levels": torch.arange(511, dtype=torch.float64) / 2,
        "quantiles": torch.tensor([0.5, 0.5, 0.9], dtype=torch.float64),
    }
    return {name: table.to(device) for name, table in tables.items()}


def _colours(planes: torch.Tensor, distance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 4): hue (NaN when no pixel is chromatic), median saturation, value and median warmth."""
    # every other row and column is plenty for colour statistics (4x less work)
    r, g, b = (planes[:, c, ::2, ::2].flatten(1) for c in range(3))
    distance, mask = distance[:, ::2, ::2].flatten(1), mask[:, ::2, ::2]
    n, tables = len(planes), _colour_tables(planes.device)
    # the garment's core: edge pixels are blended with the background and look desaturated
    median_distance = histogram_quantile((distance * 2).long(), mask.flatten(1), 0.5, tables["half_levels"])
    core = mask.flatten(1) & (distance >= median_distance[:, None])
    mx, mn = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    pair = (mx * 256 + mn).long()

    def lookup(table: str, index: torch.Tensor) -> torch.Tensor:
        return tables[table].index_select(0, index.flatten()).reshape(index.shape)

    chromatic = core & (lookup("saturation", pair) >= ACHROMATIC_SATURATION)
    # hue as an angle, averaged on the circle: the angle's sine and cosine without computing it
    y, x = np.sqrt(3.0) * (g - b), 2.0 * r - g - b
    radius = torch.hypot(x, y)
    grey = radius == 0  # atan2(0, 0) is 0: its sine 0, its cosine 1
    radius.masked_fill_(grey, 1.0)
    sin = ((y / radius) * chromatic).sum(dim=1)
    cos = ((x / radius).masked_fill_(grey, 1.0) * chromatic).sum(dim=1)
    hue = ((torch.atan2(sin, cos) / (2 * np.pi)) % 1.0).masked_fill_(~chromatic.any(dim=1), torch.nan)
    # median saturation and warmth of the core; value: the 90th percentile of the lit, unmarked
    # fabric away from its edges (blended with the background), shading and marks darken the rest
    keys = torch.cat(
        [lookup("saturation_bin", pair), lookup("warmth_bin", (r * 256 + b).long()), lookup("level_bin", mx.long())]
    )
    inside = torch.cat([core, core, _eroded(mask, 3).flatten(1)])
    saturation, warmth, value = histogram_quantile(
        keys, inside, tables["quantiles"].repeat_interleave(n), tables["bin_values"]
    ).reshape(3, n)
    return torch.stack([hue, saturation, value / 255.0, warmth], dim=1)


def _spectra(planes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rfft2 of the garments' log luminance, its mean taken out and the background zeroed."""
    log_lum = torch.log((planes[:, 0] + planes[:, 1]).add_(planes[:, 2]).div_(3.0).add_(1.0))
    inside = mask.float()
    mean = (log_lum * inside).sum(dim=(1, 2), keepdim=True) / inside.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    return torch.fft.rfft2(log_lum.sub_(mean).mul_(inside))


def analyse(planes: torch.Tensor, distance: torch.Tensor) -> list[dict[str, dict] | None]:
    """What the embedding job measures of each garment's pixels, whatever the taxonomy: its colour
    (hue, saturation, value, warmth) and, per pattern layout and period, the spectral peak ratio; for
    images given as imaging.channel_planes and their background distances
    (preprocess.background_distance), on the tensors' device. None for an image where no garment
    stands out of the background. vecflow.pixel_tags maps the measures to a taxonomy's palette and
    patterns, so a new palette or pattern retags stored images without reading them again."""
    mask = distance > MASK_THRESHOLD
    found = (mask.sum(dim=(1, 2)) >= MIN_GARMENT_PIXELS).cpu().tolist()
    colours = _colours(planes, distance, mask).cpu().tolist()
    ratios = _peak_ratios(_spectra(planes, mask)).reshape(len(distance), len(PATTERN_KEYS), -1).mean(dim=2)
    patterns = ratios.cpu().numpy().round(3).tolist()
    return [
        {"colour": dict(zip(COLOUR_KEYS, colour)), "pattern": dict(zip(PATTERN_KEYS, pattern))} if ok else None
        for ok, colour, pattern in zip(found, colours, patterns)
    ]
