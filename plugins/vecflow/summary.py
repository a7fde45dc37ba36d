"""Run summary (reports/summary.json): counts, duplicates and rejects, published indexes, trend movers,
the tag-share chart, and what Elasticsearch holds against the warehouse. (How this compares with what
the demo's generator planted is vecflow.demo.truth's.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from vecflow.index.store import index_store

log = logging.getLogger(__name__)


def published_indexes(registry: pd.DataFrame, model_version: str) -> dict:
    """Per category: the published window index of the serving model with its evaluation."""
    published = registry[
        (registry["kind"] == "window")
        & (registry["status"] == "published")
        & (registry["model_version"] == model_version)
    ]
    return {
        r.category: {
            "version": r.path.rstrip("/").rsplit("/", 1)[-1],
            "vectors": int(r.vector_count),
            "date_from": str(r.date_from)[:10],
            "date_to": str(r.date_to)[:10],
            "recall_at_10": None if pd.isna(r.recall_at_10) else float(r.recall_at_10),
            "precision_at_10": None if pd.isna(r.precision_at_10) else float(r.precision_at_10),
        }
        for r in published.sort_values("category").itertuples()
    }


def build_summary(settings, warehouse) -> dict:
    counts = warehouse.query("summary_counts", model_version=settings.model_version).iloc[0].to_dict()
    breakdown = warehouse.query("summary_breakdown")
    trends = warehouse.table("tag_trends")
    by_kind = {kind: dict(zip(group["name"], group["value"].astype(int))) for kind, group in breakdown.groupby("kind")}
    latest = trends[trends["quarter_start"] == trends["quarter_start"].max()]
    movers = latest[latest["direction"].isin(["rising", "falling"])].sort_values(
        "share_change", key=abs, ascending=False
    )
    summary = {
        "vecflow_home": str(settings.paths.home),
        "model_version": settings.model_version,
        **{k: int(v) for k, v in counts.items()},
        "duplicates_removed": by_kind.get("duplicates", {}),
        "rejects_by_reason": by_kind.get("rejects", {}),
        "index_vectors_by_category": by_kind.get("index_vectors", {}),
        "index_files_by_category": by_kind.get("index_files", {}),
        "index_bytes": index_store(settings).total_bytes(),
        "quarters": sorted(trends["quarter"].unique().tolist()),
        "published_indexes": published_indexes(warehouse.table("index_registry"), settings.model_version),
        "trend_movers_latest_quarter": [
            {
                "dimension": r.dimension,
                "tag": r.tag,
                "from": round(float(r.previous_share), 4),
                "to": round(float(r.share), 4),
                "change": round(float(r.share_change), 4),
                "direction": r.direction,
            }
            for r in movers.itertuples()
        ],
    }
    return summary


def search_check(es, settings, warehouse, trends: pd.DataFrame, dimensions: list[str]) -> dict:
    """What Elasticsearch holds against the warehouse: tag counts per quarter from the image-tags
    aggregation against tag_trends less the delisted images (whose documents are deleted)."""
    from vecflow.search.queries import quarterly_tag_shares, trend_documents
    from vecflow.search.sink import SearchIndexes, quarter_label

    indexes = SearchIndexes(settings.search.index_prefix)
    from_search = pd.concat([quarterly_tag_shares(es, settings.search.index_prefix, d) for d in dimensions])
    delisted = warehouse.query("select_delisted_tags")
    delisted["quarter"] = [quarter_label(pd.Timestamp(d).date()) for d in delisted["listed_date"]]
    delisted = delisted.groupby(["quarter", "dimension", "tag"], as_index=False)["delisted_count"].sum()
    served = trends[trends["tag_count"] > 0].merge(delisted, on=["quarter", "dimension", "tag"], how="left")
    served["tag_count"] = served["tag_count"] - served["delisted_count"].fillna(0)
    served = served[served["tag_count"] > 0].drop(columns="delisted_count")
    merged = served.merge(from_search, on=["quarter", "dimension", "tag"], how="outer")
    differ = merged[merged["tag_count"].fillna(-1) != merged["count"].fillna(-1)]
    return {
        "image_documents": int(es.count(index=indexes.image_tags)["count"]),
        "trend_documents": len(trend_documents(es, settings.search.index_prefix)),
        "tag_counts_compared": len(merged),
        "tag_counts_differing": len(differ),
    }


def tag_share_chart(trends: pd.DataFrame, path: Path) -> Path:
    """PNG: per dimension, a stacked bar of tag shares per quarter (a tag's band growing from one
    bar to the next is a rising trend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dimensions = sorted(trends["dimension"].unique())
    fig, axes = plt.subplots(1, len(dimensions), figsize=(4.2 * len(dimensions), 4.6), squeeze=False)
    for ax, dim in zip(axes[0], dimensions):
        shares = (
            trends[trends["dimension"] == dim]
            .pivot_table(index="quarter", columns="tag", values="share", aggfunc="sum")
            .fillna(0.0)
            .sort_index()
        )
        bottom = pd.Series(0.0, index=shares.index)
        colors = plt.get_cmap("tab20").colors
        for i, tag in enumerate(shares.columns):
            ax.bar(shares.index, shares[tag], bottom=bottom, label=tag, color=colors[i % len(colors)])
            bottom += shares[tag]
        ax.set_title(f"{dim}: share by quarter")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_summary(settings, warehouse, search=None, dimensions: list[str] | None = None) -> dict:
    """search: an Elasticsearch client when the search sink is on, to check what it holds."""
    summary = build_summary(settings, warehouse)
    trends = warehouse.table("tag_trends")
    if len(trends):
        summary["tag_share_chart"] = str(
            tag_share_chart(trends, settings.paths.reports_dir / "tag_share_by_quarter.png")
        )
    if search is not None:
        summary["search"] = search_check(search, settings, warehouse, trends, dimensions)
    path = settings.paths.reports_dir / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    log.info("summary written to %s", path)
    return summary
