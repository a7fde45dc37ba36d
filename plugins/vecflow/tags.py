"""Tags stage: image_tags per partition; tag_trends per period and facet over all partitions."""

from __future__ import annotations

import datetime as dt
import logging
import time

from vecflow.config import ConfigError

log = logging.getLogger(__name__)


def tag_partition(warehouse, run_date: dt.date, run_id: str, model_version: str) -> None:
    warehouse.run("image_tags", run_date=run_date, run_id=run_id, model_version=model_version)


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
    """Replaces tag_trends (every period kind and facet) and returns the latest periods' movers. Logs
    what the facets cost: rows per facet kind and the seconds of the whole statement."""
    facets = facet_kinds(trend_settings, taxonomy)
    key_dimensions = sorted({key for keys in facets for key in keys} - {"source"})
    started = time.perf_counter()
    warehouse.run(
        "tag_trends",
        names={
            "periods": list(trend_settings.periods),
            "facets": [list(f) for f in facets],
            "key_dimensions": key_dimensions,
        },
        min_effect=trend_settings.min_effect,
        alpha=trend_settings.alpha,
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
