"""The Elasticsearch sink against the ES-compatible server (noida-db) on 127.0.0.1, with the real
elasticsearch client: template and alias, bulk, idempotent reruns, refused documents as rejects,
and trend aggregations that agree with the warehouse."""

from __future__ import annotations

import json

import pytest
from warehouse_rows import D1, D2, catalog, load, row

from vecflow.clean import clean_partition
from vecflow.config import ConfigError, settings
from vecflow.search.client import client_from_connection, search_client
from vecflow.search.queries import quarterly_tag_shares, trend_documents
from vecflow.search.sink import SearchIndexes, SearchSinkError, index_partition, index_trends
from vecflow.tags import compute_trends, tag_partition
from vecflow.taxonomy import load_taxonomy

DIMENSIONS = load_taxonomy().dimensions
pytestmark = pytest.mark.usefixtures("model_m1")


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
        "confidence": {"category": 0.95, "color": 0.9, "pattern": 0.8, "style": 0.95},
        "tag_source": {"category": "model", "color": "pixels", "pattern": "pixels", "style": "derived"},
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


def test_refused_documents_become_rejects_and_fail_past_the_error_rate(warehouse, search, monkeypatch):
    s = settings()
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


def test_trend_documents_and_search_aggregations_agree_with_the_warehouse(warehouse, search):
    s = settings()
    tagged_partition(warehouse, D1, [row(f"q1-{i}", D1, pattern="striped" if i < 1 else "solid") for i in range(4)])
    tagged_partition(warehouse, D2, [row(f"q2-{i}", D2, pattern="striped" if i < 3 else "solid") for i in range(5)])
    for day in (D1, D2):
        index_partition(search, warehouse, s, DIMENSIONS, day, "run-1")
    compute_trends(warehouse, flat_threshold=0.02)
    for run_id in ("trends-1", "trends-2"):  # rerun: same documents
        stats = index_trends(search, warehouse, s, DIMENSIONS, run_id)
    trends = warehouse.table("tag_trends")
    assert stats["documents"] == len(trends) == len(trend_documents(search, s.search.index_prefix))
    shares = quarterly_tag_shares(search, s.search.index_prefix, "pattern")
    assert shares[["quarter", "tag", "count"]].values.tolist() == [
        ["2026-Q1", "solid", 3],
        ["2026-Q1", "striped", 1],
        ["2026-Q2", "solid", 2],
        ["2026-Q2", "striped", 3],
    ]
    assert shares["share"].tolist() == pytest.approx([0.75, 0.25, 0.4, 0.6])
    docs = trend_documents(search, s.search.index_prefix, quarter="2026-Q2").set_index(["dimension", "tag"])
    assert docs.loc[("pattern", "striped"), "direction"] == "rising"
    assert docs.loc[("pattern", "striped"), "share_change"] == pytest.approx(0.35)


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
