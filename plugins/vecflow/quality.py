"""Data quality: Great Expectations suites as code for a partition's vector_log, vectors_clean and funnel.

Each suite validates a pandas dataframe read per partition through the warehouse's SQL files, so both
backends are checked the same way (GX's SQL datasource gives wrong results on DuckDB). Every run adds
its pages to the Data Docs site in reports/gx/ (suites and results as JSON in reports/gx/stores/, from
which the index is rebuilt). GX is imported inside functions: it takes seconds to import, and DAG
files must parse fast.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vecflow.clean import MAX_NORM, MIN_NORM

SUITES = ("vector_log", "vectors_clean", "funnel")
DOCS_SITE = "vecflow"
MD5_PATTERN = r"^[0-9a-f]{32}$"
SHOWN_ROWS = 5  # failing rows named per expectation, in messages and Data Docs
# the Data Docs index lists the latest results (30 partitions' worth): rendering it reads every result
# it lists, so an unbounded index made each day's check slower than the last; every result keeps its
# own page, linked from its partition's run report
DOCS_INDEX_RESULTS = 30 * len(SUITES)


class DataQualityError(AssertionError):
    """A partition breaks a suite; the message names the suite, the expectation, the rows and the numbers."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class SuiteInput:
    """What a suite validates: a dataframe, the expectations, and the columns that name a failing row."""

    frame: pd.DataFrame
    expectations: list
    row_key: list[str]


def vector_log_suite(
    vectors: pd.DataFrame,
    catalog_rows: int,
    embed_rejects: int,
    expected_dim: int,
    max_bad_share: float = 0.01,
) -> SuiteInput:
    """`vectors`: image_id, content_md5, dim, embedding_length and embedding_norm of the day's vectors (a
    null norm for a missing embedding or one holding a NaN or NULL, inf for one holding an infinity).
    Up to `max_bad_share` of them may have a wrong dimension or norm: validate rejects those with a
    reason; more means a broken model or entrypoint, and the suite fails."""
    import great_expectations as gx

    expect = gx.expectations
    mostly = 1.0 - max_bad_share
    return SuiteInput(
        vectors,
        [
            expect.ExpectTableRowCountToEqual(
                value=catalog_rows - embed_rejects,
                notes=f"catalog rows ({catalog_rows}) minus embed rejects ({embed_rejects}) of the day",
            ),
            expect.ExpectColumnValuesToNotBeNull(column="image_id"),
            expect.ExpectColumnValuesToBeUnique(column="image_id"),
            expect.ExpectColumnValuesToNotBeNull(column="dim"),
            expect.ExpectColumnValuesToBeInSet(column="dim", value_set=[expected_dim], mostly=mostly),
            expect.ExpectColumnValuesToBeInSet(column="embedding_length", value_set=[expected_dim], mostly=mostly),
            # range checks skip nulls, so a norm that is not finite fails one of these two
            expect.ExpectColumnValuesToNotBeNull(column="embedding_norm", mostly=mostly),
            expect.ExpectColumnValuesToBeBetween(
                column="embedding_norm", min_value=MIN_NORM, max_value=MAX_NORM, mostly=mostly
            ),
            expect.ExpectColumnValuesToMatchRegex(column="content_md5", regex=MD5_PATTERN),
        ],
        ["image_id"],
    )


def read_vector_log(
    warehouse, run_date: dt.date, model_version: str, expected_dim: int, max_bad_share: float = 0.01
) -> SuiteInput:
    vectors = warehouse.query("select_quality_vector_log", run_date=run_date, model_version=model_version)
    owed = warehouse.query("select_quality_expected_vectors", run_date=run_date).iloc[0]
    return vector_log_suite(vectors, int(owed["catalog_rows"]), int(owed["embed_rejects"]), expected_dim, max_bad_share)


