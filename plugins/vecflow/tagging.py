"""The one tagging step: a taxonomy's tags of every dimension and source for stored images, in long
form (image_tags: one row per image, dimension and tag; several for a multi-label dimension).

What each source reads, per image (vectors_clean's row, or a shard's rows for the category):
- catalog: the catalog column or attribute key the dimension names, through its tags' synonyms; a
  value that names no tag is a reject `unknown_tag` naming it; no value gives the none tag, if any.
- model: the model head's class (the job's `analyses.model`), through the dimension's synonyms.
- head: a head set trained by `tags train` (vecflow.heads) over the stored vector.
- pixels: the job's colour or pattern measurements (`analyses.colour` / `.pattern`), through the
  taxonomy's palette and patterns (vecflow.pixel_tags).
- rules: the tags of the dimension the rules read.
- zero_shot: the cosine of the stored vector with each tag's prompts embedded by the model card's
  text tower (vecflow_model.registry.load_text_tower).
A dimension with a `fallback` takes the fallback's tag where its own source gave none. The category
is resolved the same way when a shard is loaded (it partitions the indexes); tagging reads it back.
Nothing is read from the images again, so a new taxonomy or head set retags history (`retag`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from vecflow.pixel_tags import ANALYSER_TAGS
from vecflow.taxonomy import SOURCES, Dimension, Taxonomy, normalise

log = logging.getLogger(__name__)

# an attributes key the SQL step extracts by name (`$.key`); others are read from the whole JSON
PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TAG_COLUMNS = [
    "image_id",
    "listed_date",
    "dimension",
    "tag",
    "confidence",
    "tag_source",
    "run_id",
    "source",
    "taxonomy_version",
    "head_version",
]


# Arrow's JSON reader: blocks of 16 MiB (a chunk of analyses lines is hundreds of MiB)
JSON_READ = pajson.ReadOptions(block_size=1 << 24)


class TaggingError(RuntimeError):
    """Tags cannot be computed as the taxonomy asks (a zero_shot dimension and no text tower)."""


@dataclass
class Tagged:
    tags: pd.DataFrame  # row (position in the frame), dimension, tag, confidence, tag_source (categoricals)
    rejects: pd.DataFrame  # row, dimension, reason, detail
    untagged: dict[str, int]  # dimension -> images that got no tag (no value, no head, below thresholds)


@dataclass
class _Part:
    """Tags of one dimension from one source: rows (positions in the frame) and their tags as codes
    into `tags`; a dimension's tags are a few parts (its source, the fallback, the none tag)."""

    source: str
    rows: np.ndarray  # int64
    codes: np.ndarray  # int64 indices into tags
    tags: np.ndarray  # object: tag keys
    confidence: np.ndarray  # float64

    @classmethod
    def of(cls, source: str, rows, tags, confidence) -> _Part:
        """A part from tag strings (what heads and the pixel analysers give)."""
        codes, keys = pd.factorize(np.asarray(tags, dtype=object))
        return cls(
            source, np.asarray(rows, np.int64), codes.astype(np.int64), np.asarray(keys, object), _floats(confidence)
        )

    def take(self, keep: np.ndarray) -> _Part:
        return _Part(self.source, self.rows[keep], self.codes[keep], self.tags, self.confidence[keep])


def _floats(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def parse_analyses(values) -> list[dict]:
    return [json.loads(v) if isinstance(v, str) and v else {} for v in values]


def analyses_columns(values: pd.Series) -> pd.DataFrame:
    """Each row's analyses JSON as flat columns `analyses.<analyser>.<field>` (nested keys joined by
    dots; NaN or None where a row has no such field), indexed like `values`."""
    texts = pa.array([v if isinstance(v, str) and v else "{}" for v in values], pa.string())
    # the job writes a colourless garment's hue as NaN, which is not JSON; keys and tag keys are
    # lower-case, so "NaN" is only ever that token (select_tagging_rows.sql writes these lines itself)
    lines = pc.binary_join_element_wise(pc.replace_substring(texts, "NaN", "null"), "", "\n")
    return _analyses_frame(lines).set_axis(values.index)


def _analyses_frame(lines: pa.Array | pa.ChunkedArray) -> pd.DataFrame:
    """Analyses JSON lines (one object per row, each ending in a newline) as flat `analyses.*` columns.
    Arrow's JSON reader parses them in one pass from the column's own buffer, several times faster than
    json.loads per row and with no per-row dicts (a retag parses a million); lines it cannot type
    alike (a field that is a number in one row and a string in another) are parsed row by row."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks() if lines.num_chunks else pa.array([], pa.string())
    n, flat = len(lines), None
    if n:
        try:
            table = pajson.read_json(pa.BufferReader(_text_buffer(lines)), read_options=JSON_READ)
            while any(pa.types.is_struct(field.type) for field in table.schema):
                table = table.flatten()
            if table.num_rows == n:
                flat = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
        except pa.ArrowInvalid:  # a field typed differently across rows
            pass
    if flat is None:
        normalised = pd.json_normalize(parse_analyses(lines.to_pylist())) if n else pd.DataFrame()
        flat = {name: normalised[name].to_numpy() for name in normalised.columns}
    return pd.DataFrame(flat, index=pd.RangeIndex(n)).add_prefix("analyses.")


def _text_buffer(strings: pa.Array) -> pa.Buffer:
    """The bytes of a string array's values laid end to end (its data buffer, not copied)."""
    if not (pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type)):
        strings = strings.cast(pa.large_string())
    width = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(strings.buffers()[1], width)[strings.offset : strings.offset + len(strings) + 1]
    return strings.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _analysis(frame: pd.DataFrame, key: str, dtype=object) -> pd.Series:
    """One analyses field per row (`model.category`, `legacy.color.tag`); None or NaN where absent."""
    column = f"analyses.{key}"
    return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=dtype)


