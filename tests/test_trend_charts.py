"""The trends page and the run report's share charts: a dimension of hundreds of tags shows its movers
and its largest tags, the rest folded into one "other" series."""

from __future__ import annotations

import pandas as pd
import pytest

from vecflow.run_report import _tag_shares
from vecflow.trend_charts import TOP_TAGS, folded_shares, share_figure


def _brand_rows(brands: int = 300) -> pd.DataFrame:
    """tag_trends rows of the whole catalog: `brands` brands over two quarters, brand i's share falling
    with i (Zipf-like); the smallest (b299 of 300) gains a point in the second."""
    weights = pd.Series([1 / (i + 1) for i in range(brands)], index=[f"b{i:03d}" for i in range(brands)])
    rows = []
    for period in ("2026-Q1", "2026-Q2"):
        shares = weights / weights.sum()
        if period == "2026-Q2":
            shares = shares.copy()
            shares.iloc[-1] += 0.01
            shares /= shares.sum()
        rows += [
            {
                "period_kind": "quarter",
                "period": period,
                "partial": False,
                "facet": "",
                "dimension": "brand",
                "tag": tag,
                "share": share,
            }
            for tag, share in shares.items()
        ]
    return pd.DataFrame(rows)


MOVERS = pd.DataFrame(
    [{"period_kind": "quarter", "period": "2026-Q2", "facet": "", "dimension": "brand", "tag": "b299", "mover_rank": 1}]
)


def test_a_300_tag_dimension_draws_top_n_and_other():
    rows = _brand_rows()
    fig = share_figure(rows, "brands", movers=MOVERS)
    bars, donut = fig.axes[:2]
    assert len(bars.containers) == TOP_TAGS + 1  # one bar series per shown tag, one for the others
    assert len(donut.patches) == TOP_TAGS + 1
    legend = [text.get_text() for text in bars.get_legend().get_texts()]
    # the mover first whatever its share, then the largest brands, then the other 290
    assert legend == ["b299", *[f"b{i:03d}" for i in range(TOP_TAGS - 1)], f"other ({300 - TOP_TAGS} tags)"]
    shares = folded_shares(rows, MOVERS)
    assert shares.sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0])  # nothing lost in the fold
    # the run report's HTML charts fold the same way
    [chart] = _tag_shares(rows, MOVERS)
    assert [item["tag"] for item in chart["legend"]] == legend
    assert len(chart["periods"][-1]["segments"]) == TOP_TAGS + 1


def test_a_small_dimension_is_drawn_whole_and_the_fold_is_a_setting():
    rows = _brand_rows(brands=6)
    fig = share_figure(rows, "few brands")
    assert len(fig.axes[0].containers) == 6  # no "other" when every tag fits
    assert list(folded_shares(_brand_rows(), top=3).columns) == ["b000", "b001", "b002", "other (297 tags)"]


def test_multi_label_shares_stack_past_one():
    rows = pd.DataFrame(
        [
            {
                "period_kind": "quarter",
                "period": p,
                "partial": False,
                "facet": "",
                "dimension": "occasion",
                "tag": tag,
                "share": share,
            }
            for p in ("2026-Q1", "2026-Q2")
            for tag, share in (("party", 1.0), ("work", 0.25))
        ]
    )
    bars = share_figure(rows, "occasions").axes[0]
    assert bars.get_ylim()[1] == pytest.approx(1.25)  # per image: an image counts under each of its tags
