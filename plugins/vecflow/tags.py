"""Trends stage: tag_trends per period and facet over all partitions (image_tags is written by
vecflow.tagging)."""

from __future__ import annotations

import logging
import time

from vecflow.config import ConfigError

log = logging.getLogger(__name__)
CORRECTIONS = ("bh", "bonferroni")  # VECFLOW_TREND_CORRECTION: what tag_trends.sql computes


def facet_kinds(trend_settings, taxonomy) -> list[tuple[str, ...]]:
    """The facets trends are computed within: the whole catalog (no keys) and the configured ones,
    each key `source` or a tag dimension of the taxonomy."""
    known = {"source", *taxonomy.dimensions}
    for keys in trend_settings.facets:
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ConfigError(
                f"VECFLOW_TREND_FACETS: facet {'+'.join(keys)!r} names {unknown}; a facet key is one of {sorted(known)}"
            )
    return [(), *trend_settings.facets]


def compute_trends(warehouse, trend_settings, taxonomy):
    """Replaces tag_trends (every period kind and facet, p-values corrected as trend_settings.correction
    says) and returns the latest periods' movers. Logs what the facets cost: rows per facet kind and the
    seconds of the whole statement."""
    if trend_settings.correction not in CORRECTIONS:
        raise ConfigError(f"VECFLOW_TREND_CORRECTION: {trend_settings.correction!r} is not one of {list(CORRECTIONS)}")
    facets = facet_kinds(trend_settings, taxonomy)
    keys = sorted({key for facet in facets for key in facet} - {"source"})
    multi_label = [key for key in keys if taxonomy.dimension(key).multi_label]
    # the sets of multi-label keys facets combine (each is a pass of its own: see tag_trends.sql)
    multi_key_sets = []
    for facet in facets:
        multi = [key for key in facet if key in multi_label]
        if multi and multi not in multi_key_sets:
            multi_key_sets.append(multi)
    started = time.perf_counter()
    warehouse.run(
        "tag_trends",
        names={
            "periods": list(trend_settings.periods),
            "facets": [list(f) for f in facets],
            "key_dimensions": [key for key in keys if key not in multi_label],
            "multi_label_keys": multi_label,
            "multi_key_sets": multi_key_sets,
            "multi_label_dimensions": [d for d in taxonomy.dimensions if taxonomy.dimension(d).multi_label],
        },
        min_effect=trend_settings.min_effect,
        alpha=trend_settings.alpha,
        correction=trend_settings.correction,
        z_interval=trend_settings.z_interval,
        min_coverage=trend_settings.min_coverage,
    )
    log.info(
        "tag_trends: %s periods x facets %s in %.2f s",
        "/".join(trend_settings.periods),
        ", ".join("+".join(f) or "(catalog)" for f in facets),
        time.perf_counter() - started,
    )
    return warehouse.query("trend_movers")