def _catalog_values(frame: pd.DataFrame, dim: Dimension) -> tuple[np.ndarray, list]:
    """A dimension's catalog value per row, as codes (-1: none) into its distinct values: a column of
    the tagging rows, or a key of `attributes` (its JSON value, decoded once per distinct value)."""
    if dim.column in ("category", "catalog_category"):
        column = frame["catalog_category"]
    elif dim.column in frame.columns and not dim.column.startswith(("analyses.", "attributes.")):
        column = frame[dim.column]
    else:
        codes, texts = pd.factorize(frame[f"attributes.{dim.column}"])
        return codes, json.loads(f"[{','.join(texts)}]")  # one parse for every distinct value
    codes, values = pd.factorize(column)
    return codes, list(values)


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _ragged(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that each point at a distinct value (`codes`, -1: none) with `lengths[code]` items: the row
    of every item, and the item's position among all distinct values' items laid end to end."""
    starts = np.cumsum(lengths) - lengths
    valid = codes >= 0
    per_row = np.zeros(len(codes), np.int64)
    per_row[valid] = lengths[codes[valid]]
    rows = np.repeat(np.arange(len(codes)), per_row)
    first = np.zeros(len(codes), np.int64)
    first[valid] = starts[codes[valid]]
    first = np.repeat(first, per_row)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    return rows, first + within


def _catalog_tags(frame: pd.DataFrame, dim: Dimension) -> tuple[_Part, pd.DataFrame]:
    codes, values = _catalog_values(frame, dim)
    keys = list(dim.tags)
    code_of = {tag: i for i, tag in enumerate(keys)}
    # a catalog repeats few distinct values: each is split once, each item normalised and looked up once
    lookup: dict[str, int] = {}  # an item's text -> its tag's code; -1: it names no tag, -2: blank

    def code(text: str) -> int:
        if text.strip() == "":
            return -2
        tag = dim.synonyms.get(normalise(text))
        return -1 if tag is None else code_of[tag]

    tag_lists, unknown_lists = [], []
    for value in values:
        if _absent(value):
            items = ()
        elif not dim.multi_label:
            items = (value,)
        elif isinstance(value, list):  # a JSON list (its nulls are no values), or a string split on the separator
            items = [item for item in value if not _absent(item)]
        else:
            items = str(value).split(dim.separator)
        found, unknown = [], []
        for item in items:
            text = item if isinstance(item, str) else str(item)
            c = lookup.get(text)
            if c is None:
                c = lookup[text] = code(text)
            if c >= 0:
                if c not in found:
                    found.append(c)
            elif c == -1:
                unknown.append(item)
        tag_lists.append(found)
        unknown_lists.append(unknown)
    rows, at = _ragged(codes, np.array([len(t) for t in tag_lists], np.int64))
    flat = np.array([c for t in tag_lists for c in t], np.int64)
    part = _Part("catalog", rows, flat[at], np.array(keys, object), np.ones(len(rows)))
    bad_rows, bad_at = _ragged(codes, np.array([len(u) for u in unknown_lists], np.int64))
    details = np.array(
        [f"{dim.name}={v!r} names no {dim.name} tag (catalog {dim.column})" for u in unknown_lists for v in u], object
    )
    rejects = pd.DataFrame(
        {"row": bad_rows, "dimension": dim.name, "reason": "unknown_tag", "detail": details[bad_at]},
        columns=["row", "dimension", "reason", "detail"],
    )
    return part, rejects


def _model_tags(frame: pd.DataFrame, dim: Dimension) -> tuple[_Part, pd.DataFrame]:
    codes, names = pd.factorize(_analysis(frame, f"model.{dim.name}"))
    mapped = np.array([dim.map_value(v) for v in names], dtype=object)
    conf = _floats(_analysis(frame, "model.confidence", float))
    has = codes >= 0
    tagged = has.copy()
    tagged[has] = pd.notna(mapped[codes[has]])
    rows = np.flatnonzero(tagged)
    part = _Part.of("model", rows, mapped[codes[rows]], conf[rows])
    unknown = np.flatnonzero(has & ~tagged)
    details = np.array([f"{dim.name}: the model's class {v!r} names no {dim.name} tag" for v in names], object)
    rejects = pd.DataFrame(
        {"row": unknown, "dimension": dim.name, "reason": "unknown_tag", "detail": details[codes[unknown]]},
        columns=["row", "dimension", "reason", "detail"],
    )
    return part, rejects


def _pixel_tags(frame: pd.DataFrame, dim: Dimension) -> tuple[_Part, pd.DataFrame]:
    prefix = f"analyses.{dim.analyser}."
    measured = frame[[c for c in frame.columns if c.startswith(prefix)]]
    measured.columns = [c[len(prefix) :] for c in measured.columns]
    has = measured.notna().any(axis=1).to_numpy()
    part = _no_part("pixels")
    if has.any():
        tags = ANALYSER_TAGS[dim.analyser](measured[has].apply(pd.to_numeric, errors="coerce"), dim)
        part = _Part.of("pixels", np.flatnonzero(has), tags["tag"].to_numpy(), tags["confidence"].to_numpy())
    # rows migrated from before analyses were kept: their tag as it was computed then
    legacy = _analysis(frame, f"legacy.{dim.name}.tag")
    kept = np.flatnonzero(~has & legacy.isin(list(dim.tags)).to_numpy())
    if len(kept):
        confidence = _floats(_analysis(frame, f"legacy.{dim.name}.confidence", float))[kept]
        old = _Part.of("pixels", kept, legacy.to_numpy()[kept], confidence)
        part = _joined([part, old])
    return part, _no_rejects()


def _joined(parts: list[_Part]) -> _Part:
    """Parts of one source as one (their tags unioned)."""
    keys = pd.unique(np.concatenate([p.tags for p in parts]))
    index = pd.Index(keys)
    return _Part(
        parts[0].source,
        np.concatenate([p.rows for p in parts]),
        np.concatenate([index.get_indexer(p.tags)[p.codes] for p in parts]),
        np.asarray(keys, object),
        np.concatenate([p.confidence for p in parts]),
    )


def _head_tags(frame: pd.DataFrame, dim: Dimension, heads, vectors: np.ndarray | None) -> tuple[_Part, pd.DataFrame]:
    if heads is None or dim.name not in heads.dimensions:  # counted as untagged, and warned about once
        return _no_part("head"), _no_rejects()
    if not len(frame):  # no vectors to score (an empty matrix has no width to check)
        return _no_part("head"), _no_rejects()
    predicted = heads.predict(dim.name, vectors)
    return _Part.of(
        "head", predicted["row"].to_numpy(), predicted["tag"].to_numpy(), predicted["confidence"]
    ), _no_rejects()


def _zero_shot_tags(
    frame: pd.DataFrame, dim: Dimension, tower, vectors: np.ndarray | None
) -> tuple[_Part, pd.DataFrame]:
    """Single-label: the tag whose prompts are nearest, confidence its softmax(100 * cosine)
    probability (CLIP's logit scale); multi-label: every tag above the dimension's threshold, its
    cosine the confidence."""
    if tower is None:
        raise TaggingError(
            f"dimension {dim.name!r}: source zero_shot needs a text tower (`text_tower` in the model card); none is loaded"
        )
    tags = np.array(list(dim.tags), dtype=object)
    # a tag is the mean of its prompts' directions
    prompts = np.stack([tower.embed(info["prompts"]).mean(axis=0) for info in dim.tags.values()])
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    if vectors is None or not len(frame):
        return _no_part("zero_shot"), _no_rejects()
    if vectors.shape[1] != prompts.shape[1]:
        raise TaggingError(
            f"dimension {dim.name!r}: the text tower embeds in {prompts.shape[1]} dimensions, the vectors have {vectors.shape[1]}"
        )
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ prompts.T
    if dim.multi_label:
        rows, columns = np.nonzero(cosine > dim.zero_shot_threshold)
        confidence = cosine[rows, columns]
    else:
        rows, columns = np.arange(len(cosine)), cosine.argmax(axis=1)
        logits = 100.0 * (cosine - cosine.max(axis=1, keepdims=True))
        confidence = 1.0 / np.exp(logits).sum(axis=1)  # the best tag's softmax probability
    return _Part(
        "zero_shot", rows, columns.astype(np.int64), tags, np.round(confidence, 3).astype(np.float64)
    ), _no_rejects()


def _no_part(source: str) -> _Part:
    return _Part(source, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, object), np.empty(0))


def _no_rejects() -> pd.DataFrame:
    return pd.DataFrame(columns=["row", "dimension", "reason", "detail"])


def _source_tags(source: str, frame, dim, heads, vectors, tower=None) -> tuple[_Part, pd.DataFrame]:
    if source == "catalog":
        return _catalog_tags(frame, dim)
    if source == "model":
        return _model_tags(frame, dim)
    if source == "pixels":
        return _pixel_tags(frame, dim)
    if source == "head":
        return _head_tags(frame, dim, heads, vectors)
    # zero_shot: the one source left (rules dimensions are tagged from other dimensions' tags)
    return _zero_shot_tags(frame, dim, tower, vectors)


def _untagged_rows(n: int, parts: list[_Part]) -> np.ndarray:
    tagged = np.zeros(n, bool)
    for part in parts:
        tagged[part.rows] = True
    return np.flatnonzero(~tagged)


def dimension_tags(
    frame: pd.DataFrame, dim: Dimension, heads=None, vectors=None, tower=None
) -> tuple[list[_Part], pd.DataFrame]:
    """The tag parts of a non-rules dimension (its source's, the fallback's, the none tag's) and its
    rejects; `frame` is prepared (analyses and attributes as columns)."""
    part, rejects = _source_tags(dim.source, frame, dim, heads, vectors, tower)
    parts = [part]
    if dim.fallback:
        missing = _untagged_rows(len(frame), parts)
        if len(missing):
            # the fallback source scores every row; only the rows the source left untagged keep its tags
            extra, extra_rejects = _source_tags(dim.fallback, frame, dim, heads, vectors)
            parts.append(extra.take(np.isin(extra.rows, missing)))
            # a catalog value that named no tag and was then filled by the fallback is still reported
            rejects = pd.concat([rejects, extra_rejects[extra_rejects["row"].isin(missing)]], ignore_index=True)
    if dim.none_tag:
        missing = _untagged_rows(len(frame), parts)
        keys = np.array([dim.none_tag], object)
        parts.append(_Part(dim.source, missing, np.zeros(len(missing), np.int64), keys, np.ones(len(missing))))
    return parts, rejects


def _attribute_keys(taxonomy: Taxonomy) -> list[str]:
    """The attributes keys the taxonomy's catalog dimensions read (not the tagging rows' own columns)."""
    own = {"image_id", "listed_date", "source", "category", "catalog_category"}
    keys = [d.column for d in taxonomy.dims.values() if d.source == "catalog" and d.column not in own]
    return list(dict.fromkeys(keys))


def prepare(frame: pa.Table | pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Tagging rows (select_tagging_rows.sql's, or a frame with `analyses` and `attributes` JSON) as
    what the sources read, indexed by position: the catalog columns the taxonomy names, the analyses
    as flat `analyses.*` columns, and each attribute key it reads as `attributes.<key>` (the key's JSON
    value; null where absent)."""
    arrow = isinstance(frame, pa.Table)
    names = frame.column_names if arrow else list(frame.columns)

    def column(name: str) -> pd.Series:
        return frame[name].to_pandas() if arrow else frame[name].reset_index(drop=True)

    n = frame.num_rows if arrow else len(frame)
    read = {"catalog_category"} | {d.column for d in taxonomy.by_source("catalog")}
    out = {name: column(name) for name in names if name in read and name not in ("analyses", "attributes")}
    if "analyses_lines" in names:
        analyses = _analyses_frame(frame["analyses_lines"])
    elif "analyses" in names:
        analyses = analyses_columns(column("analyses"))
    else:
        analyses = pd.DataFrame(index=pd.RangeIndex(n))
    out |= {name: column(name) for name in names if name.startswith("attributes.")}
    wanted = [k for k in _attribute_keys(taxonomy) if f"attributes.{k}" not in out and k not in out]
    if wanted:  # attributes whole (keys the SQL step did not extract): parsed here, row by row
        parsed = parse_analyses(column("attributes")) if "attributes" in names else [{}] * n
        for key in wanted:
            out[f"attributes.{key}"] = pd.Series(
                [json.dumps(a[key]) if key in a else None for a in parsed], dtype=object
            )
    scalars = pd.DataFrame(out, index=pd.RangeIndex(n))
    return pd.concat([scalars, analyses.set_axis(scalars.index)], axis=1)


def resolve_category(frame: pa.Table | pd.DataFrame, taxonomy: Taxonomy, heads=None, vectors=None) -> pd.Series:
    """Each row's category tag (None where no source gives one): the index partition key, resolved
    when a shard is loaded, as tag_frame resolves it."""
    frame = prepare(frame, taxonomy)
    parts, _ = dimension_tags(frame, taxonomy.dimension("category"), heads, vectors)
    resolved = np.full(len(frame), None, dtype=object)
    for part in parts:
        resolved[part.rows] = part.tags[part.codes]
    return pd.Series(resolved, index=frame.index)


def _rules_part(dim: Dimension, taxonomy: Taxonomy, base: list[_Part]) -> _Part:
    """A rules dimension's tags: every tag whose rules name a tag the base dimension gave, at that
    tag's confidence, once per image."""
    keys = list(dim.tags)
    derived: dict[str, list[int]] = {}
    for rule in taxonomy.derivations():
        if rule["dimension"] == dim.name:
            derived.setdefault(rule["from_tag"], []).append(keys.index(rule["tag"]))
    rows, codes, confidence = [], [], []
    for part in base:
        lists = [derived.get(tag, []) for tag in part.tags]
        flat = np.array([c for codes_of in lists for c in codes_of], np.int64)
        at_row, at = _ragged(part.codes, np.array([len(c) for c in lists], np.int64))
        rows.append(part.rows[at_row])
        codes.append(flat[at])
        confidence.append(part.confidence[at_row])
    rows, codes, confidence = np.concatenate(rows), np.concatenate(codes), np.concatenate(confidence)
    _, first = np.unique(rows * len(keys) + codes, return_index=True)  # a (row, tag) once: the first
    first.sort()
    return _Part("rules", rows[first], codes[first], np.array(keys, object), confidence[first])


def tag_frame(frame: pa.Table | pd.DataFrame, taxonomy: Taxonomy, heads=None, vectors=None, tower=None) -> Tagged:
    """Every dimension's tags of the frame's images (select_tagging_rows.sql's rows, or image_id,
    catalog_category, source, analyses, attributes; `vectors` row-aligned when a dimension has a head
    or is zero_shot, `tower` the text tower of a zero_shot dimension)."""
    frame = prepare(frame, taxonomy)
    n = len(frame)
    parts: list[tuple[str, _Part]] = []
    rejects, untagged = [], {}
    by_name: dict[str, list[_Part]] = {}
    for dim in taxonomy.dims.values():
        if dim.source == "rules":
            continue
        dim_parts, bad = dimension_tags(frame, dim, heads, vectors, tower)
        by_name[dim.name] = dim_parts
        parts += [(dim.name, p) for p in dim_parts]
        rejects.append(bad)
    for dim in taxonomy.by_source("rules"):
        parts.append((dim.name, _rules_part(dim, taxonomy, by_name[dim.derived_from])))
    awaiting = [d.name for d in taxonomy.by_source("head") if heads is None or d.name not in heads.dimensions]
    if awaiting and n:
        log.warning(
            "dimensions %s are tagged by a head and no head set for them is trained: they stay untagged until "
            "`python -m vecflow.cli tags train --labels FILE` and a retag",
            awaiting,
        )
    for dim in taxonomy.dims.values():
        untagged[dim.name] = len(_untagged_rows(n, [p for name, p in parts if name == dim.name]))
    return Tagged(tags=_tags_frame(taxonomy, parts), rejects=pd.concat(rejects, ignore_index=True), untagged=untagged)


def _tags_frame(taxonomy: Taxonomy, parts: list[tuple[str, _Part]]) -> pd.DataFrame:
    """The parts as one frame whose dimension, tag and tag_source are categoricals (codes, no string
    per row: a retag's chunk has millions of rows)."""
    dimensions = pd.Index(taxonomy.dimensions)
    tags = pd.Index(pd.unique(np.concatenate([np.empty(0, object), *(p.tags for _, p in parts)])))
    sources = pd.Index(SOURCES)
    sizes = [len(p.rows) for _, p in parts]

    def repeated(index: pd.Index, values: list[str]) -> pd.Categorical:
        codes = np.repeat(index.get_indexer(values), sizes) if parts else np.empty(0, np.int64)
        return pd.Categorical.from_codes(codes, index)

    tag_codes = [tags.get_indexer(p.tags)[p.codes] for _, p in parts]
    return pd.DataFrame(
        {
            "row": np.concatenate([np.empty(0, np.int64), *(p.rows for _, p in parts)]),
            "dimension": repeated(dimensions, [name for name, _ in parts]),
            "tag": pd.Categorical.from_codes(np.concatenate([np.empty(0, np.int64), *tag_codes]), tags),
            "confidence": np.concatenate([np.empty(0), *(p.confidence for _, p in parts)]),
            "tag_source": repeated(sources, [p.source for _, p in parts]),
        }
    )


def _column(frame: pa.Table | pd.DataFrame, name: str) -> pa.Array:
    column = frame[name] if isinstance(frame, pa.Table) else pa.chunked_array([pa.array(frame[name])])
    return column.combine_chunks()


def _constant(value: str | None, n: int) -> pa.Array:
    if value is None:
        return pa.nulls(n, pa.string())
    return pa.DictionaryArray.from_arrays(np.zeros(n, np.int8), pa.array([value], pa.string()))


def _dictionary(categorical: pd.Series) -> pa.DictionaryArray:
    values = categorical.array
    return pa.DictionaryArray.from_arrays(values.codes, pa.array(np.asarray(values.categories, object), pa.string()))


def long_rows(frame: pa.Table | pd.DataFrame, tagged: Tagged, taxonomy: Taxonomy, heads, run_id: str) -> pa.Table:
    """image_tags rows (TAG_COLUMNS) of a tagged frame, as an Arrow table whose strings are
    dictionary-encoded (an image's id and source are indices into the frame's own columns)."""
    t = tagged.tags
    n = len(t)
    rows = pa.array(t["row"].to_numpy(), pa.int64())
    source = pc.dictionary_encode(_column(frame, "source"))
    columns = {
        "image_id": pa.DictionaryArray.from_arrays(rows, _column(frame, "image_id").cast(pa.string())),
        "listed_date": _column(frame, "listed_date").take(rows),
        "dimension": _dictionary(t["dimension"]),
        "tag": _dictionary(t["tag"]),
        "confidence": pa.array(t["confidence"].to_numpy(), pa.float64()),
        "tag_source": _dictionary(t["tag_source"]),
        "run_id": _constant(run_id, n),
        "source": pa.DictionaryArray.from_arrays(source.indices.take(rows), source.dictionary.cast(pa.string())),
        "taxonomy_version": _constant(taxonomy.version, n),
        "head_version": _constant(heads.version if heads is not None else None, n),
    }
    return pa.table([columns[c] for c in TAG_COLUMNS], names=TAG_COLUMNS)


def reject_rows(frame: pa.Table | pd.DataFrame, tagged: Tagged) -> pd.DataFrame:
    """rejects rows (image_id, reason, detail, category) of a tagged frame."""
    rows = pa.array(tagged.rejects["row"].to_numpy(dtype=np.int64), pa.int64())
    return pd.DataFrame(
        {
            "image_id": _column(frame, "image_id").take(rows).to_pandas(),
            "listed_date": _column(frame, "listed_date").take(rows).to_pandas(),
            "reason": tagged.rejects["reason"].to_numpy(),
            "detail": tagged.rejects["detail"].to_numpy(),
            "category": _column(frame, "category").take(rows).to_pandas(),
        }
    )


def needs_vectors(heads, tower) -> bool:
    """Whether tagging reads the stored vectors: a head set or a text tower scores them."""
    return heads is not None or tower is not None


def head_set(settings, taxonomy: Taxonomy, model_version: str):
    """The head set that tags the taxonomy's head dimensions (None when it has none)."""
    if not taxonomy.by_source("head"):
        return None
    from vecflow.heads import load_head_set

    return load_head_set(settings, model_version)


def text_tower(settings, taxonomy: Taxonomy, model_version: str):
    """The model card's text tower when the taxonomy has zero_shot dimensions (None when it has
    none); a TaggingError naming them when the card declares no tower."""
    zero_shot = [d.name for d in taxonomy.by_source("zero_shot")]
    if not zero_shot:
        return None
    from vecflow_model.registry import load_text_tower

    tower = load_text_tower(model_version, settings.embed.model_registry)
    if tower is None:
        raise TaggingError(
            f"dimensions {zero_shot} are zero_shot and model {model_version}'s card declares no `text_tower`"
        )
    return tower


def embedding_matrix(embeddings: pa.ChunkedArray) -> np.ndarray:
    """(n, d) float32 of an Arrow list column of equal-length vectors, without a Python loop: each
    chunk's values are read in place and cast once into the matrix (no combined float64 copy)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    values = [chunk.flatten() for chunk in embeddings.chunks]
    d = len(embeddings[0])
    if sum(len(v) for v in values) != n * d:
        raise TaggingError(
            f"embeddings of unequal lengths: {sum(len(v) for v in values)} values for {n} vectors of {d}"
        )
    matrix = np.empty((n, d), dtype=np.float32)
    at = 0
    for chunk_values in values:
        rows = len(chunk_values) // d if d else 0
        matrix[at : at + rows] = chunk_values.to_numpy(zero_copy_only=False).reshape(rows, d)
        at += rows
    return matrix


def category_resolver(settings, warehouse, model_version: str):
    """The function that gives a shard's vectors (an Arrow table of the job's output) their category
    tag when they are loaded (None where no source gives one: validation rejects it)."""
    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    publish_taxonomy(warehouse, taxonomy)  # validation reads the known categories from the warehouse
    category = taxonomy.dimension("category")
    heads = None
    if "head" in category.sources:
        from vecflow.heads import load_head_set

        heads = load_head_set(settings, model_version)

    def categorise(vectors: pa.Table) -> list:
        frame = vectors.select(["catalog_category", "analyses"]).to_pandas()
        matrix = embedding_matrix(vectors["embedding"]) if heads is not None else None
        resolved = resolve_category(frame, taxonomy, heads, matrix)
        return [None if pd.isna(v) else v for v in resolved]

    return categorise


def publish_taxonomy(warehouse, taxonomy: Taxonomy) -> bool:
    """Writes the `taxonomy` and `tag_derivations` tables when the warehouse holds another taxonomy
    version (analysts and SQL steps read them); returns whether it wrote. The table exists from
    `migrate` on: one query decides (a connection costs tens of ms on a large DuckDB file)."""
    held = warehouse.query("select_taxonomy_version")
    if list(held["taxonomy_version"]) == [taxonomy.version]:
        return False
    tags = pd.DataFrame(taxonomy.rows())
    warehouse.run("replace_table", rows=tags, names={"table": "taxonomy", "columns": list(tags.columns)})
    derivations = pd.DataFrame(taxonomy.derivations(), columns=["dimension", "tag", "from_dimension", "from_tag"])
    warehouse.run(
        "replace_table", rows=derivations, names={"table": "tag_derivations", "columns": list(derivations.columns)}
    )
    log.info("taxonomy %s published: %d dimensions, %d tags", taxonomy.version, len(taxonomy.dims), len(tags))
    return True


def tagging_rows(warehouse, taxonomy: Taxonomy, vectors: bool, date_from, date_to, model_version: str) -> pa.Table:
    """select_tagging_rows.sql's rows as Arrow (with the embedding when `vectors`): each attribute key
    the taxonomy reads extracted by the warehouse as `attributes.<key>` (keys that are no plain JSONPath
    name come with `attributes` whole instead, parsed by prepare)."""
    keys = _attribute_keys(taxonomy)
    plain = [key for key in keys if PLAIN_KEY.fullmatch(key)]
    extra = (["attributes"] if len(plain) < len(keys) else []) + (["embedding"] if vectors else [])
    table = warehouse.query_arrow(
        "select_tagging_rows",
        names={"attribute_keys": plain, "extra_columns": extra},
        date_from=date_from,
        date_to=date_to,
        model_version=model_version,
    )
    named = {f"attribute_{i}": f"attributes.{key}" for i, key in enumerate(plain)}
    return table.rename_columns([named.get(name, name) for name in table.column_names])


def tag_partition(settings, warehouse, taxonomy: Taxonomy, run_date: dt.date, run_id: str, model_version: str) -> dict:
    """Replaces a partition's image_tags and tag rejects with the taxonomy's tags of its clean images,
    and records the stage's funnel (in: images, out: images tagged, per category)."""
    from vecflow.funnel import replace_rejects, replace_stage_funnel

    publish_taxonomy(warehouse, taxonomy)
    heads = head_set(settings, taxonomy, model_version)
    tower = text_tower(settings, taxonomy, model_version)
    vectors = needs_vectors(heads, tower)
    frame = tagging_rows(warehouse, taxonomy, vectors, run_date, run_date, model_version)
    tagged = tag_frame(frame, taxonomy, heads, embedding_matrix(frame["embedding"]) if vectors else None, tower)
    rows = long_rows(frame, tagged, taxonomy, heads, run_id)
    warehouse.run("replace_image_tags", rows=rows, names={"columns": TAG_COLUMNS}, run_date=run_date)
    rejects = reject_rows(frame, tagged)
    replace_rejects(warehouse, "tags", run_date, run_id, rejects)
    category = frame["category"].to_pandas()
    tagged_images = np.zeros(len(category), bool)
    tagged_images[tagged.tags["row"].to_numpy()] = True
    counts = {(c, "in"): n for c, n in category.value_counts().items()}
    counts |= {(c, "out"): n for c, n in category[tagged_images].value_counts().items()}
    replace_stage_funnel(warehouse, "tags", run_date, run_id, counts)
    stats = {
        "images": len(category),
        "tag_rows": rows.num_rows,
        "unknown_tags": len(rejects),
        "untagged": {d: n for d, n in tagged.untagged.items() if n},
        "taxonomy_version": taxonomy.version,
        "head_version": heads.version if heads is not None else None,
    }
    log.info("partition %s tagged: %s", run_date, stats)
    return stats


def tag_versions(warehouse) -> pd.DataFrame:
    """(taxonomy_version, head_version, partitions, rows) held in image_tags."""
    return warehouse.query("select_tag_versions")


def check_one_version(warehouse) -> None:
    """Refuses trends over image_tags that mix taxonomy or head versions: a series must be read
    with one taxonomy (a new one reaches history through `retag`)."""
    versions = tag_versions(warehouse)
    if len(versions) > 1:
        held = "; ".join(
            f"taxonomy {r.taxonomy_version} heads {r.head_version or '-'}: {r.partitions} partitions"
            for r in versions.itertuples()
        )
        raise TaggingError(
            f"image_tags mixes tag versions ({held}): run the vecflow_retag DAG (or `vecflow.cli tags retag`)"
        )


def retag(settings, warehouse, run_id: str, model_version: str, chunk_days: int = 31) -> dict:
    """Tags every stored clean image of the model with the configured taxonomy and head set, side by
    side (image_tags_candidate), then switches image_tags to them in one transaction once the gate
    holds: every partition tagged, and no dimension that had tags loses them all. Vectors are read
    from the warehouse, images are not. Returns what it did (and why it refused, if it did)."""
    from vecflow.taxonomy import load_taxonomy

    started = time.perf_counter()
    taxonomy = load_taxonomy()
    publish_taxonomy(warehouse, taxonomy)
    heads = head_set(settings, taxonomy, model_version)
    tower = text_tower(settings, taxonomy, model_version)
    vectors = needs_vectors(heads, tower)
    partitions = sorted(set(warehouse.query("select_model_partitions", model_versions=[model_version])["listed_date"]))
    if not partitions:
        raise TaggingError(f"no clean images of model {model_version} to retag")
    warehouse.run("reset_image_tags_candidate")
    images = tag_rows = 0
    rejects = []
    untagged: dict[str, int] = {}
    for i in range(0, len(partitions), chunk_days):
        first, last = partitions[i], partitions[min(i + chunk_days, len(partitions)) - 1]
        frame = tagging_rows(warehouse, taxonomy, vectors, first, last, model_version)
        tagged = tag_frame(frame, taxonomy, heads, embedding_matrix(frame["embedding"]) if vectors else None, tower)
        rows = long_rows(frame, tagged, taxonomy, heads, run_id)
        warehouse.run("append_image_tags_candidate", rows=rows, names={"columns": TAG_COLUMNS})
        rejects.append(reject_rows(frame, tagged))
        images, tag_rows = images + frame.num_rows, tag_rows + rows.num_rows
        for d, n in tagged.untagged.items():
            untagged[d] = untagged.get(d, 0) + n
        log.info("retag: %s..%s, %d images so far, %d tag rows", first, last, images, tag_rows)
    gate = warehouse.query("retag_gate")
    lost = sorted(gate.loc[(gate["serving_rows"] > 0) & (gate["candidate_rows"] == 0), "dimension"])
    result = {
        "images": images,
        "tag_rows": tag_rows,
        "partitions": len(partitions),
        "taxonomy_version": taxonomy.version,
        "head_version": heads.version if heads is not None else None,
        "untagged": {d: n for d, n in untagged.items() if n},
        "lost_dimensions": lost,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if lost:
        result["switched"] = False
        log.error("retag refused: dimensions %s would lose every tag; image_tags unchanged", lost)
        return result
    all_rejects = pd.concat(rejects, ignore_index=True)
    warehouse.run(
        "switch_image_tags", rows=all_rejects.assign(run_id=run_id), names={"columns": TAG_COLUMNS}, run_id=run_id
    )
    result["switched"] = True
    result["unknown_tags"] = len(all_rejects)
    log.info("retag switched image_tags: %s", result)
    return result
