"""Catalog sources: where one day's catalog partition comes from (settings group `catalog`).

- `files`: a partition is a file or a folder of data files (parquet, CSV, JSON lines) under the
  catalog's root, a local path or any fsspec URL (`gs://`, `s3://`, `file://`), at
  VECFLOW_CATALOG_PATH_TEMPLATE (default `listed_date={date}/`, the layout the demo's generator writes).
- `warehouse`: a table or view read by partition through the warehouse backend (a query parameter,
  never formatted into the SQL).

The delist feed (image_id, delisted_at, reason: vecflow.lifecycle) comes from the same source: files
at VECFLOW_CATALOG_DELIST_TEMPLATE under the same root, or the table VECFLOW_CATALOG_DELIST_TABLE,
whose partition of a day is the rows with delisted_at in that day (UTC). Both go through one reader
(`_read_source`).

Columns are renamed to vecflow's by VECFLOW_CATALOG_COLUMNS; image_id and uri are required, source
and category optional. Every other column (title, brand, price, ...) is a catalog attribute: kept,
per image, as one JSON object in `attributes`, which reaches vectors_clean, the search documents and
search results. A partition that is not there is a CatalogError naming the source and the
date; one that is there with no rows is a partition of zero images.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import posixpath
from pathlib import Path

import pandas as pd

from vecflow.config import Settings

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image_id", "uri", "source", "listed_date", "category"]  # what the embedding job reads
CATALOG_COLUMNS = [*MANIFEST_COLUMNS, "attributes"]
REQUIRED_COLUMNS = ["image_id", "uri"]
READERS = {
    ".parquet": pd.read_parquet,
    ".csv": lambda f: pd.read_csv(f, dtype=str),  # ids stay text: "007" is not 7
    ".jsonl": lambda f: pd.read_json(f, lines=True, dtype=False),
    ".ndjson": lambda f: pd.read_json(f, lines=True, dtype=False),
    ".json": lambda f: pd.read_json(f, lines=True, dtype=False),
}


class CatalogError(ValueError):
    """The catalog partition is missing or malformed."""


def catalog_root(settings: Settings) -> str:
    return settings.catalog.url or str(settings.paths.catalog_dir)


def partition_dir(catalog_dir: Path, day: dt.date) -> Path:
    """A partition's folder in the default layout (`listed_date={date}/`), as the generator writes it."""
    return catalog_dir / f"listed_date={day.isoformat()}"


def read_partition(settings: Settings, warehouse, run_date: dt.date) -> pd.DataFrame:
    """The partition's rows with CATALOG_COLUMNS (listed_date set to the partition; the other columns
    folded into `attributes`)."""
    frame, where = _read_source(settings, warehouse, run_date, CATALOG_FEED)
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise CatalogError(
            f"catalog partition {run_date} ({where}): required column(s) {missing} missing; it has "
            f"{sorted(frame.columns)} (VECFLOW_CATALOG_COLUMNS renames columns)"
        )
    extra = [column for column in frame.columns if column not in CATALOG_COLUMNS]
    frame["attributes"] = attributes_json(frame[extra]) if extra else None
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["listed_date"] = run_date
    return frame[CATALOG_COLUMNS].astype({"image_id": object, "uri": object})


def attributes_json(columns: pd.DataFrame) -> list[str | None]:
    """Per row, the non-empty values of the attribute columns as a JSON object (keys sorted; numbers
    stay numbers, anything else becomes text); None for a row without any. Built column by column:
    each value is encoded once as a `"key": value` fragment, each row joins its fragments."""
    fragments = [_json_fragments(name, columns[name]) for name in sorted(columns.columns)]
    rows = [[f for f in row if f is not None] for row in zip(*fragments)] if fragments else []
    return ["{" + ", ".join(kept) + "}" if kept else None for kept in rows]


def _json_fragments(name: str, column: pd.Series) -> list[str | None]:
    """`"name": value` of each row of one column (json.dumps' separators), None where it is empty."""
    key = json.dumps(name, ensure_ascii=False) + ": "
    empty = column.isna().tolist()
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype(object).tolist()  # Python bools, ints and floats (nullable ones too)
        return [None if e else key + json.dumps(v) for v, e in zip(values, empty)]

    def text(v) -> str | None:
        if isinstance(v, (list, tuple, dict)) or getattr(v, "ndim", 0):
            return json.dumps(str(v), ensure_ascii=False)
        if hasattr(v, "item") and not isinstance(v, str):  # numpy scalars in an object column
            v = v.item()
        return json.dumps(v if isinstance(v, (bool, int, float)) else str(v), ensure_ascii=False)

    return [None if e else key + text(v) for v, e in zip(column.tolist(), empty)]


