"""Share charts of tag_trends (PNG, matplotlib): per facet and period kind, one row per dimension with
its tags' shares as stacked bars over the periods (a band that grows is a rising tag) and a donut of
the latest period (the pie analysts ask for); and reports/trends/index.html, the page that shows
them with each facet's movers."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

MAX_FACET_CHARTS = 8  # the whole catalog and the facets with most movers in the latest period


def facet_file_name(facet: str) -> str:
    """'category=dress,source=shop_b' -> 'category-dress_source-shop_b'; '' -> 'catalog'."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", facet.replace(",", "_").replace("=", "-")) or "catalog"


def tag_colors(taxonomy) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(dimension, tag) -> the colour a tag is drawn in, where the taxonomy gives one (colour tags)."""
    return {
        (dim, tag): tuple(c / 255 for c in taxonomy.tag_info(dim, tag)["rgb"])
        for dim in taxonomy.dimensions
        for tag in taxonomy.tags(dim)
        if "rgb" in taxonomy.tag_info(dim, tag)
    }


def share_chart(rows: pd.DataFrame, title: str, path: Path, known_colors: dict | None = None) -> Path:
    """`rows`: tag_trends rows of one facet and period kind; `known_colors`: see tag_colors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dimensions = sorted(rows["dimension"].unique())
    fig, axes = plt.subplots(
        len(dimensions), 2, figsize=(10, 3.0 * len(dimensions)), squeeze=False, gridspec_kw={"width_ratios": [3, 2]}
    )
    palette = plt.get_cmap("tab20").colors
    known_colors = known_colors or {}
    for (bars, donut), dim in zip(axes, dimensions):
        shares = (
            rows[rows["dimension"] == dim]
            .pivot_table(index="period", columns="tag", values="share", aggfunc="sum")
            .fillna(0.0)
            .sort_index()
        )
        partial = set(rows.loc[rows["partial"].fillna(False).astype(bool), "period"])
        labels = [f"{p}*" if p in partial else p for p in shares.index]
        colors = [known_colors.get((dim, tag), palette[i % len(palette)]) for i, tag in enumerate(shares.columns)]
        bottom = pd.Series(0.0, index=shares.index)
        for tag, color in zip(shares.columns, colors):
            bars.bar(labels, shares[tag], bottom=bottom, label=tag, color=color, edgecolor="white", linewidth=0.5)
            bottom += shares[tag]
        bars.set_title(f"{dim}: share by period (* partial)", fontsize=9)
        bars.set_ylim(0, 1)
        bars.tick_params(axis="x", labelsize=7, rotation=30)
        latest = shares.iloc[-1]
        donut.pie(
            latest.to_numpy(),
            colors=colors,
            labels=[t if v >= 0.04 else "" for t, v in latest.items()],
            autopct=lambda pct: f"{pct:.0f}%" if pct >= 4 else "",
            pctdistance=0.78,
            wedgeprops={"width": 0.42, "edgecolor": "white"},
            textprops={"fontsize": 7},
        )
        donut.set_title(f"{dim}: {labels[-1]}", fontsize=9)
        bars.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def facet_share_charts(
    trends: pd.DataFrame, movers: pd.DataFrame, charts_dir: Path, taxonomy, trend_settings
) -> list[str]:
    """Charts of the whole catalog and of the facets with the most `movers` (trend_movers.sql: the
    latest periods'), for every period kind (<charts_dir>/<period_kind>/<facet>.png), and the page
    that shows them with each facet's movers (<charts_dir>/index.html). Returns the charts' paths."""
    import jinja2

    from vecflow.resources import REPORT_TEMPLATES_DIR

    if trends.empty:
        return []
    ranked = movers[movers["facet"] != ""].groupby("facet").size().sort_values(ascending=False, kind="stable")
    facets = ["", *ranked.index[: MAX_FACET_CHARTS - 1]]
    known_colors = tag_colors(taxonomy)
    paths, sections = [], []
    for kind, of_kind in trends.groupby("period_kind"):
        charted = []
        for facet in facets:
            rows = of_kind[of_kind["facet"] == facet]
            if rows.empty:
                continue
            name = facet or "whole catalog"
            path = share_chart(
                rows, f"{name}: tag shares by {kind}", charts_dir / kind / f"{facet_file_name(facet)}.png", known_colors
            )
            paths.append(str(path))
            mine = movers[(movers["period_kind"] == kind) & (movers["facet"] == facet)].sort_values("mover_rank")
            charted.append({"name": name, "chart": f"{kind}/{path.name}", "movers": mine.to_dict("records")})
        of_kind_movers = movers[movers["period_kind"] == kind]
        sections.append(
            {
                "kind": kind,
                "period": of_kind_movers["period"].iloc[0] if len(of_kind_movers) else None,
                "facets": charted,
                "others": len(set(of_kind_movers["facet"]) - set(facets)),
            }
        )
    page = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPORT_TEMPLATES_DIR)), autoescape=True)
    (charts_dir / "index.html").write_text(
        page.get_template("trends.html.j2").render(
            sections=sections,
            kinds=list(trend_settings.periods),
            min_effect=trend_settings.min_effect,
            alpha=trend_settings.alpha,
            confidence=round(100 * (1 - trend_settings.alpha)),
        )
    )
    return paths
