"""The run report people open after a daily run: reports/<date>/index.html with the partition's
funnel, its rejects by reason, the trend movers and tag shares by quarter, the published indexes
with their recall, and a link to the Great Expectations Data Docs; reports/index.html lists the runs.
Charts are plain HTML bars (no network or script at view time, and no plotting cost per run)."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import jinja2
import pandas as pd

from vecflow.resources import REPORT_TEMPLATES_DIR
from vecflow.taxonomy import load_taxonomy
from vecflow.trend_charts import TOP_TAGS, folded_shares, tag_colors

MOVERS_PER_FACET = 4  # movers listed per facet and period kind in the run report
FACETS_SHOWN = 6  # facets with movers listed per period kind (the rest: the view v_trend_movers)
OTHER_GREY = "#bfbfbf"  # the folded "other" tags of a share chart
STAGE_ORDER = ["catalog", "delisted", "embed", "validate", "dedup", "tags", "index", "search"]
STAGE_RULE = "in = out + dropped"  # funnel_balance.sql's rows per stage and category (the others are links)
_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPORT_TEMPLATES_DIR)), autoescape=True)


def _funnel(frame: pd.DataFrame) -> list[dict]:
    """Per stage (pipeline order): its categories with in/out/dropped and bar widths scaled to the stage's largest in."""
    stages = []
    for stage in sorted(frame["stage"].unique(), key=lambda s: (STAGE_ORDER + [s]).index(s)):
        rows = frame[frame["stage"] == stage].sort_values("category")
        scale = max(int(rows["in_rows"].max()), 1)
        stages.append(
            {
                "stage": stage,
                "in": int(rows["in_rows"].sum()),
                "out": int(rows["out_rows"].sum()),
                "dropped": int(rows["dropped_rows"].sum()),
                "categories": [
                    {
                        "category": r.category,
                        "in": int(r.in_rows),
                        "out": int(r.out_rows),
                        "dropped": int(r.dropped_rows),
                        "out_pct": 100 * r.out_rows / scale,
                        "dropped_pct": 100 * r.dropped_rows / scale,
                    }
                    for r in rows.itertuples()
                ],
            }
        )
    return stages


def _tag_shares(trends: pd.DataFrame, movers: pd.DataFrame) -> list[dict]:
    """The whole catalog's shares per period kind and dimension: stacked bar segments per period and a
    donut of the latest period; each dimension's movers and largest tags by name, the rest as one
    "other" segment (trend_charts.folded_shares)."""
    palette = [
        "#4e79a7",
        "#f28e2b",
        "#e15759",
        "#76b7b2",
        "#59a14f",
        "#edc948",
        "#b07aa1",
        "#ff9da7",
        "#9c755f",
        "#bab0ac",
        "#86bcb6",
        "#d37295",
    ]
    known = tag_colors(load_taxonomy())
    charts = []
    catalog = trends[trends["facet"] == ""]
    for (kind, dimension), rows in catalog.groupby(["period_kind", "dimension"]):
        mine = (
            movers[(movers["period_kind"] == kind) & (movers["facet"] == "") & (movers["dimension"] == dimension)]
            if len(movers)
            else None
        )
        shares = folded_shares(rows, mine)
        tags = list(shares.columns)
        color = {
            tag: "#" + "".join(f"{round(255 * c):02x}" for c in known[(dimension, tag)])
            if (dimension, tag) in known
            else palette[i % len(palette)]
            for i, tag in enumerate(tags[:TOP_TAGS])
        }
        color.update({tag: OTHER_GREY for tag in tags[TOP_TAGS:]})  # the folded others
        partial = set(rows.loc[rows["partial"].fillna(False).astype(bool), "period"])
        periods = [
            {
                "period": period + ("*" if period in partial else ""),
                "segments": [
                    {"tag": tag, "pct": 100 * float(share), "color": color[tag]}
                    for tag, share in shares.loc[period].items()
                    if share > 0
                ],
            }
            for period in shares.index
        ]
        # the latest period as a donut: a conic gradient of the same segments (a multi-label dimension's
        # shares can sum past 100%: the donut shows their proportions)
        stops, start = [], 0.0
        scale = 100 / max(100.0, sum(segment["pct"] for segment in periods[-1]["segments"]))
        for segment in periods[-1]["segments"]:
            stops.append(f"{segment['color']} {start:.2f}% {start + scale * segment['pct']:.2f}%")
            start += scale * segment["pct"]
        charts.append(
            {
                "period_kind": kind,
                "dimension": dimension,
                "periods": periods,
                "donut": ", ".join(stops),
                "legend": [{"tag": t, "color": color[t]} for t in tags],
            }
        )
    return charts