def read_vectors_clean(warehouse, run_date: dt.date, model_version: str) -> SuiteInput:
    import great_expectations as gx

    clean = warehouse.query("select_quality_vectors_clean", run_date=run_date, model_version=model_version)
    rejected = warehouse.query("select_quality_rejected_ids", run_date=run_date, stage="validate")
    taxonomy = warehouse.table("taxonomy")
    categories = sorted(taxonomy.loc[taxonomy["dimension"] == "category", "tag"])
    expect = gx.expectations
    return SuiteInput(
        clean,
        [
            expect.ExpectColumnValuesToBeUnique(column="image_id"),
            expect.ExpectColumnValuesToNotBeInSet(
                column="image_id",
                value_set=sorted(rejected["image_id"]),
                notes="images rejected by validate on this day",
            ),
            expect.ExpectColumnValuesToNotBeNull(column="category"),
            expect.ExpectColumnValuesToBeInSet(column="category", value_set=categories),
        ],
        ["image_id", "category"],
    )


def read_funnel(warehouse, run_date: dt.date) -> SuiteInput:
    import great_expectations as gx

    frame = warehouse.query("funnel_balance", run_date=run_date)
    expect = gx.expectations
    return SuiteInput(
        frame,
        [
            expect.ExpectTableRowCountToBeBetween(min_value=1, notes="the funnel of the day was recorded"),
            expect.ExpectColumnValuesToBeInSet(column="balance", value_set=[0]),
        ],
        ["rule", "stage", "category", "in_rows", "out_rows", "dropped_rows"],
    )


def _brief(value) -> str:
    if isinstance(value, (list, tuple)) and len(value) > SHOWN_ROWS:
        return f"[{', '.join(map(repr, value[:SHOWN_ROWS]))}, ... ({len(value)} values)]"
    return repr(value)


def _row_text(row: dict, row_key: list[str]) -> str:
    """A failing row: its `row_key` columns in order, then the checked value."""
    names = [k for k in row_key if k in row] + sorted(set(row) - set(row_key))
    return ", ".join(f"{k}={row[k]}" for k in names)


def _exception_messages(info: dict) -> list[str]:
    """GX reports an exception flat ({raised_exception, exception_message, ...}) or per metric."""
    entries = [info] if "raised_exception" in info else info.values()
    return sorted({entry["exception_message"] for entry in entries if entry.get("raised_exception")})


def describe_failure(result, row_key: list[str]) -> str:
    """A failed expectation in one line: its call, what was observed, and the first failing rows."""
    config = result.expectation_config
    arguments = ", ".join(f"{k}={_brief(v)}" for k, v in config.kwargs.items() if k != "batch_id")
    text = f"{config.type}({arguments})"
    found = result.result or {}
    if "observed_value" in found:
        text += f": observed {found['observed_value']}"
    if found.get("unexpected_count"):
        rows = "; ".join(_row_text(row, row_key) for row in found.get("partial_unexpected_index_list", []))
        text += f": {found['unexpected_count']} of {found['element_count']} rows unexpected, e.g. {rows}"
    errors = _exception_messages(result.exception_info or {})
    if errors:
        text += f": raised {'; '.join(errors)}"
    return text + (f" ({config.notes})" if config.notes else "")


def _store_dir(docs_dir: Path, store: str) -> Path:
    """Where gx_context keeps a GX store's JSON (suites, validation results) beside the site."""
    return Path(docs_dir) / "stores" / store


