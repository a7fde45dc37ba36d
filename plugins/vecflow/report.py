"""Run summary (reports/summary.json), with what was found compared to what the generator planted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def planted_trend_check(truth_dir: Path, trends: pd.DataFrame) -> list[dict]:
    """For each planted trend: the direction it must have (sign of to - from) and what tag_trends says
    for every quarter after the first."""
    params = json.loads((truth_dir / "params.json").read_text())
    checks = []
    for planted in params["spec"]["trends"]:
        expected = "rising" if planted["to_share"] > planted["from_share"] else "falling"
        rows = trends[
            (trends["dimension"] == planted["dimension"])
            & (trends["tag"] == planted["tag"])
            & (trends["direction"] != "new")
        ].sort_values("quarter")
        found = rows["direction"].tolist()
        checks.append(
            {
                **planted,
                "expected": expected,
                "found_by_quarter": dict(zip(rows["quarter"], found)),
                "ok": bool(found) and all(d == expected for d in found),
            }
        )
    return checks


def trend_agreement(truth_dir: Path, trends: pd.DataFrame, flat_threshold: float) -> dict:
    """Direction of every tag in every quarter after the first, from the planted truth (same
    threshold) against what tag_trends found."""
    truth = pd.read_csv(truth_dir / "tag_shares.csv").dropna(subset=["change"])
    truth["expected"] = truth["change"].map(
        lambda c: "rising" if c > flat_threshold else "falling" if c < -flat_threshold else "flat"
    )
    merged = truth.merge(
        trends[["quarter", "dimension", "tag", "direction", "share"]],
        on=["quarter", "dimension", "tag"],
        how="left",
        suffixes=("_truth", ""),
    )
    wrong = merged[merged["expected"] != merged["direction"]]
    return {
        "tags_compared": len(merged),
        "same_direction": int(len(merged) - len(wrong)),
        "different": [
            {
                "quarter": r.quarter,
                "dimension": r.dimension,
                "tag": r.tag,
                "expected": r.expected,
                "found": r.direction,
                "true_change": round(float(r.change), 4),
            }
            for r in wrong.itertuples()
        ],
    }


def _pair_quality(planted: pd.DataFrame, found: pd.DataFrame) -> dict:
    """Found (duplicate -> canonical) pairs against planted ones: a pair counts only with the right canonical."""
    truth = set(zip(planted["image_id"], planted["canonical_image_id"]))
    pairs = set(zip(found["image_id"], found["canonical_image_id"]))
    hits = len(truth & pairs)
    return {
        "planted": len(truth),
        "found": len(pairs),
        "precision": round(hits / len(pairs), 4) if pairs else None,
        "recall": round(hits / len(truth), 4) if truth else None,
    }


def duplicate_check(truth_dir: Path, dedup_map: pd.DataFrame) -> dict:
    truth = pd.read_csv(truth_dir / "duplicates.csv")
    return {
        "exact_by_md5": _pair_quality(truth[truth["kind"] == "exact"], dedup_map[dedup_map["reason"] == "md5"]),
        "near_by_dhash": _pair_quality(truth[truth["kind"] == "near"], dedup_map[dedup_map["reason"] == "dhash"]),
    }


def published_indexes(registry: pd.DataFrame, model_version: str) -> dict:
    """Per category: the published window index of the serving model with its evaluation."""
    published = registry[
        (registry["kind"] == "window")
        & (registry["status"] == "published")
        & (registry["model_version"] == model_version)
    ]
    return {
        r.category: {
            "version": Path(r.path).name,
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
        "index_bytes": sum(f.stat().st_size for f in settings.paths.index_dir.rglob("*") if f.is_file()),
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
    truth_dir = settings.paths.catalog_dir / "truth"
    if (truth_dir / "params.json").exists():
        summary["planted_trends"] = planted_trend_check(truth_dir, trends)
        summary["trend_agreement"] = trend_agreement(truth_dir, trends, settings.trends.flat_threshold)
        summary["planted_duplicates"] = duplicate_check(truth_dir, warehouse.table("dedup_map"))
    return summary


def search_check(es, settings, trends: pd.DataFrame, dimensions: list[str], truth_dir: Path) -> dict:
    """What Elasticsearch holds against the warehouse: tag counts per quarter from the image-tags
    aggregation against tag_trends, and the planted trends as the tag-trends documents tell them."""
    from vecflow.search.queries import quarterly_tag_shares, trend_documents
    from vecflow.search.sink import SearchIndexes

    indexes = SearchIndexes(settings.search.index_prefix)
    from_search = pd.concat([quarterly_tag_shares(es, settings.search.index_prefix, d) for d in dimensions])
    merged = trends[trends["tag_count"] > 0].merge(from_search, on=["quarter", "dimension", "tag"], how="outer")
    differ = merged[merged["tag_count"].fillna(-1) != merged["count"].fillna(-1)]
    documents = trend_documents(es, settings.search.index_prefix)
    check = {
        "image_documents": int(es.count(index=indexes.image_tags)["count"]),
        "trend_documents": len(documents),
        "tag_counts_compared": len(merged),
        "tag_counts_differing": len(differ),
    }
    if (truth_dir / "params.json").exists() and len(documents):
        check["planted_trends"] = planted_trend_check(truth_dir, documents)
    return check


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
        summary["search"] = search_check(search, settings, trends, dimensions, settings.paths.catalog_dir / "truth")
    path = settings.paths.reports_dir / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    log.info("summary written to %s", path)
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"vecflow run summary ({summary['vecflow_home']})",
        f"  partitions            {summary['partitions']}",
        f"  images in             {summary['catalog_images']}",
        f"  vectors staged        {summary['vectors_staged']}  (vector_log rows: {summary['vector_log_rows']})",
        f"  vectors clean         {summary['vectors_clean']}",
        f"  duplicates removed    {sum(summary['duplicates_removed'].values())}  {summary['duplicates_removed']}",
        f"  rejects by reason     {summary['rejects_by_reason']}",
        f"  tags written          {summary['tags_written']}  on {summary['images_tagged']} images",
        f"  quarters              {', '.join(summary['quarters'])}",
        f"  index vectors         {sum(summary['index_vectors_by_category'].values())} in "
        f"{sum(summary['index_files_by_category'].values())} day indexes ({summary['index_bytes'] / 1e6:.1f} MB)",
        "  published window indexes (recall@10 vs exact, same-category precision@10):",
    ]
    lines += [
        f"    {category:12s} {i['version']}  {i['vectors']} vectors  {i['date_from']}..{i['date_to']}  "
        f"recall {i['recall_at_10']}  precision {i['precision_at_10']}"
        for category, i in summary.get("published_indexes", {}).items()
    ]
    lines += ["  trend movers (latest quarter vs previous):"]
    lines += [
        f"    {m['direction']:8s} {m['dimension']}={m['tag']}: {m['from']:.3f} -> {m['to']:.3f}"
        for m in summary["trend_movers_latest_quarter"]
    ]
    if "tag_share_chart" in summary:
        lines.append(f"  chart                 {summary['tag_share_chart']}")
    for check in summary.get("planted_trends", []):
        lines.append(
            f"  planted {check['dimension']}={check['tag']} {check['expected']}: "
            f"{'FOUND' if check['ok'] else 'NOT FOUND'} {check['found_by_quarter']}"
        )
    if "trend_agreement" in summary:
        agreement = summary["trend_agreement"]
        lines.append(
            f"  trend directions      {agreement['same_direction']}/{agreement['tags_compared']} "
            "tags x quarters as planted"
        )
        lines += [
            f"    differs: {d['quarter']} {d['dimension']}={d['tag']} planted {d['expected']} "
            f"(true change {d['true_change']:+.3f}), found {d['found']}"
            for d in agreement["different"]
        ]
    if "search" in summary:
        search = summary["search"]
        found = [
            f"{c['dimension']}={c['tag']} {'FOUND' if c['ok'] else 'NOT FOUND'}"
            for c in search.get("planted_trends", [])
        ]
        lines.append(
            f"  elasticsearch         {search['image_documents']} image docs, {search['trend_documents']} "
            f"trend docs; tag counts differing from the warehouse: {search['tag_counts_differing']} of "
            f"{search['tag_counts_compared']}; planted: {', '.join(found)}"
        )
    for name, quality in summary.get("planted_duplicates", {}).items():
        lines.append(
            f"  planted duplicates    {name}: {quality['found']} found of {quality['planted']} planted, "
            f"precision {quality['precision']}, recall {quality['recall']}"
        )
    return "\n".join(lines)