@dataclasses.dataclass(frozen=True)
class Feed:
    """One of the catalog's feeds, as each source holds it."""

    name: str  # in errors
    template: str  # the CatalogSettings field of its path template (files)
    table: str  # the CatalogSettings field of its table (warehouse)
    table_variable: str
    query: str  # the SQL file reading a day of the table
    time_column: str  # ours: the column whose source name the query filters on


CATALOG_FEED = Feed(
    "catalog partition", "path_template", "table", "VECFLOW_CATALOG_TABLE", "select_catalog_partition", "listed_date"
)
DELIST_FEED = Feed(
    "delist feed",
    "delist_template",
    "delist_table",
    "VECFLOW_CATALOG_DELIST_TABLE",
    "select_delist_feed",
    "delisted_at",
)


def _read_source(settings: Settings, warehouse, run_date: dt.date, feed: Feed) -> tuple[pd.DataFrame, str]:
    """A feed's rows of run_date from the catalog's source, renamed by VECFLOW_CATALOG_COLUMNS, and
    where they came from; CatalogError when the day is not there (files) or the table is not named."""
    c = settings.catalog
    if c.source == "warehouse":
        table = getattr(c, feed.table)
        if not table:
            raise CatalogError(f"VECFLOW_CATALOG_SOURCE=warehouse needs {feed.table_variable} (dataset.table)")
        column = next((source for source, ours in c.columns.items() if ours == feed.time_column), feed.time_column)
        start = dt.datetime.combine(run_date, dt.time(), dt.UTC)
        frame = warehouse.query(
            feed.query,
            names={"table": table, "date_column": column},
            partition=run_date,
            day_start=start,
            day_end=start + dt.timedelta(days=1),
        )
        where = f"table {table}"
    else:
        frame, where = _read_files(catalog_root(settings), getattr(c, feed.template), c.storage_options, run_date)
    return frame.rename(columns=c.columns), where


def read_delist_feed(settings: Settings, warehouse, run_date: dt.date) -> pd.DataFrame | None:
    """The delist feed's partition of run_date from the catalog's source (see the module's doc);
    None when the day has none, or the warehouse source names no delist table."""
    c = settings.catalog
    if c.source == "warehouse" and not c.delist_table:
        log.info("no VECFLOW_CATALOG_DELIST_TABLE: the catalog table's removals are not read")
        return None
    try:
        frame, where = _read_source(settings, warehouse, run_date, DELIST_FEED)
    except CatalogError:
        return None
    if "image_id" not in frame.columns:
        raise CatalogError(f"delist feed {where}: required column image_id missing; it has {sorted(frame.columns)}")
    return frame


def _read_files(root: str, template: str, storage_options: dict, run_date: dt.date) -> tuple[pd.DataFrame, str]:
    import fsspec

    fs, base = fsspec.core.url_to_fs(root, **storage_options)
    relative = template.format(date=run_date.isoformat())
    path = posixpath.join(base, relative)
    where = f"{root.rstrip('/')}/{relative}"
    fs.invalidate_cache(path)  # a bucket's listing cached by an earlier look (a long-lived process) is stale
    if relative.endswith("/"):
        files = sorted(p for p in fs.ls(path, detail=False) if _reader(p)) if fs.isdir(path) else []
    else:
        files = [path] if fs.isfile(path) else []
    if not files:
        raise CatalogError(f"no catalog partition for {run_date}: nothing to read at {where}")
    frames = []
    for file in files:
        with fs.open(file, "rb") as fh:
            frames.append(_reader(file)(fh))
    return pd.concat(frames, ignore_index=True), where