def gx_context(docs_dir: Path):
    """An ephemeral GX context whose suites and validation results are stored beside its Data Docs
    site: a build drops the pages whose results are not in the stores, so in-memory stores would
    erase the pages of earlier runs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    for store in (defaults.expectations_store_name, defaults.validation_results_store_name):
        defaults.stores[store]["store_backend"] = {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(_store_dir(docs_dir, store)),
        }
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": DOCS_INDEX_RESULTS},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
    }
    return gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=defaults,
            data_docs_sites={DOCS_SITE: site},
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )


def _stored_suite(docs_dir: Path, name: str) -> dict | None:
    """A suite as its store holds it, less the ids GX draws anew on every write; None if not stored."""
    from great_expectations.data_context.types.base import InMemoryStoreBackendDefaults

    path = _store_dir(docs_dir, InMemoryStoreBackendDefaults().expectations_store_name) / f"{name}.json"
    if not path.exists():
        return None
    suite = json.loads(path.read_text())
    suite.pop("id", None)
    for expectation in suite.get("expectations", []):
        expectation.pop("id", None)
    return suite


def run_suites(inputs: dict[str, SuiteInput], docs_dir: Path, run_name: str) -> dict:
    """Validates each input with its suite through a Checkpoint, then updates the Data Docs site in
    `docs_dir`; per suite: success, evaluated expectations, failed ones (described) and its docs page."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    docs_dir = Path(docs_dir)
    context = gx_context(docs_dir)
    source = context.data_sources.add_pandas("vecflow")
    run_id = RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC))
    results, changed_suites = {}, []
    for name, suite_input in inputs.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("partition")
        before = _stored_suite(docs_dir, name)
        suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=suite_input.expectations))
        if (
            before is None
            or before != _stored_suite(docs_dir, name)
            or not (docs_dir / "expectations" / f"{name}.html").exists()
        ):
            changed_suites.append(name)
        validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[validation],
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": SHOWN_ROWS,
                    "unexpected_index_column_names": suite_input.row_key,
                },
            )
        )
        (results[name],) = checkpoint.run(
            batch_parameters={"dataframe": suite_input.frame}, run_id=run_id
        ).run_results.items()
    # one build for all suites (not an UpdateDataDocsAction per Checkpoint): each build re-renders the
    # index; a suite's own page only when the suite changed (rendering pages is most of a build)
    context.build_data_docs(
        site_names=[DOCS_SITE],
        resource_identifiers=[
            *(result_id for result_id, _ in results.values()),
            *map(ExpectationSuiteIdentifier, changed_suites),
        ],
    )
    summary = {}
    for name, (result_id, result) in results.items():
        (page,) = context.get_docs_sites_urls(resource_identifier=result_id, site_name=DOCS_SITE)
        summary[name] = {
            "success": bool(result.success),
            "evaluated_expectations": result.statistics["evaluated_expectations"],
            "failed_expectations": [describe_failure(r, inputs[name].row_key) for r in result.results if not r.success],
            "docs_page": page["site_url"].removeprefix("file://"),
        }
    return summary


def check_partition(
    settings,
    warehouse,
    run_date: dt.date,
    suites=SUITES,
    docs_dir: Path | None = None,
) -> dict:
    """Runs the named suites on the partition of `run_date` for the serving model (its vectors of the
    length its card declares), builds their Data Docs (default settings.paths.reports_dir / "gx") and
    returns run_suites' summary; raises DataQualityError naming every failed expectation when a suite fails."""
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown quality suite(s) {sorted(unknown)}; known: {list(SUITES)}")
    from vecflow.embed import card_embedding_dim

    model_version = settings.model_version
    readers = {
        "vector_log": lambda: read_vector_log(
            warehouse,
            run_date,
            model_version,
            card_embedding_dim(settings, model_version),
            settings.quality.max_bad_vector_share,
        ),
        "vectors_clean": lambda: read_vectors_clean(warehouse, run_date, model_version),
        "funnel": lambda: read_funnel(warehouse, run_date),
    }
    inputs = {name: readers[name]() for name in suites}
    summary = run_suites(inputs, Path(docs_dir or settings.paths.reports_dir / "gx"), f"{run_date}_{model_version}")
    failed = [
        f"  {name} suite: {failure}" for name, result in summary.items() for failure in result["failed_expectations"]
    ]
    if failed:
        raise DataQualityError(
            f"data quality of {run_date} (model {model_version}) failed:\n" + "\n".join(failed), summary
        )
    return summary