def _movers_by_facet(movers: pd.DataFrame) -> tuple[list[dict], int]:
    """The latest periods' movers grouped by period kind and facet: per period kind the whole catalog
    first, then the facets by their most significant mover, at most FACETS_SHOWN facets of
    MOVERS_PER_FACET movers each; and how many facets with movers were left out."""
    groups, left_out = [], 0
    for kind, of_kind in movers.groupby("period_kind", sort=True):
        best = of_kind.groupby("facet")["p_adjusted"].min()
        order = sorted(best.index, key=lambda facet: (facet != "", best[facet], facet))
        left_out += max(0, len(order) - FACETS_SHOWN)
        for facet in order[:FACETS_SHOWN]:
            rows = of_kind[of_kind["facet"] == facet].sort_values("mover_rank")
            groups.append(
                {
                    "period_kind": kind,
                    "period": rows["period"].iloc[0],
                    "facet": facet or "whole catalog",
                    "movers": rows.head(MOVERS_PER_FACET).to_dict("records"),
                    "more": max(0, len(rows) - MOVERS_PER_FACET),
                }
            )
    return groups, left_out


def _windows(registry: pd.DataFrame, model_version: str, status: str):
    """The model's window versions of a status in the registry, by category, with what each was
    evaluated at."""
    rows = registry[
        (registry["kind"] == "window") & (registry["status"] == status) & (registry["model_version"] == model_version)
    ]
    for r in rows.sort_values("category").itertuples():
        yield (
            r,
            {
                "version": r.path.rstrip("/").rsplit("/", 1)[-1],
                "recall_at_10": None if pd.isna(r.recall_at_10) else float(r.recall_at_10),
                "precision_at_10": None if pd.isna(r.precision_at_10) else float(r.precision_at_10),
            },
        )


def published_indexes(registry: pd.DataFrame, model_version: str) -> dict:
    """Per category: the published window index of the serving model with its evaluation."""
    return {
        r.category: {
            **evaluated,
            "vectors": int(r.vector_count),
            "date_from": str(r.date_from)[:10],
            "date_to": str(r.date_to)[:10],
        }
        for r, evaluated in _windows(registry, model_version, "published")
    }


def blocked_indexes(registry: pd.DataFrame, model_version: str, run_date: dt.date) -> list[dict]:
    """The window versions ending on `run_date` that the gate kept from publishing, and why."""
    return [
        {"category": r.category, **evaluated, "problem": r.gate_problem if isinstance(r.gate_problem, str) else ""}
        for r, evaluated in _windows(registry, model_version, "blocked")
        if pd.Timestamp(r.date_to).date() == run_date
    ]


def write_run_report(settings, warehouse, run_date: dt.date, run_id: str, quality: dict | None = None) -> Path:
    """Writes reports/<date>/index.html (replacing a rerun's) and refreshes reports/index.html."""
    registry = warehouse.table("index_registry")
    published = published_indexes(registry, settings.model_version)
    trends = warehouse.table("tag_trends")
    movers = warehouse.query("trend_movers") if len(trends) else pd.DataFrame()
    movers_by_facet, facets_left_out = _movers_by_facet(movers) if len(movers) else ([], 0)
    balance = warehouse.query("funnel_balance", run_date=run_date)
    funnel = balance[balance["rule"] == STAGE_RULE]
    out_dir = settings.paths.reports_dir / run_date.isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    gx_index = settings.paths.reports_dir / "gx" / "index.html"
    page = _templates.get_template("run_report.html.j2").render(
        run_date=run_date.isoformat(),
        run_id=run_id,
        model_version=settings.model_version,
        generated_at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
        funnel=_funnel(funnel),
        rejects=warehouse.query("select_partition_rejects", run_date=run_date).to_dict("records"),
        lifecycle=warehouse.query("select_lifecycle_report", run_date=run_date).to_dict("records"),
        movers=movers_by_facet,
        facets_left_out=facets_left_out,
        tag_shares=_tag_shares(trends, movers),
        correction={
            "bh": f"Benjamini-Hochberg correction (false discovery rate {settings.trends.alpha})",
            "bonferroni": f"Bonferroni correction (family-wise error rate {settings.trends.alpha})",
        }[settings.trends.correction],
        indexes=[{"category": category, **index} for category, index in published.items()],
        blocked=blocked_indexes(registry, settings.model_version, run_date),
        quality=quality,
        gx_docs="../gx/index.html" if gx_index.exists() else None,
    )
    path = out_dir / "index.html"
    path.write_text(page)
    write_report_index(settings.paths.reports_dir)
    return path


def write_report_index(reports_dir: Path) -> Path:
    """reports/index.html: every dated run report, newest first."""
    runs = sorted(
        (p.parent.name for p in reports_dir.glob("*/index.html") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.parent.name)),
        reverse=True,
    )
    items = "\n".join(f'<li><a href="{d}/index.html">{html.escape(d)}</a></li>' for d in runs)
    gx = (
        '<p><a href="gx/index.html">Great Expectations Data Docs</a></p>'
        if (reports_dir / "gx" / "index.html").exists()
        else ""
    )
    if (reports_dir / "trends" / "index.html").exists():
        gx += '<p><a href="trends/index.html">Tag trends by month and quarter, within facets</a></p>'
    path = reports_dir / "index.html"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>vecflow runs</title></head><body>"
        f"<h1>vecflow run reports</h1>{gx}<ul>\n{items}\n</ul></body></html>\n"
    )
    return path
