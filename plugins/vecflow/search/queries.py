"""Trend queries on the Elasticsearch side, for dashboards (Kibana or any client) and for checking
that the search sink and the warehouse say the same thing. Filters, terms and date_histogram
aggregations only, so any Elasticsearch 8 (and the loopback stand-in, which has no pipeline or
composite aggregations) answers them: shares are computed here from the bucket counts.

A facet is a condition on the image, as in the warehouse's tag_trends: `source` or a tag dimension
(`category`), written `category=dress,source=shop_b` with its keys sorted; '' is the whole catalog."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping

import pandas as pd

from vecflow.search.sink import SearchIndexes, period_label

MAX_TERMS = 10_000  # buckets per terms aggregation: tags of a dimension, values of a facet key
# trend documents per request: as many as Elasticsearch answers at once (10,000), since every page
# sorts the whole index again (with 81k documents, 17 pages of 5,000 took 46 s on the loopback server)
PAGE_SIZE = 10_000
PERIOD_KINDS = ("month", "quarter")
SHARE_COLUMNS = ["period_kind", "period", "facet_keys", "facet", "dimension", "tag", "tag_count", "share"]
TREND_SORT = [{"period_kind": "asc"}, {"period": "asc"}, {"facet": "asc"}, {"dimension": "asc"}, {"tag": "asc"}]


def facet_field(key: str) -> str:
    """The image document's field a facet key filters on: `source`, or the tags of a dimension."""
    return "source" if key == "source" else f"tags.{key}"


def facet_label(values: Mapping[str, str]) -> str:
    """{'source': 'shop_b', 'category': 'dress'} -> 'category=dress,source=shop_b' (tag_trends.facet)."""
    return ",".join(f"{key}={values[key]}" for key in sorted(values))


def facet_labels(frame: pd.DataFrame, keys: Iterable[str]) -> pd.Series:
    """facet_label of every row of `frame` over its `keys` columns, column by column."""
    ordered = sorted(keys)
    labels = ordered[0] + "=" + frame[ordered[0]].astype(str)
    for key in ordered[1:]:
        labels = labels + f",{key}=" + frame[key].astype(str)
    return labels


def _period_histogram(period_kind: str, dimension: str) -> dict:
    if period_kind not in PERIOD_KINDS:
        raise ValueError(f"period_kind {period_kind!r}: use one of {PERIOD_KINDS}")
    return {
        "date_histogram": {"field": "listed_date", "calendar_interval": period_kind, "min_doc_count": 1},
        "aggs": {"tag": {"terms": {"field": f"tags.{dimension}", "size": MAX_TERMS}}},
    }


def _period_counts(histogram: dict, period_kind: str) -> Iterator[tuple[str, str, int]]:
    """(period, tag, images) from a date_histogram with the dimension's terms inside."""
    for bucket in histogram["buckets"]:
        start = dt.date.fromisoformat(bucket["key_as_string"][:10])
        for tag in bucket["tag"]["buckets"]:
            yield period_label(start, period_kind), tag["key"], tag["doc_count"]


def _shares(rows: Iterable[tuple]) -> pd.DataFrame:
    """Share of each tag among the images with a tag in the dimension, per period and facet: a
    dimension holds one tag per image, so that is the tag's count over the sum of the counts."""
    frame = pd.DataFrame(list(rows), columns=SHARE_COLUMNS[:-1]).astype({"tag_count": "int64"})
    frame["share"] = frame["tag_count"] / frame.groupby(["period", "facet", "dimension"])["tag_count"].transform("sum")
    return frame.sort_values(["period", "facet", "tag"]).reset_index(drop=True)


