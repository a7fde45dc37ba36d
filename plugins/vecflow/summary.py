"""Run summary (reports/summary.json): counts, duplicates and rejects, published indexes, trend movers,
the tag-share chart, and what Elasticsearch holds against the warehouse. (How this compares with what
the demo's generator planted is vecflow.demo.truth's.)"""

from __future__ import annotations

import json
import logging

import pandas as pd

from vecflow.index.store import index_store
from vecflow.run_report import published_indexes
from vecflow.trend_charts import facet_share_charts

log = logging.getLogger(__name__)


def build_summary(settings, warehouse, trends: pd.DataFrame, movers: pd.DataFrame) -> dict:
    """`trends`: the tag_trends table; `movers`: the latest periods' movers (trend_movers.sql)."""
    counts = warehouse.query("summary_counts", model_version=settings.model_version).iloc[0].to_dict()
    breakdown = warehouse.query("summary_breakdown")
    by_kind = {kind: dict(zip(group["name"], group["value"].astype(int))) for kind, group in breakdown.groupby("kind")}
    summary = {
        "vecflow_home": str(settings.paths.home),
        "model_version": settings.model_version,
        **{k: int(v) for k, v in counts.items()},
        "duplicates_removed": by_kind.get("duplicates", {}),
        "rejects_by_reason": by_kind.get("rejects", {}),
        "index_vectors_by_category": by_kind.get("index_vectors", {}),
        "index_files_by_category": by_kind.get("index_files", {}),
        "index_bytes": index_store(settings).total_bytes(),
        "periods": {
            kind: {
                "periods": sorted(group["period"].unique().tolist()),
                "partial": sorted(group.loc[group["partial"].astype(bool), "period"].unique().tolist()),
            }
            for kind, group in trends.groupby("period_kind")
        },
        "trend_facets": {
            keys or "(catalog)": {"facets": int(group["facet"].nunique()), "rows": len(group)}
            for keys, group in trends.groupby("facet_keys")
        },
        "published_indexes": published_indexes(warehouse.table("index_registry"), settings.model_version),
        "trend_movers_latest": [
            {
                "period_kind": r.period_kind,
                "period": r.period,
                "facet": r.facet,
                "dimension": r.dimension,
                "tag": r.tag,
                "from": round(float(r.previous_share), 4),
                "to": round(float(r.share), 4),
                "change": round(float(r.share_change), 4),
                "interval": [round(float(r.change_low), 4), round(float(r.change_high), 4)],
                "p_adjusted": float(r.p_adjusted),
                "direction": r.direction,
            }
            for r in movers.itertuples()
        ],
    }
    return summary


def search_check(es, settings, warehouse, trends: pd.DataFrame, dimensions: list[str]) -> dict:
    """What Elasticsearch holds against the warehouse: per period kind, facet kind (the whole catalog
    and each of settings.trends.facets) and dimension trended within it, the tag counts of the
    image-tags aggregations against tag_trends less the delisted images (whose documents are
    deleted while tag_trends keeps counting them)."""
    from collections import Counter

    from vecflow.search.queries import facet_label, facet_tag_shares
    from vecflow.search.sink import SearchIndexes, period_label

    prefix = settings.search.index_prefix
    key = ["period_kind", "period", "facet_keys", "facet", "dimension", "tag"]
    derivations = warehouse.table("tag_derivations")
    trended = {}  # facet keys -> the dimensions trended within its facets: not a key, nor derived from one
    for keys in [(), *settings.trends.facets]:
        excluded = set(keys) | set(derivations.loc[derivations["from_dimension"].isin(keys), "dimension"])
        trended[keys] = [d for d in dimensions if d not in excluded]
    delisted: Counter = Counter()
    for (_, listed), image in warehouse.query("select_delisted_tags").groupby(["image_id", "listed_date"]):
        values = {"source": image["source"].iloc[0], **dict(zip(image["dimension"], image["tag"]))}
        for keys, dims in trended.items():
            if any(pd.isna(values.get(k)) for k in keys):
                continue  # in none of this kind's facets
            facet = facet_label({k: values[k] for k in keys})
            for kind in settings.trends.periods:
                period = period_label(pd.Timestamp(listed).date(), kind)
                for r in image[image["dimension"].isin(dims)].itertuples():
                    delisted[(kind, period, ",".join(keys), facet, r.dimension, r.tag)] += 1
    served = trends.loc[trends["tag_count"] > 0, [*key, "tag_count"]].copy()
    served["tag_count"] -= [delisted.get(tuple(r), 0) for r in served[key].itertuples(index=False)]
    served = served[served["tag_count"] > 0]
    from_search = pd.concat(
        [
            facet_tag_shares(es, prefix, dimension, kind, keys)[[*key, "tag_count"]]
            for kind in settings.trends.periods
            for keys, dims in trended.items()
            for dimension in dims
        ]
    )
    merged = served.merge(from_search, on=key, how="outer", suffixes=("", "_search"))
    differ = merged[merged["tag_count"].fillna(-1) != merged["tag_count_search"].fillna(-1)]
    indexes = SearchIndexes(prefix)
    return {
        "image_documents": int(es.count(index=indexes.image_tags)["count"]),
        "trend_documents": int(es.count(index=indexes.tag_trends)["count"]),
        "period_kinds": list(settings.trends.periods),
        "facet_kinds": ["+".join(keys) or "(catalog)" for keys in trended],
        "tag_counts_compared": len(merged),
        "tag_counts_differing": len(differ),
    }


def write_summary(settings, warehouse, search=None, dimensions: list[str] | None = None) -> dict:
    """search: an Elasticsearch client when the search sink is on, to check what it holds."""
    from vecflow.taxonomy import load_taxonomy

    trends = warehouse.table("tag_trends")
    movers = warehouse.query("trend_movers") if len(trends) else pd.DataFrame()
    summary = build_summary(settings, warehouse, trends, movers)
    charts_dir = settings.paths.reports_dir / "trends"
    summary["trend_charts"] = facet_share_charts(trends, movers, charts_dir, load_taxonomy(), settings.trends)
    if summary["trend_charts"]:
        from vecflow.run_report import write_report_index

        summary["trends_page"] = str(charts_dir / "index.html")
        write_report_index(settings.paths.reports_dir)  # links the page
    if search is not None:
        summary["search"] = search_check(search, settings, warehouse, trends, dimensions)
    path = settings.paths.reports_dir / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    log.info("summary written to %s", path)
    return summary
