"""Great Expectations suites on real partitions of both backends: a good day passes and builds Data Docs;
each planted defect fails the right suite with a message naming the expectation, the rows and the numbers."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from warehouse_rows import D1, D2, catalog, load, row, tag_partition, unit

from vecflow.clean import clean_partition
from vecflow.config import settings
from vecflow.funnel import record_sql_funnel, replace_rejects, replace_stage_funnel, stage_counts
from vecflow.index.build import build_day_indexes
from vecflow.quality import SUITES, DataQualityError, check_partition

CLEAN_KEY_COLUMNS = ["image_id", "listed_date", "category", "model_version", "run_id"]
NO_REJECTS = pd.DataFrame(columns=["reason", "category"])


@pytest.fixture(autouse=True)
def model_m1(monkeypatch):
    monkeypatch.setenv("VECFLOW_MODEL_VERSION", "m1")  # the model of warehouse_rows.row()


def vector(image_id: str, **changes) -> dict:
    """A vector_log row of D1 with a well-formed content md5."""
    return row(image_id, D1, md5=hashlib.md5(image_id.encode()).hexdigest(), **changes)


def good_vectors() -> list[dict]:
    """a2 is an exact duplicate of a1 (dedup drops it); alien has a category outside the taxonomy
    (validate rejects it) but was listed as a dress."""
    return [
        vector("a1"),
        {**vector("a2"), "content_md5": vector("a1")["content_md5"]},
        vector("b1"),
        {**vector("alien", category="spaceship"), "catalog_category": "dress"},
    ]


def embed_day(warehouse, vectors: list[dict], unembedded: tuple[str, ...] = ()) -> None:
    """The catalog of D1 (the vectors' images and `unembedded` ones) and the vectors."""
    catalog(warehouse, D1, [v["image_id"] for v in vectors] + list(unembedded))
    load(warehouse, vectors, D1)


def run_good_day(warehouse) -> None:
    """Every stage of D1: a corrupt image rejected at embed, then clean, tags, day indexes and the funnel."""
    embed_day(warehouse, good_vectors(), unembedded=("corrupt",))
    listed = warehouse.table("catalog")
    replace_stage_funnel(warehouse, "catalog", D1, "run-1", stage_counts(listed, listed, NO_REJECTS))
    corrupt = {"image_id": "corrupt", "reason": "corrupt", "detail": "", "category": "dress"}
    replace_rejects(warehouse, "embed", D1, "run-1", pd.DataFrame([corrupt]))
    clean_partition(settings(), warehouse, D1, "run-1")
    tag_partition(warehouse, D1, "run-1", "m1")
    build_day_indexes(settings(), warehouse, D1, "run-1")
    record_sql_funnel(warehouse, D1, "run-1", "m1")


def rewrite_clean_partition(warehouse, change) -> None:
    """Replaces D1's vectors_clean with change(rows) of its key columns, as a broken stage would."""
    rows = change(warehouse.table("vectors_clean")[CLEAN_KEY_COLUMNS].assign(listed_date=D1))
    warehouse.run(
        "replace_partition",
        rows=rows,
        names={"table": "vectors_clean", "partition_column": "listed_date", "columns": CLEAN_KEY_COLUMNS},
        partition_value=D1,
    )


def failures(warehouse, suite: str, run_date=D1) -> tuple[str, list[str]]:
    """The DataQualityError message of checking `suite` on a day, and that suite's failed expectations."""
    with pytest.raises(DataQualityError) as failure:
        check_partition(settings(), warehouse, run_date, suites=(suite,))
    return str(failure.value), failure.value.summary[suite]["failed_expectations"]


def test_a_good_day_passes_every_suite_and_keeps_data_docs_of_every_run(warehouse):
    run_good_day(warehouse)
    summary = check_partition(settings(), warehouse, D1)
    assert list(summary) == list(SUITES)
    for name, result in summary.items():
        assert result["success"] and result["failed_expectations"] == [], (name, result)
        assert result["evaluated_expectations"] >= 2
    docs = settings().paths.reports_dir / "gx"
    assert "vector_log" in (docs / "index.html").read_text()
    pages = {name: Path(result["docs_page"]) for name, result in summary.items()}
    assert all(page.is_file() and page.is_relative_to(docs / "validations" / name) for name, page in pages.items())

    # a later check of one suite adds its page; the index still lists the earlier ones
    again = check_partition(settings(), warehouse, D1, suites=("funnel",))
    assert Path(again["funnel"]["docs_page"]) != pages["funnel"]
    assert all(page.is_file() for page in pages.values())
    index = (docs / "index.html").read_text()
    listed = [*pages.values(), Path(again["funnel"]["docs_page"])]
    assert all(page.relative_to(docs).as_posix() in index for page in listed)


def test_data_docs_index_lists_the_latest_results_and_keeps_every_page(warehouse, monkeypatch):
    """The index is bounded (rendering it reads every result it lists); older pages stay."""
    monkeypatch.setattr("vecflow.quality.DOCS_INDEX_RESULTS", 2)
    run_good_day(warehouse)
    first = check_partition(settings(), warehouse, D1, suites=("funnel",))["funnel"]["docs_page"]
    latest = [check_partition(settings(), warehouse, D1, suites=("funnel",))["funnel"]["docs_page"] for _ in range(2)]
    docs = settings().paths.reports_dir / "gx"
    index = (docs / "index.html").read_text()
    assert all(Path(page).relative_to(docs).as_posix() in index for page in latest)
    assert Path(first).relative_to(docs).as_posix() not in index and Path(first).is_file()


def test_a_suite_page_is_rendered_again_only_when_the_suite_changed(warehouse, monkeypatch):
    run_good_day(warehouse)
    page = settings().paths.reports_dir / "gx" / "expectations" / "vector_log.html"
    check_partition(settings(), warehouse, D1, suites=("vector_log",))
    rendered = page.stat().st_mtime_ns
    check_partition(settings(), warehouse, D1, suites=("vector_log",))
    assert page.stat().st_mtime_ns == rendered  # the same suite: its page kept
    monkeypatch.setenv("VECFLOW_QUALITY_MAX_BAD_VECTOR_SHARE", "0.05")  # a suite's threshold changes
    check_partition(settings(), warehouse, D1, suites=("vector_log",))
    assert page.stat().st_mtime_ns != rendered and ">95</span> % of the time" in page.read_text()


@pytest.mark.parametrize(
    "planted, unembedded, failing, named",
    [
        (
            [vector("short", embedding=unit(1, 128))],
            (),
            [
                "expect_column_values_to_be_in_set(column='dim', mostly=0.99, value_set=[256])",
                "expect_column_values_to_be_in_set(column='embedding_length', mostly=0.99, value_set=[256])",
            ],
            "image_id=short",
        ),
        (
            [vector("nan", embedding=[math.nan] + unit(2)[1:])],
            (),  # loaded as a NULL element
            ["expect_column_values_to_not_be_null(column='embedding_norm', mostly=0.99)"],
            "image_id=nan",
        ),
        (
            [vector("inf", embedding=[math.inf] + unit(4)[1:])],
            (),
            ["expect_column_values_to_be_between(column='embedding_norm', mostly=0.99, min_value=0.5, max_value=1.5)"],
            "1 of 2 rows unexpected, e.g. image_id=inf, embedding_norm=inf",
        ),
        (
            [vector("big", embedding=[3 * x for x in unit(3)])],
            (),
            ["expect_column_values_to_be_between(column='embedding_norm', mostly=0.99, min_value=0.5, max_value=1.5)"],
            # a number, compared as one: its last digits depend on the summation order
            ("1 of 2 rows unexpected, e.g. image_id=big, embedding_norm=", 3.0),
        ),
        (
            [row("plain", D1, md5="md5-plain")],
            (),
            ["expect_column_values_to_match_regex(column='content_md5'"],
            "content_md5=md5-plain",
        ),
        (
            [],
            ("lost",),
            ["expect_table_row_count_to_equal(value=2): observed 1"],
            "catalog rows (2) minus embed rejects (0)",
        ),
    ],
    ids=["wrong_dim", "nan", "inf", "norm", "md5", "row_count"],
)
def test_a_planted_bad_vector_fails_the_vector_log_suite(warehouse, planted, unembedded, failing, named):
    embed_day(warehouse, [vector("ok")] + planted, unembedded)
    message, failed = failures(warehouse, "vector_log")
    assert len(failed) == len(failing) and all(f.startswith(prefix) for f, prefix in zip(failed, failing)), failed
    assert f"vector_log suite: {failing[0]}" in message
    assert_names(message, named)


def assert_names(message: str, named) -> None:
    """`named` is text the message contains, or (text, number): the text followed by that number."""
    if isinstance(named, str):
        assert named in message, message
        return
    text, number = named
    found = re.search(re.escape(text) + r"(-?[0-9.e+-]+|inf|nan)", message)
    assert found and float(found.group(1)) == pytest.approx(number, rel=1e-9), message


@pytest.mark.parametrize(
    "change, failing, named",
    [
        (
            lambda rows: pd.concat([rows, rows[rows["image_id"] == "b1"]]),
            "expect_column_values_to_be_unique(column='image_id')",
            "2 of 3 rows unexpected, e.g. image_id=b1, category=dress",
        ),
        (
            lambda rows: pd.concat([rows, rows[rows["image_id"] == "b1"].assign(image_id="alien")]),
            "expect_column_values_to_not_be_in_set(column='image_id', value_set=['alien'])",
            "1 of 3 rows unexpected, e.g. image_id=alien",
        ),
        (
            lambda rows: rows.assign(category=rows["category"].where(rows["image_id"] != "b1", "spaceship")),
            "expect_column_values_to_be_in_set(column='category'",
            "1 of 2 rows unexpected, e.g. image_id=b1, category=spaceship",
        ),
    ],
    ids=["duplicate_id", "rejected_id", "unknown_category"],
)
def test_a_planted_bad_clean_row_fails_the_vectors_clean_suite(warehouse, change, failing, named):
    embed_day(warehouse, good_vectors())
    clean_partition(settings(), warehouse, D1, "run-1")
    assert check_partition(settings(), warehouse, D1, suites=("vectors_clean",))["vectors_clean"]["success"]
    rewrite_clean_partition(warehouse, change)
    message, failed = failures(warehouse, "vectors_clean")
    assert len(failed) == 1 and failed[0].startswith(failing), failed
    assert f"vectors_clean suite: {failed[0]}" in message and named in message


def test_a_stage_that_silently_loses_a_row_fails_the_funnel_suite(warehouse):
    run_good_day(warehouse)
    rewrite_clean_partition(warehouse, lambda rows: rows[rows["image_id"] != "b1"])
    record_sql_funnel(warehouse, D1, "run-1", "m1")
    message, failed = failures(warehouse, "funnel")
    assert len(failed) == 1 and failed[0].startswith("expect_column_values_to_be_in_set(column='balance'"), failed
    # dedup kept 1 of 3 (1 dropped as a duplicate); the day index still holds the lost row
    assert "rule=in = out + dropped, stage=dedup, category=dress, in_rows=3, out_rows=1, dropped_rows=1" in message
    assert "stage=index, category=dress, in_rows=1, out_rows=2, dropped_rows=0" in message


def test_a_stage_link_that_loses_rows_and_a_missing_funnel_fail_the_funnel_suite(warehouse):
    run_good_day(warehouse)
    listed = warehouse.table("catalog")
    handed_on = listed[listed["image_id"] != "b1"]  # the catalog stage balances, but embed got one row more
    replace_stage_funnel(warehouse, "catalog", D1, "run-1", stage_counts(handed_on, handed_on, NO_REJECTS))
    message, failed = failures(warehouse, "funnel")
    assert "rule=out = next in, stage=catalog -> embed, category=all, in_rows=5, out_rows=4" in message
    assert len(failed) == 1, failed

    _, failed = failures(warehouse, "funnel", run_date=D2)
    assert failed == [
        "expect_table_row_count_to_be_between(min_value=1): observed 0 (the funnel of the day was recorded)"
    ]


def test_unknown_suite_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown quality suite\(s\) \['vectors'\]"):
        check_partition(settings(), None, D1, suites=("vectors",))
