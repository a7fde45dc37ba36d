"""Share charts of tag_trends (PNG, matplotlib): per facet and period kind, one row per dimension with
its tags' shares as stacked bars over the periods (a band that grows is a rising tag) and a donut of
the latest period (the pie analysts ask for); and reports/trends/index.html, the page that shows
them with each facet's top movers. A dimension shows its movers and its largest tags, at most
TOP_TAGS, and the rest summed into one "other" band, so a dimension of 300 brands stays readable."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

MAX_FACET_CHARTS = 5  # the whole catalog and the facets with most movers in the latest period
TOP_TAGS = 10  # tags of a dimension drawn by name; the others are one "other" band
TOP_MOVERS = 12  # movers listed per facet on the trends page (all of them: the view v_trend_movers)
OTHER_COLOR = (0.75, 0.75, 0.75)


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


def shown_tags(rows: pd.DataFrame, movers: pd.DataFrame | None = None, top: int = TOP_TAGS) -> list[str]:
    """The tags of one dimension drawn by name, within one facet and period kind: its `movers` (by
    mover_rank) first, then the largest by share summed over the periods (ties by name), at most `top`."""
    first = [] if movers is None or movers.empty else movers.sort_values("mover_rank")["tag"].tolist()
    total = rows.groupby("tag")["share"].sum()
    by_share = sorted(total.index, key=lambda tag: (-total[tag], tag))
    return list(dict.fromkeys([*first, *by_share]))[:top]


def folded_shares(rows: pd.DataFrame, movers: pd.DataFrame | None = None, top: int = TOP_TAGS) -> pd.DataFrame:
    """period x tag shares of one dimension (rows: its tag_trends rows in one facet and period kind):
    the shown tags (shown_tags) in their order, then the others summed into one column named
    'other (N tags)' where there are any. A multi-label dimension's shares are per image: they (and
    so a period's bands) can sum past 1."""
    # groupby + unstack: pivot_table costs ~5x as much, and this runs per dimension on every report
    shares = rows.groupby(["period", "tag"])["share"].sum().unstack(fill_value=0.0).sort_index()
    shown = shown_tags(rows, movers, top)
    rest = [tag for tag in shares.columns if tag not in shown]
    folded = shares[shown]
    if rest:
        folded = folded.assign(**{f"other ({len(rest)} tags)": shares[rest].sum(axis=1)})
    return folded


def share_figure(rows: pd.DataFrame, title: str, known_colors: dict | None = None, movers=None, top: int = TOP_TAGS):
    """The figure of share_chart: per dimension of `rows` (tag_trends rows of one facet and period
    kind), a series per shown tag and one for the others (folded_shares); `movers`: the facet's
    movers in the latest period (trend_movers.sql), drawn by name whatever their share."""
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
        mine = None if movers is None or movers.empty else movers[movers["dimension"] == dim]
        shares = folded_shares(rows[rows["dimension"] == dim], mine, top)
        partial = set(rows.loc[rows["partial"].fillna(False).astype(bool), "period"])
        labels = [f"{p}*" if p in partial else p for p in shares.index]
        # columns past `top` can only be the folded others
        colors = [
            known_colors.get((dim, tag), palette[i % len(palette)]) if i < top else OTHER_COLOR
            for i, tag in enumerate(shares.columns)
        ]
        bottom = pd.Series(0.0, index=shares.index)
        for tag, color in zip(shares.columns, colors):
            bars.bar(labels, shares[tag], bottom=bottom, label=tag, color=color, edgecolor="white", linewidth=0.5)
            bottom += shares[tag]
        bars.set_title(f"{dim}: share by period (* partial)", fontsize=9)
        bars.set_ylim(0, max(1.0, float(bottom.max())))
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
    # fixed margins (room for each legend between its bars and donut): tight_layout measured every
    # text of 18 axes, a third of a 9-dimension chart's time
    height = 3.0 * len(dimensions)
    fig.subplots_adjust(left=0.06, right=0.97, top=1 - 0.9 / height, bottom=0.35 / height, wspace=0.75, hspace=0.55)
    return fig


def share_chart(
    rows: pd.DataFrame, title: str, path: Path, known_colors: dict | None = None, movers=None, top: int = TOP_TAGS
) -> Path:
    """share_figure written to `path` (PNG); `known_colors`: see tag_colors."""
    import matplotlib.pyplot as plt

    fig = share_figure(rows, title, known_colors, movers, top)
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
            mine = movers[(movers["period_kind"] == kind) & (movers["facet"] == facet)].sort_values("mover_rank")
            path = share_chart(
                rows,
                f"{name}: tag shares by {kind}",
                charts_dir / kind / f"{facet_file_name(facet)}.png",
                known_colors,
                mine,
            )
            paths.append(str(path))
            charted.append(
                {
                    "name": name,
                    "chart": f"{kind}/{path.name}",
                    "movers": mine.head(TOP_MOVERS).to_dict("records"),
                    "more": max(0, len(mine) - TOP_MOVERS),
                }
            )
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
            correction=trend_settings.correction,
            confidence=round(100 * (1 - trend_settings.alpha)),
            top_tags=TOP_TAGS,
        )
    )
    return paths
