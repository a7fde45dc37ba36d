"""The Elasticsearch sink against the ES-compatible server (noida-db) on 127.0.0.1, with the real
elasticsearch client: template and alias, bulk, idempotent reruns, refused documents as rejects,
trend documents and facet trend aggregations that agree with the warehouse's tag_trends."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from warehouse_rows import D1, D2, catalog, load, row, tag_partition

from vecflow.clean import clean_partition
from vecflow.config import ConfigError, settings
from vecflow.search import queries
from vecflow.search.client import client_from_connection, search_client
from vecflow.search.queries import SHARE_COLUMNS, facet_tag_shares, tag_shares, trend_documents
from vecflow.search.sink import (
    SearchIndexes,
    SearchSinkError,
    delete_images,
    image_documents,
    index_partition,
    index_trends,
    trend_rows_as_documents,
)
from vecflow.summary import search_check
from vecflow.tags import compute_trends
from vecflow.taxonomy import load_taxonomy

DIMENSIONS = ["category", "color", "pattern", "style"]
pytestmark = pytest.mark.usefixtures("model_m1")


@pytest.fixture(autouse=True)
def four_dimensions(tmp_path, monkeypatch):
    """The shipped taxonomy's first four dimensions: what these tests count documents and trends of."""
    shipped = load_taxonomy().raw["dimensions"]
    path = tmp_path / "four-dimensions.json"
    path.write_text(json.dumps({"dimensions": {d: shipped[d] for d in DIMENSIONS}}))
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", str(path))


def tagged_partition(warehouse, day, rows, run_id="run-1"):
    load(warehouse, rows, day, run_id=run_id)
    clean_partition(settings(), warehouse, day, run_id)
    tag_partition(warehouse, day, run_id, "m1")


def docs_of(es, index):
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=1000, sort=[{"image_id": "asc"}])["hits"]["hits"]
    return {h["_id"]: {k: v for k, v in h["_source"].items() if k != "run_id"} for h in hits}


def test_documents_per_quarter_index_behind_an_alias_and_reruns_overwrite(warehouse, search):
    s = settings()
    indexes = SearchIndexes(s.search.index_prefix)
    # the catalog's own columns of "a" reach its document as attributes
    catalog(warehouse, D1, ["a", "b"], attributes=['{"brand": "Acme", "price": 49.5, "title": "Wool coat"}', None])
    tagged_partition(
        warehouse, D1, [row("a", D1, color="red", pattern="striped", category="coat"), row("b", D1, color="blue")]
    )
    tagged_partition(warehouse, D2, [row("c", D2, color="red")])
    for day in (D1, D2):
        stats = index_partition(search, warehouse, s, DIMENSIONS, day, "run-1")
        assert stats["refused"] == 0
    aliases = search.indices.get_alias(name=indexes.image_tags)
    assert set(aliases) == {f"{indexes.image_tags}-2026q1", f"{indexes.image_tags}-2026q2"}
    mapping = search.indices.get_mapping(index=f"{indexes.image_tags}-2026q1")
    props = next(iter(mapping.values()))["mappings"]["properties"]
    assert props["tags"]["properties"]["color"] == {"type": "keyword"}
    assert props["confidence"]["properties"]["color"] == {"type": "float"}
    before = docs_of(search, indexes.image_tags)
    assert before["a"] == {
        "image_id": "a",
        "listed_date": "2026-03-30",
        "quarter": "2026-Q1",
        "source": "shop_a",
        "model_version": "m1",
        "tags": {"category": ["coat"], "color": ["red"], "pattern": ["striped"], "style": ["outerwear"]},
        "confidence": {"category": 1.0, "color": 1.0, "pattern": 0.6, "style": 1.0},
        "tag_source": {"category": "catalog", "color": "pixels", "pattern": "pixels", "style": "rules"},
        "attributes": {"brand": "Acme", "price": 49.5, "title": "Wool coat"},
    }
    assert "attributes" not in before["b"]
    found = search.search(index=indexes.image_tags, query={"range": {"attributes.price": {"gte": 40}}})
    assert [h["_id"] for h in found["hits"]["hits"]] == ["a"]
    # a rerun of D1 by another run overwrites the same ids: same documents, same count
    index_partition(search, warehouse, s, DIMENSIONS, D1, "run-2")
    assert docs_of(search, indexes.image_tags) == before
    # an image gone from the partition (deduplicated since) leaves the index on the next run
    tagged_partition(
        warehouse,
        D1,
        [row("a", D1, color="red", pattern="striped", category="coat", run_id="run-3", at="2026-05-03T00:00:00Z")],
        run_id="run-3",
    )
    assert index_partition(search, warehouse, s, DIMENSIONS, D1, "run-3")["stale_deleted"] == 1
    assert set(docs_of(search, indexes.image_tags)) == {"a", "c"}