def tag_shares(
    es, prefix: str, dimension: str, period_kind: str = "quarter", facet: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Per period (of listed_date) and tag of one dimension, within one facet (all images when none):
    image count and share, columns as tag_trends (SHARE_COLUMNS). The request, as a dashboard sends it
    for `tag_shares(es, prefix, "color", "month", {"category": "dress"})`:

        GET <prefix>-image-tags/_search
        {"size": 0, "query": {"bool": {"filter": [{"term": {"tags.category": "dress"}}]}},
         "aggs": {"period": {"date_histogram": {"field": "listed_date", "calendar_interval": "month"},
                  "aggs": {"tag": {"terms": {"field": "tags.color", "size": 10000}}}}}}
    """
    facet = dict(facet or {})
    filters = [{"term": {facet_field(key): value}} for key, value in sorted(facet.items())]
    response = es.search(
        index=SearchIndexes(prefix).image_tags,
        size=0,
        query={"bool": {"filter": filters}} if filters else {"match_all": {}},
        aggs={"period": _period_histogram(period_kind, dimension)},
    )
    keys, label = ",".join(sorted(facet)), facet_label(facet)
    return _shares(
        (period_kind, period, keys, label, dimension, tag, count)
        for period, tag, count in _period_counts(response["aggregations"]["period"], period_kind)
    )


def facet_tag_shares(
    es, prefix: str, dimension: str, period_kind: str = "quarter", facet_keys: Iterable[str] = ()
) -> pd.DataFrame:
    """tag_shares for every facet of the keys at once (every category x source, say): one request,
    a terms aggregation per key (an image without a value of a key is in none of its facets), the
    date_histogram and the dimension's terms inside:

        {"size": 0, "aggs": {"facet_0": {"terms": {"field": "tags.category", "size": 10000},
          "aggs": {"facet_1": {"terms": {"field": "source", "size": 10000},
            "aggs": {"period": {"date_histogram": ..., "aggs": {"tag": {"terms": ...}}}}}}}}}
    """
    keys = sorted(facet_keys)
    aggs = {"period": _period_histogram(period_kind, dimension)}
    for level in reversed(range(len(keys))):
        aggs = {f"facet_{level}": {"terms": {"field": facet_field(keys[level]), "size": MAX_TERMS}, "aggs": aggs}}
    response = es.search(index=SearchIndexes(prefix).image_tags, size=0, aggs=aggs)

    def rows(aggregations: dict, values: dict) -> Iterator[tuple]:
        if len(values) == len(keys):
            label = facet_label(values)
            for period, tag, count in _period_counts(aggregations["period"], period_kind):
                yield period_kind, period, ",".join(keys), label, dimension, tag, count
            return
        key = keys[len(values)]
        for bucket in aggregations[f"facet_{len(values)}"]["buckets"]:
            yield from rows(bucket, {**values, key: bucket["key"]})

    return _shares(rows(response["aggregations"], {}))


def trend_documents(
    es,
    prefix: str,
    period_kind: str | None = None,
    period: str | None = None,
    facet: str | Mapping[str, str] | None = None,
    facet_keys: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """The tag-trends documents (all, or those of a period kind, a period, a facet — 'category=dress'
    or {'category': 'dress'}, '' or {} for the whole catalog — or a facet kind), biggest movers first."""
    if facet is not None and not isinstance(facet, str):
        facet = facet_label(facet)
    if facet_keys is not None and not isinstance(facet_keys, str):
        facet_keys = ",".join(sorted(facet_keys))
    wanted = {"period_kind": period_kind, "period": period, "facet": facet, "facet_keys": facet_keys}
    filters = [{"term": {field: value}} for field, value in wanted.items() if value is not None]
    query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
    hits: list[dict] = []
    after = None
    while True:  # pages in a stable order (the id's fields), so every document comes once
        page = es.search(
            index=SearchIndexes(prefix).tag_trends,
            query=query,
            size=PAGE_SIZE,
            sort=TREND_SORT,
            **({"search_after": after} if after else {}),
        )["hits"]["hits"]
        hits.extend(hit["_source"] for hit in page)
        if len(page) < PAGE_SIZE:
            break
        after = page[-1]["sort"]
    frame = pd.DataFrame(hits)
    if frame.empty:
        return frame
    # share_change is null in a first period (all null with one period: an object column)
    return frame.sort_values(
        "share_change", key=lambda s: pd.to_numeric(s).abs().fillna(0), ascending=False, kind="stable"
    ).reset_index(drop=True)
