"""The planted-truth oracle of the demo: what the pipeline found (tag_trends, dedup_map, the trend
documents in Elasticsearch) against what the generator planted (catalog/truth/), and the summary
`make run` prints. Written to reports/planted_truth.json."""

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


def planted_truth(settings, warehouse, search=None) -> dict:
    """The planted checks of a run over a generated catalog ({} for a catalog without truth);
    `search`: an Elasticsearch client, to check the trend documents too."""
    truth_dir = settings.paths.catalog_dir / "truth"
    if not (truth_dir / "params.json").exists():
        return {}
    trends = warehouse.table("tag_trends")
    truth = {
        "planted_trends": planted_trend_check(truth_dir, trends),
        "trend_agreement": trend_agreement(truth_dir, trends, settings.trends.flat_threshold),
        "planted_duplicates": duplicate_check(truth_dir, warehouse.table("dedup_map")),
    }
    if search is not None:
        from vecflow.search.queries import trend_documents

        documents = trend_documents(search, settings.search.index_prefix)
        truth["search_planted_trends"] = planted_trend_check(truth_dir, documents) if len(documents) else []
    path = settings.paths.reports_dir / "planted_truth.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth, indent=2, default=str))
    log.info("planted truth checks written to %s", path)
    return truth


def format_summary(summary: dict) -> str:
    """The run summary as printed by `make run`: reports/summary.json with the planted checks merged in."""
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
            for c in summary.get("search_planted_trends", [])
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