@pytest.mark.unit
def test_image_documents_one_per_image_with_every_tag_of_a_multi_label_dimension():
    def row(image_id, dimension=None, tag=None, confidence=None, tag_source=None, attributes=None):
        return {
            "image_id": image_id,
            "listed_date": pd.Timestamp(D1),
            "source": "shop_a",
            "predicted_category": "coat",
            "model_version": "m1",
            "attributes": attributes,
            "embedding": [0.5, 0.25],
            "dimension": dimension,
            "tag": tag,
            "confidence": confidence,
            "tag_source": tag_source,
        }

    rows = pd.DataFrame(
        [
            row("b", "occasion", "party", None, "catalog", '{"brand": "x"}'),
            row("a", "color", "red", 0.7, "pixels"),
            row("b", "occasion", "work", float("nan"), "catalog", '{"brand": "x"}'),
            row("a", "color", "blue", 0.9, "pixels"),
            row("c"),  # no tag rows
        ]
    )
    docs = image_documents(rows, "run-1")
    assert [d["image_id"] for d in docs] == ["a", "b", "c"]
    a, b, c = docs
    assert a["tags"] == {"color": ["red", "blue"]} and a["confidence"] == {"color": 0.9}
    assert a["tag_source"] == {"color": "pixels"} and "attributes" not in a
    assert b["tags"] == {"occasion": ["party", "work"]} and b["confidence"] == {} and b["attributes"] == {"brand": "x"}
    assert c["tags"] == {} and c["embedding"] == [0.5, 0.25] and c["_category"] == "coat"
    assert (a["listed_date"], a["quarter"], a["run_id"]) == (D1.isoformat(), "2026-Q1", "run-1")


def test_refused_documents_become_rejects_and_fail_past_the_error_rate(warehouse, search, monkeypatch):
    monkeypatch.setenv("VECFLOW_ES_CHUNK_SIZE", "1")  # a request a document: both bulk streams have some
    s = settings()
    assert s.search.bulk_threads == 2
    # someone created this quarter's index by hand with `source` as a number: a mapping conflict
    search.indices.create(
        index=SearchIndexes(s.search.index_prefix).image_tags_of(D1),
        mappings={"properties": {"source": {"type": "long"}}},
    )
    rows = [row("ok", D1), row("bad1", D1), row("bad2", D1)]
    rows[0]["source"] = "42"
    tagged_partition(warehouse, D1, rows)
    with pytest.raises(SearchSinkError, match=r"refused 2 of 3 documents .* rejects, stage 'search'"):
        index_partition(search, warehouse, s, DIMENSIONS, D1, "run-1")
    rejects = warehouse.table("rejects").query("stage == 'search'")
    assert sorted(rejects["image_id"]) == ["bad1", "bad2"]
    assert set(rejects["reason"]) == {"es_document_parsing_exception"}
    assert rejects["detail"].str.contains("failed to parse field \\[source\\]").all()
    funnel = warehouse.table("funnel_metrics").query("stage == 'search'")
    assert dict(zip(funnel["metric"], funnel["value"])) == {
        "in": 3,
        "out": 1,
        "dropped.es_document_parsing_exception": 2,
    }
    # a tolerated error rate writes the same rejects and lets the task pass
    monkeypatch.setenv("VECFLOW_ES_MAX_ERROR_RATE", "0.9")
    assert index_partition(search, warehouse, settings(), DIMENSIONS, D1, "run-2")["refused"] == 2
    assert len(warehouse.table("rejects").query("stage == 'search'")) == 2


D3 = dt.date(2026, 5, 4)  # a second month in D2's quarter
FACET_DAYS = (D1, D2, D3)  # months 2026-03, -04, -05; quarters 2026-Q1, -Q2
FACET_KINDS = {"", "category", "source", "category,source"}  # the whole catalog and VECFLOW_TREND_FACETS' default


