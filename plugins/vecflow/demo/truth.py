"""The planted-truth oracle of the demo: what the pipeline found (tag_trends, dedup_map, the trend
documents in Elasticsearch) against what the generator planted (catalog/truth/), and the summary
`make run` prints. Written to reports/planted_truth.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)
MOVERS_SHOWN = 8  # per period kind in the printed summary
OUTCOME = {True: "FOUND", False: "NOT FOUND", None: "UNTESTABLE at this size"}


PERIOD_OFFSETS = {"month": pd.DateOffset(months=1), "quarter": pd.DateOffset(months=3)}


def expected_shares(truth_dir: Path, trends: pd.DataFrame) -> pd.DataFrame:
    """What the generator planned, in the facets and periods tag_trends holds: per period, facet,
    dimension and tag, the mean over the facet's unique images of each image's planned probability of
    the tag (its day's planned shares in its group: within a planted category or source, or the rest;
    a multi-label tag's share is the share of images carrying it). Facets are the images' true category
    and source."""
    from vecflow.demo.catalog.spec import parse_trend_spec, planned_probabilities
    from vecflow.demo.catalog.world import derived_dimensions
    from vecflow.search.queries import facet_labels
    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    params = json.loads((truth_dir / "params.json").read_text())
    spec = parse_trend_spec(params["spec"], taxonomy)
    images = pd.read_parquet(truth_dir / "images.parquet")
    images = images[images["kind"] == "original"].reset_index(drop=True)
    day = (pd.to_datetime(images["listed_date"]) - pd.Timestamp(params["start_date"])).dt.days.to_numpy()
    probabilities = planned_probabilities(spec, taxonomy, images, day, params["days"])
    frames = []
    for (kind, keys), _ in trends.groupby(["period_kind", "facet_keys"]):
        keys = [k for k in keys.split(",") if k]
        start = pd.to_datetime(images["listed_date"]).dt.to_period("M" if kind == "month" else "Q").dt.start_time
        facet = facet_labels(images, keys) if keys else ""
        # a dimension that follows from a facet key is constant within the facet
        derived = {dim for dim, (base, _) in derived_dimensions(taxonomy).items() if base in keys}
        for dim, matrix in probabilities.items():
            if dim in keys or dim in derived:
                continue
            mean = matrix.groupby(
                [start.rename("period_start"), pd.Series(facet, index=images.index, name="facet")]
            ).mean()
            long = mean.stack().rename("expected_share").reset_index().rename(columns={"level_2": "tag"})
            frames.append(long.assign(period_kind=kind, facet_keys=",".join(keys), dimension=dim))
    return pd.concat(frames, ignore_index=True)


def _comparisons(truth_dir: Path, trends: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Every tested comparison with the previous period, with the planned change and the z a planned
    change would reach at these sizes (under it, the test cannot be expected to see the change)."""
    from statistics import NormalDist

    keys = ["period_kind", "period_start", "facet_keys", "facet", "dimension", "tag"]
    trends = trends.assign(period_start=pd.to_datetime(trends["period_start"]))
    expected = expected_shares(truth_dir, trends)
    rows = trends[~trends["direction"].isin(["new", "insufficient"])].merge(expected, on=keys, how="left")
    previous = trends[keys + ["dimension_total"]].merge(expected, on=keys, how="left")
    for kind, offset in PERIOD_OFFSETS.items():  # per kind on the column: a DateOffset per row is slow
        of_kind = previous["period_kind"] == kind
        previous.loc[of_kind, "period_start"] = previous.loc[of_kind, "period_start"] + offset
    rows = rows.merge(
        previous.rename(columns={"dimension_total": "previous_total", "expected_share": "expected_previous"}),
        on=keys,
        how="left",
    )
    rows["expected_change"] = rows["expected_share"] - rows["expected_previous"]
    pooled = (rows["expected_share"] + rows["expected_previous"]) / 2
    se = (pooled * (1 - pooled) * (1 / rows["dimension_total"] + 1 / rows["previous_total"])) ** 0.5
    rows["expected_z"] = (rows["expected_change"].abs() / se).fillna(0.0)
    # the z a Bonferroni-corrected two-sided test needs (p x tests < alpha): Benjamini-Hochberg rejects
    # whatever Bonferroni rejects, so a comparison powered for one is powered for both
    rows["critical_z"] = [NormalDist().inv_cdf(1 - alpha / 2 / max(int(n), 1)) for n in rows["tests_in_period"]]
    return rows


def _planted_outcome(found: pd.Series, required: pd.Series, expected: str) -> bool | None:
    """False when a comparison calls it the other way or a powered one misses it; True when every
    powered comparison (or, without any, at least one other) has its direction; None when no
    comparison can see it at this catalog's size (too few days or images) and none did."""
    opposite = {"rising": "falling", "falling": "rising"}[expected]
    if (found == opposite).any() or (required != expected).any():
        return False
    if len(required):
        return True
    return True if (found == expected).any() else None


def adjusted_p_values(rows: pd.DataFrame, correction: str) -> pd.Series:
    """The corrected p-values of tested comparisons (p_value, tests_in_period), as tag_trends.sql
    computes them for `correction` (bh or bonferroni) within each period kind and period."""
    family = [rows["period_kind"], rows["period_start"]]
    if correction == "bonferroni":
        return (rows["p_value"] * rows["tests_in_period"]).clip(upper=1.0)
    if correction != "bh":
        raise ValueError(f"unknown correction {correction!r}")
    step_up = rows["p_value"] * rows["tests_in_period"] / rows["p_value"].groupby(family).rank(method="max")
    # the smallest step-up value among the tests with a p-value at least as large
    descending = rows.assign(step_up=step_up).sort_values("p_value", ascending=False, kind="stable")
    running = descending.groupby(["period_kind", "period_start"])["step_up"].cummin()
    return running.reindex(rows.index).clip(upper=1.0)


def _directions(rows: pd.DataFrame, p_adjusted: pd.Series, trend_settings) -> pd.Series:
    """tag_trends.sql's rule for a tested comparison: rising/falling/flat."""
    significant = p_adjusted < trend_settings.alpha
    rising = significant & (rows["share_change"] >= trend_settings.min_effect)
    falling = significant & (rows["share_change"] <= -trend_settings.min_effect)
    return pd.Series("flat", index=rows.index).mask(rising, "rising").mask(falling, "falling")


def _false_movers(rows: pd.DataFrame, directions: pd.Series, min_effect: float) -> pd.DataFrame:
    """Movers whose planned change is under half the minimum effect or of the other sign."""
    movers = rows[directions.isin(["rising", "falling"])]
    sign = (directions[movers.index] == "rising").astype(float) * 2 - 1
    return movers[(movers["expected_change"].abs() < min_effect / 2) | (sign * movers["expected_change"] < 0)]


def _by_correction(rows: pd.DataFrame, params: dict, trend_settings) -> dict:
    """Per correction: movers, false movers, and planted trends seen (called in their direction in at
    least one period), as if that correction had been configured. The p-values are adjusted here from
    tag_trends' p_value rather than by running the SQL twice: the z-tests are the same, only the
    adjustment differs, and tag_trends stays the configured run's. The configured correction's
    adjustment is compared with tag_trends' p_adjusted (a check of the SQL on the demo's data)."""
    from vecflow.search.queries import facet_label
    from vecflow.tags import CORRECTIONS

    tested = rows[rows["p_value"].notna()]
    out = {}
    for correction in CORRECTIONS:
        adjusted = adjusted_p_values(tested, correction)
        directions = _directions(tested, adjusted, trend_settings)
        found = 0
        for planted in params["spec"]["trends"]:
            expected = "rising" if planted["to_share"] > planted["from_share"] else "falling"
            mine = (
                (tested["facet"] == facet_label(planted.get("within") or {}))
                & (tested["dimension"] == planted["dimension"])
                & (tested["tag"] == planted["tag"])
            )
            found += bool((directions[mine] == expected).any())
        out[correction] = {
            "movers": int(directions.isin(["rising", "falling"]).sum()),
            "false_movers": int(len(_false_movers(tested, directions, trend_settings.min_effect))),
            "planted_seen": f"{found} of {len(params['spec']['trends'])}",
        }
        if correction == trend_settings.correction:
            out[correction]["max_difference_from_sql"] = float((adjusted - tested["p_adjusted"]).abs().max())
    return out


def planted_trend_check(truth_dir: Path, trends: pd.DataFrame, trend_settings) -> dict:
    """Each planted trend (in its facet) against tag_trends, every period kind; and the false movers:
    tags called rising or falling in any facet whose planned change is under half the minimum effect or
    of the other sign. A planted trend is found when every comparison with the power to see it (planned
    change of at least the minimum effect, planned z a unit above the critical one) has its direction;
    the others are shown as underpowered. `by_correction`: the movers and false movers under each
    multiple-testing correction (VECFLOW_TREND_CORRECTION)."""
    params = json.loads((truth_dir / "params.json").read_text())
    from vecflow.search.queries import facet_label

    min_effect = trend_settings.min_effect
    rows = _comparisons(truth_dir, trends, trend_settings.alpha)
    checks = []
    for planted in params["spec"]["trends"]:
        facet = facet_label(planted.get("within") or {})
        expected = "rising" if planted["to_share"] > planted["from_share"] else "falling"
        mine = rows[
            (rows["facet"] == facet) & (rows["dimension"] == planted["dimension"]) & (rows["tag"] == planted["tag"])
        ].sort_values(["period_kind", "period_start"])
        powered = (mine["expected_change"].abs() >= min_effect) & (mine["expected_z"] >= mine["critical_z"] + 1)
        found = {
            kind: {
                r.period: r.direction + ("" if p else " (underpowered)")
                for r, p in zip(group.itertuples(), powered[group.index])
            }
            for kind, group in mine.groupby("period_kind")
        }
        required = mine[powered]
        checks.append(
            {
                **planted,
                "facet": facet,
                "expected": expected,
                "found": found,
                "comparisons_powered": int(len(required)),
                "ok": _planted_outcome(mine["direction"], required["direction"], expected),
            }
        )
    movers = rows[rows["direction"].isin(["rising", "falling"])]
    false = _false_movers(rows, rows["direction"], min_effect)
    return {
        "planted": checks,
        "movers": int(len(movers)),
        "comparisons": int(len(rows)),
        "correction": trend_settings.correction,
        "by_correction": _by_correction(rows, params, trend_settings),
        "false_movers": [
            {
                "period": r.period,
                "facet": r.facet,
                "dimension": r.dimension,
                "tag": r.tag,
                "found": r.direction,
                "change": round(float(r.share_change), 4),
                "planned_change": round(float(r.expected_change), 4),
                "p_adjusted": float(r.p_adjusted),
            }
            for r in false.itertuples()
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
        "trends": planted_trend_check(truth_dir, trends, settings.trends),
        "planted_duplicates": duplicate_check(truth_dir, warehouse.table("dedup_map")),
    }
    if search is not None:
        from vecflow.search.queries import trend_documents

        documents = trend_documents(search, settings.search.index_prefix)
        truth["search_trends"] = planted_trend_check(truth_dir, documents, settings.trends) if len(documents) else {}
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
        *(
            f"  {kind + 's':21s} {', '.join(p + ('*' if p in info['partial'] else '') for p in info['periods'])}"
            "  (* partial)"
            for kind, info in summary["periods"].items()
        ),
        "  trend facets          "
        + ", ".join(f"{k}: {v['facets']} facets, {v['rows']} rows" for k, v in summary["trend_facets"].items()),
        f"  index vectors         {sum(summary['index_vectors_by_category'].values())} in "
        f"{sum(summary['index_files_by_category'].values())} day indexes ({summary['index_bytes'] / 1e6:.1f} MB)",
        "  published window indexes (recall@10 vs exact, same-category precision@10):",
    ]
    lines += [
        f"    {category:12s} {i['version']}  {i['vectors']} vectors  {i['date_from']}..{i['date_to']}  "
        f"recall {i['recall_at_10']}  precision {i['precision_at_10']}"
        for category, i in summary.get("published_indexes", {}).items()
    ]
    movers = summary["trend_movers_latest"]
    for kind in summary["periods"]:
        of_kind = [m for m in movers if m["period_kind"] == kind]
        if not of_kind:
            continue
        lines.append(
            f"  trend movers, {of_kind[0]['period']} vs the {kind} before ({len(of_kind)} in "
            f"{len({m['facet'] for m in of_kind})} facets; change [interval], corrected p):"
        )
        lines += [
            f"    {m['facet'] or '(catalog)':30s} {m['direction']:8s} {m['dimension']}={m['tag']}: "
            f"{m['from']:.3f} -> {m['to']:.3f} {m['change']:+.3f} [{m['interval'][0]:+.3f}, {m['interval'][1]:+.3f}] "
            f"p {m['p_adjusted']:.1g}"
            for m in sorted(of_kind, key=lambda m: (m["facet"] != "", m["p_adjusted"]))[:MOVERS_SHOWN]
        ]
        if len(of_kind) > MOVERS_SHOWN:
            lines.append(f"    ... {len(of_kind) - MOVERS_SHOWN} more: reports/summary.json, view v_trend_movers")
    if summary.get("trends_page"):
        lines.append(f"  trends page           {summary['trends_page']} ({len(summary['trend_charts'])} share charts)")
    trends = summary.get("trends", {})
    for check in trends.get("planted", []):
        within = f" within {check['facet']}" if check["facet"] else ""
        lines.append(
            f"  planted {check['dimension']}={check['tag']}{within} {check['expected']}: "
            f"{OUTCOME[check['ok']]} {check['found']}"
        )
    if trends:
        lines.append(
            f"  false movers          {len(trends['false_movers'])} of {trends['movers']} movers "
            f"({trends['comparisons']} tag x facet x period comparisons)"
        )
        lines += [
            f"    false: {m['period']} {m['facet'] or '(catalog)'} {m['dimension']}={m['tag']} {m['found']} "
            f"{m['change']:+.3f} (planned {m['planned_change']:+.3f}, p_adj {m['p_adjusted']:.2g})"
            for m in trends["false_movers"]
        ]
        lines.append(
            "  by correction         "
            + "; ".join(
                f"{name}{' (configured)' if name == trends['correction'] else ''}: {c['false_movers']} false of "
                f"{c['movers']} movers, planted seen {c['planted_seen']}"
                for name, c in trends["by_correction"].items()
            )
        )
    if "search" in summary:
        search = summary["search"]
        found = [
            f"{c['dimension']}={c['tag']}{'@' + c['facet'] if c['facet'] else ''} {OUTCOME[c['ok']]}"
            for c in summary.get("search_trends", {}).get("planted", [])
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