def _reader(path: str):
    return READERS.get(posixpath.splitext(path)[1].lower())


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def import_folder(
    settings: Settings,
    folder: Path,
    run_date: dt.date,
    category_from_folder: bool = False,
    source: str = "import",
    attributes: Path | None = None,
) -> dict:
    """Writes a catalog partition (the default layout, under the catalog root) listing the images of a
    directory tree: image_id is the path under `folder`, uri the file's absolute `file://` URI, category
    the image's folder name when `category_from_folder`, and the columns of an `attributes` file (CSV
    or parquet with an image_id column: brand, material, ...; what catalog-sourced tag dimensions
    read) joined on image_id. Other files are counted and named, not listed.
    Folder names that are no category of the taxonomy (through the category dimension's synonyms) and
    images with no category are warned about (logged, and returned in `warnings`). Returns what was
    written."""
    import fsspec

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise CatalogError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [str(p.relative_to(folder)) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        raise CatalogError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    manifest = pd.DataFrame(
        {
            "image_id": [p.relative_to(folder).as_posix() for p in images],
            "uri": [p.as_uri() for p in images],
            "source": source,
            "listed_date": run_date,
            "category": [p.parent.name if category_from_folder and p.parent != folder else None for p in images],
        },
        columns=MANIFEST_COLUMNS,
    )
    warnings = []
    if attributes is not None:
        manifest, unmatched = _with_attributes(manifest, Path(attributes))
        if unmatched:
            warnings.append(f"{len(unmatched)} rows of {attributes} name no imported image: {_shown(unmatched)}")
    c = settings.catalog
    if c.source != "files" or c.path_template != "listed_date={date}/":
        raise CatalogError(
            "catalog import writes the default layout: VECFLOW_CATALOG_SOURCE=files and "
            "VECFLOW_CATALOG_PATH_TEMPLATE=listed_date={date}/"
        )
    fs, base = fsspec.core.url_to_fs(catalog_root(settings), **c.storage_options)
    target = posixpath.join(base, f"listed_date={run_date.isoformat()}", "manifest.parquet")
    fs.makedirs(posixpath.dirname(target), exist_ok=True)
    with fs.open(target, "wb") as fh:
        manifest.to_parquet(fh, index=False)
    warnings += _category_warnings(settings, manifest, category_from_folder)
    for warning in warnings:
        log.warning("catalog import %s: %s", folder, warning)
    return {
        "partition": run_date.isoformat(),
        "manifest": target,
        "images": len(images),
        "skipped": skipped,
        "warnings": warnings,
    }


def _with_attributes(manifest: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The manifest with an attributes file's other columns joined on image_id, and the file's image
    ids that name no imported image."""
    if not path.is_file():
        raise CatalogError(f"attributes file {path} does not exist")
    extra = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    if "image_id" not in extra.columns:
        raise CatalogError(f"attributes file {path}: no image_id column (found {sorted(extra.columns)})")
    clash = sorted(set(extra.columns) & set(MANIFEST_COLUMNS) - {"image_id"})
    if clash:
        raise CatalogError(f"attributes file {path}: columns {clash} are the catalog's own, not attributes")
    extra = extra.replace("", None).drop_duplicates("image_id", keep="last")
    unmatched = sorted(set(extra["image_id"]) - set(manifest["image_id"]))
    return manifest.merge(extra, on="image_id", how="left"), unmatched


def _shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _category_warnings(settings: Settings, manifest: pd.DataFrame, category_from_folder: bool) -> list[str]:
    """What a daily run will make of the imported categories, said before it runs: folder names that
    name no category of the taxonomy, and images with no category."""
    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(settings.tags.taxonomy_url)
    dim = taxonomy.dimension("category")
    warnings = []
    named = manifest["category"].dropna()
    unknown = named[named.map(dim.map_value).isna()].value_counts()
    if len(unknown):
        counts = [f"{name!r} ({n})" for name, n in unknown.items()]
        warnings.append(
            f"{unknown.sum()} images in {len(unknown)} folders whose names are no category of the "
            f"{taxonomy.location} (nor a synonym of one): {_shown(counts)}; a daily run rejects these "
            "values (unknown_category): rename the folders or add the names to the categories' synonyms"
        )
    missing = manifest.loc[manifest["category"].isna(), "image_id"].tolist()
    if missing:
        why = "not in a sub-folder" if category_from_folder else "no --category-from-folder"
        if dim.fallback:
            then = f"the category's fallback source ({dim.fallback}) tags them"
        elif dim.none_tag:
            then = f"they get the category {dim.none_tag!r}"
        else:
            then = "they get no category tag"
        warnings.append(f"{len(missing)} images have no category ({why}): {_shown(missing)}; {then}")
    return warnings