def facet_catalog(warehouse) -> None:
    """Nine images a day over two categories and two sources, colour and pattern mixed differently
    per day and per facet (shop_b's dresses turn blue), tagged on the three days."""
    for day in FACET_DAYS:
        rows = []
        for i in range(9):
            category, source = ("dress", "coat")[i % 2], ("shop_a", "shop_b")[i // 2 % 2]
            color = ("red", "blue", "black")[(i + day.month) % 3]
            if source == "shop_b" and category == "dress" and day != D1:
                color = "blue"
            image = row(
                f"{day:%m%d}-{i}", day, category=category, color=color, pattern=("solid", "striped")[i % 3 == 0]
            )
            image["source"] = source
            rows.append(image)
        tagged_partition(warehouse, day, rows)


def facet_trends(warehouse, search, s) -> pd.DataFrame:
    """facet_catalog through the sink and compute_trends; the tag_trends table."""
    facet_catalog(warehouse)
    for day in FACET_DAYS:
        assert index_partition(search, warehouse, s, DIMENSIONS, day, "run-1")["refused"] == 0
    compute_trends(warehouse, s.trends, load_taxonomy())
    return warehouse.table("tag_trends")


def test_facet_tag_shares_equal_the_warehouse_trends_per_facet_period_and_tag(warehouse, search):
    s = settings()
    trends = facet_trends(warehouse, search, s)
    # Elasticsearch has no bucket for a tag no image has: the warehouse's rows with images
    expected = trends.loc[trends["tag_count"] > 0, SHARE_COLUMNS]
    assert set(expected["facet_keys"]) == FACET_KINDS and set(expected["period_kind"]) == {"month", "quarter"}
    assert set(expected["period"]) == {"2026-03", "2026-04", "2026-05", "2026-Q1", "2026-Q2"}
    assert expected.query("facet_keys == 'category,source'")["facet"].nunique() == 4
    kinds = expected[["period_kind", "facet_keys", "dimension"]].drop_duplicates()
    found = pd.concat(
        facet_tag_shares(search, s.search.index_prefix, dimension, kind, keys.split(",") if keys else ())
        for kind, keys, dimension in kinds.itertuples(index=False)
    )
    assert len(kinds) == 2 * (4 + 2 + 4 + 2)  # per period kind: dimensions trended in each facet kind
    key = ["period_kind", "period", "facet_keys", "facet", "dimension", "tag"]
    merged = expected.merge(found, on=key, how="outer", suffixes=("_warehouse", "_search"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    assert len(merged) == len(expected) > 250
    assert (merged["tag_count_warehouse"] == merged["tag_count_search"]).all()
    assert merged["share_search"].tolist() == pytest.approx(merged["share_warehouse"].tolist())
    # one facet by filter: shop_b's dresses per month, blue from April on
    one = tag_shares(search, s.search.index_prefix, "color", "month", {"source": "shop_b", "category": "dress"})
    warehouse_rows = expected.query("period_kind == 'month' and facet == 'category=dress,source=shop_b'")
    warehouse_rows = warehouse_rows.query("dimension == 'color'").sort_values(["period", "tag"])
    assert one[["period", "facet_keys", "tag", "tag_count"]].values.tolist() == (
        warehouse_rows[["period", "facet_keys", "tag", "tag_count"]].values.tolist()
    )
    assert one["share"].tolist() == pytest.approx(warehouse_rows["share"].tolist())
    assert one.query("period != '2026-03'")[["period", "tag", "share"]].values.tolist() == [
        ["2026-04", "blue", 1.0],
        ["2026-05", "blue", 1.0],
    ]
    # the whole catalog by quarter: the same as its facet-kind form
    catalog_rows = tag_shares(search, s.search.index_prefix, "pattern")
    assert catalog_rows.equals(facet_tag_shares(search, s.search.index_prefix, "pattern", "quarter"))
    assert catalog_rows[["period", "facet", "tag", "tag_count"]].values.tolist() == [
        ["2026-Q1", "", "solid", 6],
        ["2026-Q1", "", "striped", 3],
        ["2026-Q2", "", "solid", 12],
        ["2026-Q2", "", "striped", 6],
    ]


def test_trend_documents_are_the_tag_trends_rows_facets_included(warehouse, search, monkeypatch):
    s = settings()
    indexes = SearchIndexes(s.search.index_prefix)
    trends = facet_trends(warehouse, search, s)
    # an index left by the quarter-only version (its template's strict mapping has no facet): written anew
    search.indices.put_index_template(
        name=indexes.tag_trends,
        index_patterns=[indexes.tag_trends],
        priority=100,
        template={"mappings": {"dynamic": "strict", "properties": {"quarter": {"type": "keyword"}}}},
    )
    search.indices.create(index=indexes.tag_trends)
    for run_id in ("trends-1", "trends-2"):  # rerun: the same ids, nothing stale
        stats = index_trends(search, warehouse, s, DIMENSIONS, run_id)
    assert (stats["documents"], stats["stale_deleted"]) == (len(trends), 0)
    mapping = next(iter(search.indices.get_mapping(index=indexes.tag_trends).values()))["mappings"]["properties"]
    assert set(mapping) == {*trends.columns, "run_id"}
    assert mapping["facet"] == {"type": "keyword"} and mapping["partial"] == {"type": "boolean"}
    monkeypatch.setattr(queries, "PAGE_SIZE", 100)  # several pages
    docs = trend_documents(search, s.search.index_prefix)
    key = ["period_kind", "period", "facet", "dimension", "tag"]
    assert len(docs) == len(trends) > 700 and not docs.duplicated(key).any()
    expected = pd.DataFrame(trend_rows_as_documents(trends, "trends-2"))
    docs, expected = (f.sort_values(key).reset_index(drop=True)[sorted(expected.columns)] for f in (docs, expected))
    pd.testing.assert_frame_equal(docs, expected, check_dtype=False)
    assert expected["partial"].isin([True, False]).all() and expected["previous_share"].isna().any()
    assert set(docs["facet_keys"]) == FACET_KINDS
    # filters: a period kind, a facet (as a string or as keys and values), a facet kind
    dresses = trend_documents(search, s.search.index_prefix, period_kind="quarter", facet={"category": "dress"})
    assert sorted(dresses["period"].unique()) == ["2026-Q1", "2026-Q2"] and set(dresses["facet"]) == {"category=dress"}
    assert len(dresses) == len(trends.query("period_kind == 'quarter' and facet == 'category=dress'"))
    pairs = trend_documents(search, s.search.index_prefix, period="2026-05", facet_keys=("source", "category"))
    assert len(pairs) == len(trends.query("period == '2026-05' and facet_keys == 'category,source'")) > 0
    assert len(trend_documents(search, s.search.index_prefix, facet="")) == len(trends.query("facet == ''"))
    # biggest movers first
    assert pd.to_numeric(dresses["share_change"]).abs().fillna(0).is_monotonic_decreasing
    # fewer facets configured: the rows gone leave the index
    monkeypatch.setenv("VECFLOW_TREND_FACETS", "category")
    compute_trends(warehouse, settings().trends, load_taxonomy())
    stats = index_trends(search, warehouse, settings(), DIMENSIONS, "trends-3")
    assert stats["stale_deleted"] == len(trends) - stats["documents"] > 0
    assert set(trend_documents(search, s.search.index_prefix)["facet_keys"]) == {"", "category"}


def test_search_check_compares_every_period_and_facet_kind_less_the_delisted(warehouse, search):
    from vecflow.lifecycle import DELISTING_COLUMNS, record_delistings

    s = settings()
    # one of shop_b's dresses of D2 is delisted: no document, while tag_trends still counts it
    gone = f"{D2:%m%d}-2"
    delisting = {"image_id": gone, "delisted_at": pd.Timestamp("2026-04-03", tz="UTC"), "reason": "sold_out"}
    delisting |= {"partition_date": D2, "origin": "feed", "run_id": "run-1", "recorded_at": delisting["delisted_at"]}
    record_delistings(warehouse, D2, "feed", pd.DataFrame([delisting])[DELISTING_COLUMNS])
    trends = facet_trends(warehouse, search, s)
    index_trends(search, warehouse, s, DIMENSIONS, "trends-1")
    assert search.count(index=SearchIndexes(s.search.index_prefix).image_tags)["count"] == 26
    check = search_check(search, s, warehouse, trends, DIMENSIONS)
    assert check["facet_kinds"] == ["(catalog)", "category", "source", "category+source"]
    assert check["period_kinds"] == ["month", "quarter"]
    assert (check["image_documents"], check["trend_documents"]) == (26, len(trends))
    assert check["tag_counts_differing"] == 0
    # the delisted dress was the only plain (solid) one of shop_b in April: that row has no count left
    assert check["tag_counts_compared"] == (trends["tag_count"] > 0).sum() - 1
    # a document gone without a delisting: each of its tags differs in every period and facet kind
    assert delete_images(search, SearchIndexes(s.search.index_prefix), [f"{D2:%m%d}-1"]) == 1
    # catalog and source facets: 4 dimensions; category facets: colour and pattern; x month, quarter
    assert search_check(search, s, warehouse, trends, DIMENSIONS)["tag_counts_differing"] == (4 + 2 + 4 + 2) * 2


def test_connection_settings_and_errors(monkeypatch):
    from airflow.sdk import Connection

    def conn(**fields):
        extra = fields.pop("extra", {})
        return Connection(conn_id="es", conn_type="elasticsearch", extra=json.dumps(extra), **fields)

    basic = client_from_connection(
        conn(
            host="es.internal",
            port=9243,
            schema="https",
            login="elastic",
            password="secret",
            extra={"ca_certs": __file__},
        )
    )
    node = basic.transport.node_pool.all()[0].config
    assert (node.scheme, node.host, node.port, node.verify_certs) == ("https", "es.internal", 9243, True)
    assert basic._headers["authorization"].startswith("Basic ")
    keyed = client_from_connection(conn(host="es.internal", extra={"api_key": "k3y", "verify_certs": "false"}))
    assert keyed._headers["authorization"] == "ApiKey k3y"
    with pytest.raises(ConfigError, match="schema must be http or https"):
        client_from_connection(conn(host="es.internal", schema="ftp"))
    with pytest.raises(ConfigError, match="no host"):
        client_from_connection(conn(host=""))
    monkeypatch.delenv("AIRFLOW_CONN_NOT_THERE", raising=False)
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_NOT_THERE .* VECFLOW_SEARCH_SINK=none"):
        search_client("not_there")


@pytest.mark.integration  # starts search servers itself
def test_a_server_orphaned_by_a_killed_run_is_replaced(tmp_path):
    import subprocess
    import urllib.request

    from waiting import wait_until

    from vecflow.demo.search_server import LocalSearchServer, free_port, server_command

    orphan_port = free_port()
    orphan = subprocess.Popen(
        server_command(orphan_port, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def orphan_serves() -> bool:
        """The orphan holds the data directory once it answers, so the new server meets it."""
        assert orphan.poll() is None, f"the orphan server exited {orphan.returncode} before it answered"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{orphan_port}", timeout=2).close()
            return True
        except OSError:
            return False

    try:
        wait_until(orphan_serves, timeout=30, what=f"the orphan server to answer on port {orphan_port}")
        with LocalSearchServer(tmp_path) as server:
            from elasticsearch import Elasticsearch

            assert Elasticsearch(server.url).info()["version"]["number"].startswith("8.")
            assert orphan.wait(timeout=10) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_vectors_go_in_as_dense_vector_when_asked_and_answer_knn(warehouse, search, monkeypatch):
    monkeypatch.setenv("VECFLOW_ES_INDEX_VECTORS", "true")
    s = settings()
    rows = [row("a", D1), row("b", D1), row("c", D1)]
    tagged_partition(warehouse, D1, rows)
    index_partition(search, warehouse, s, DIMENSIONS, D1, "run-1")
    index = SearchIndexes(s.search.index_prefix).image_tags
    mapping = next(iter(search.indices.get_mapping(index=f"{index}-2026q1").values()))["mappings"]["properties"]
    # the server adds its default index_options (int8_hnsw, as Elasticsearch 8 does)
    assert {k: mapping["embedding"][k] for k in ("type", "dims", "similarity")} == {
        "type": "dense_vector",
        "dims": 256,
        "similarity": "cosine",
    }
    search.indices.refresh(index=index)
    hits = search.search(
        index=index, knn={"field": "embedding", "query_vector": rows[1]["embedding"], "k": 1, "num_candidates": 10}
    )["hits"]["hits"]
    assert hits[0]["_id"] == "b"
