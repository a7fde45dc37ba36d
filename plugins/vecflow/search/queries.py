"""Trend queries on the Elasticsearch side, for dashboards (Kibana or any client) and for checking
that the search sink and the warehouse say the same thing. Terms and date_histogram aggregations
only, so any Elasticsearch 8 (and the loopback stand-in) answers them."""

from __future__ import annotations

import pandas as pd

from vecflow.search.sink import SearchIndexes

MAX_TAGS_PER_DIMENSION = 10_000


def quarterly_tag_shares(es, prefix: str, dimension: str) -> pd.DataFrame:
    """Per quarter (of listed_date) and tag of one dimension: image count and share within the
    dimension. The request, as a dashboard would send it:

        GET <prefix>-image-tags/_search
        {"size": 0, "aggs": {"quarter": {"date_histogram": {"field": "listed_date", "calendar_interval": "quarter"},
                             "aggs": {"tag": {"terms": {"field": "tags.<dimension>", "size": 10000}}}}}}
    """
    response = es.search(
        index=SearchIndexes(prefix).image_tags,
        size=0,
        aggs={
            "quarter": {
                "date_histogram": {"field": "listed_date", "calendar_interval": "quarter", "min_doc_count": 1},
                "aggs": {"tag": {"terms": {"field": f"tags.{dimension}", "size": MAX_TAGS_PER_DIMENSION}}},
            }
        },
    )
    rows = []
    for bucket in response["aggregations"]["quarter"]["buckets"]:
        start = pd.Timestamp(bucket["key_as_string"][:10])
        quarter = f"{start.year}-Q{(start.month - 1) // 3 + 1}"
        for tag in bucket["tag"]["buckets"]:
            rows.append({"quarter": quarter, "dimension": dimension, "tag": tag["key"], "count": tag["doc_count"]})
    frame = pd.DataFrame(rows, columns=["quarter", "dimension", "tag", "count"])
    frame["share"] = frame["count"] / frame.groupby("quarter")["count"].transform("sum")
    return frame.sort_values(["quarter", "tag"]).reset_index(drop=True)


def trend_documents(es, prefix: str, quarter: str | None = None) -> pd.DataFrame:
    """The tag-trends documents (all quarters, or one), biggest movers first."""
    query = {"term": {"quarter": quarter}} if quarter else {"match_all": {}}
    response = es.search(
        index=SearchIndexes(prefix).tag_trends,
        query=query,
        size=10_000,
        sort=[{"quarter": "asc"}, {"dimension": "asc"}, {"tag": "asc"}],
    )
    frame = pd.DataFrame([hit["_source"] for hit in response["hits"]["hits"]])
    if frame.empty:
        return frame
    # share_change is null in the first quarter (all null with one quarter: an object column)
    return frame.sort_values(
        "share_change", key=lambda s: pd.to_numeric(s).abs().fillna(0), ascending=False
    ).reset_index(drop=True)
