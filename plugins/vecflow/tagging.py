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
import io
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson

from vecflow.pixel_tags import ANALYSER_TAGS
from vecflow.taxonomy import Dimension, Taxonomy, normalise

log = logging.getLogger(__name__)

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


class TaggingError(RuntimeError):
    """Tags cannot be computed as the taxonomy asks (a zero_shot dimension and no text tower)."""


@dataclass
class Tagged:
    tags: pd.DataFrame  # row (position in the frame), dimension, tag, confidence, tag_source
    rejects: pd.DataFrame  # row, dimension, reason, detail
    untagged: dict[str, int]  # dimension -> images that got no tag (no value, no head, below thresholds)


def parse_analyses(values) -> list[dict]:
    return [json.loads(v) if isinstance(v, str) and v else {} for v in values]


def analyses_columns(values: pd.Series) -> pd.DataFrame:
    """Each row's analyses JSON as flat columns `analyses.<analyser>.<field>` (nested keys joined by
    dots; NaN or None where a row has no such field), indexed like `values`. Arrow's JSON reader parses
    the whole column in one pass, several times faster than json.loads per row and with no per-row
    dicts (a retag parses a million); a column it cannot read is parsed row by row instead."""
    texts = [v if isinstance(v, str) and v else "{}" for v in values]
    flat = None
    if texts:
        try:
            # the job writes a colourless garment's hue as NaN, which is not JSON; keys and tag keys are
            # lower-case, so "NaN" is only ever that token
            table = pajson.read_json(io.BytesIO("\n".join(texts).replace("NaN", "null").encode()))
            while any(pa.types.is_struct(field.type) for field in table.schema):
                table = table.flatten()
            if table.num_rows == len(texts):
                flat = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
        except pa.ArrowInvalid:  # a field that is a number in one row and a string in another, a NaN in a string
            pass
    if flat is None:
        normalised = pd.json_normalize(parse_analyses(values)) if texts else pd.DataFrame()
        flat = {name: normalised[name].to_numpy() for name in normalised.columns}
    return pd.DataFrame(flat, index=values.index).add_prefix("analyses.")


def _analysis(frame: pd.DataFrame, key: str, dtype=object) -> pd.Series:
    """One analyses field per row (`model.category`, `legacy.color.tag`); None or NaN where absent."""
    column = f"analyses.{key}"
    return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=dtype)


def _catalog_values(frame: pd.DataFrame, dim: Dimension) -> pd.Series:
    """The catalog value of a dimension per row: a catalog column or a key of `attributes`."""
    if dim.column in ("category", "catalog_category"):
        return frame["catalog_category"]
    if dim.column in frame.columns and dim.column != "attributes":
        return frame[dim.column]
    attributes = frame["parsed_attributes"]
    return pd.Series([a.get(dim.column) for a in attributes], index=frame.index, dtype=object)


def _catalog_tags(frame: pd.DataFrame, dim: Dimension) -> tuple[pd.DataFrame, pd.DataFrame]:
    values = _catalog_values(frame, dim)
    if dim.multi_label:  # a JSON list, or a string split on the separator
        values = values.map(
            lambda v: v if isinstance(v, list) else ([] if v is None or v != v else str(v).split(dim.separator))
        )
        values = values.explode()
    text = values.astype(str)
    present = values.notna() & (text.str.strip() != "")
    values, text = values[present], text[present]
    # a catalog repeats few distinct values: each is normalised and looked up once
    distinct = pd.unique(text)
    tags = text.map(dict(zip(distinct, (dim.synonyms.get(normalise(v)) for v in distinct))))
    found = tags.notna()
    out = pd.DataFrame({"row": tags.index[found], "tag": tags[found].to_numpy(), "confidence": 1.0})
    unknown = values[~found]
    rejects = pd.DataFrame(
        {
            "row": unknown.index,
            "dimension": dim.name,
            "reason": "unknown_tag",
            "detail": [f"{dim.name}={v!r} names no {dim.name} tag (catalog {dim.column})" for v in unknown],
        }
    )
    return out.drop_duplicates(["row", "tag"]), rejects


def _model_tags(frame: pd.DataFrame, dim: Dimension) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = _analysis(frame, f"model.{dim.name}").dropna()
    conf = pd.to_numeric(_analysis(frame, "model.confidence", float), errors="coerce")
    tags = names.map(lambda v: dim.map_value(v))
    found = tags.notna()
    out = pd.DataFrame({"row": tags.index[found], "tag": tags[found].to_numpy(), "confidence": conf[tags.index[found]]})
    unknown = names[~found]
    rejects = pd.DataFrame(
        {
            "row": unknown.index,
            "dimension": dim.name,
            "reason": "unknown_tag",
            "detail": [f"{dim.name}: the model's class {v!r} names no {dim.name} tag" for v in unknown],
        }
    )
    return out, rejects


def _pixel_tags(frame: pd.DataFrame, dim: Dimension) -> tuple[pd.DataFrame, pd.DataFrame]:
    prefix = f"analyses.{dim.analyser}."
    measured = frame[[c for c in frame.columns if c.startswith(prefix)]]
    measured.columns = [c[len(prefix) :] for c in measured.columns]
    has = measured.notna().any(axis=1).to_numpy()
    out = pd.DataFrame(columns=["row", "tag", "confidence"])
    if has.any():
        index = frame.index[has]
        tags = ANALYSER_TAGS[dim.analyser](measured[has].apply(pd.to_numeric, errors="coerce"), dim)
        out = pd.DataFrame({"row": index, "tag": tags["tag"].to_numpy(), "confidence": tags["confidence"].to_numpy()})
    # rows migrated from before analyses were kept: their tag as it was computed then
    legacy = _analysis(frame, f"legacy.{dim.name}.tag")
    kept = ~has & legacy.isin(list(dim.tags)).to_numpy()
    if kept.any():
        confidence = pd.to_numeric(_analysis(frame, f"legacy.{dim.name}.confidence", float), errors="coerce")
        old = pd.DataFrame(
            {"row": frame.index[kept], "tag": legacy[kept].to_numpy(), "confidence": confidence[kept].to_numpy()}
        )
        out = pd.concat([out, old], ignore_index=True)
    return out, _no_rejects()


def _head_tags(
    frame: pd.DataFrame, dim: Dimension, heads, vectors: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if heads is None or dim.name not in heads.dimensions:  # counted as untagged, and warned about once
        return pd.DataFrame(columns=["row", "tag", "confidence"]), _no_rejects()
    predicted = heads.predict(dim.name, vectors)
    return (
        pd.DataFrame(
            {
                "row": frame.index[predicted["row"].to_numpy()],
                "tag": predicted["tag"].to_numpy(),
                "confidence": predicted["confidence"].to_numpy(),
            }
        ),
        _no_rejects(),
    )


def _zero_shot_tags(
    frame: pd.DataFrame, dim: Dimension, tower, vectors: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        return pd.DataFrame(columns=["row", "tag", "confidence"]), _no_rejects()
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
    out = pd.DataFrame({"row": frame.index[rows], "tag": tags[columns], "confidence": np.round(confidence, 3)})
    return out, _no_rejects()


def _no_rejects() -> pd.DataFrame:
    return pd.DataFrame(columns=["row", "dimension", "reason", "detail"])


def _source_tags(source: str, frame, dim, heads, vectors, tower=None) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def dimension_tags(
    frame: pd.DataFrame, dim: Dimension, heads=None, vectors=None, tower=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(row, tag, confidence, tag_source) of a non-rules dimension and its rejects; `frame` has
    the analyses columns and parsed_attributes (prepare)."""
    tags, rejects = _source_tags(dim.source, frame, dim, heads, vectors, tower)
    tags = tags.assign(tag_source=dim.source)
    if dim.fallback:
        missing = frame.index.difference(pd.Index(tags["row"]))
        if len(missing):
            rows = frame.loc[missing]
            positions = frame.index.get_indexer(missing)
            extra, extra_rejects = _source_tags(
                dim.fallback, rows, dim, heads, None if vectors is None else vectors[positions]
            )
            tags = pd.concat([tags, extra.assign(tag_source=dim.fallback)], ignore_index=True)
            rejects = pd.concat([rejects, extra_rejects], ignore_index=True)
            # a catalog value that named no tag and was then filled by the fallback is still reported
    if dim.none_tag:
        missing = frame.index.difference(pd.Index(tags["row"]))
        none = pd.DataFrame({"row": missing, "tag": dim.none_tag, "confidence": 1.0, "tag_source": dim.source})
        tags = pd.concat([tags, none], ignore_index=True)
    return tags, rejects


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its JSON columns parsed once (analyses as flat columns, attributes as dicts),
    indexed by position."""
    frame = frame.reset_index(drop=True)
    return frame.assign(
        parsed_attributes=parse_analyses(frame["attributes"]) if "attributes" in frame else [{}] * len(frame),
    ).join(analyses_columns(frame["analyses"]) if "analyses" in frame else pd.DataFrame(index=frame.index))


def resolve_category(frame: pd.DataFrame, taxonomy: Taxonomy, heads=None, vectors=None) -> pd.Series:
    """Each row's category tag (None where no source gives one): the index partition key, resolved
    when a shard is loaded, as tag_frame resolves it."""
    frame = prepare(frame)
    tags, _ = dimension_tags(frame, taxonomy.dimension("category"), heads, vectors)
    return pd.Series(tags.set_index("row")["tag"]).reindex(frame.index)


def tag_frame(frame: pd.DataFrame, taxonomy: Taxonomy, heads=None, vectors=None, tower=None) -> Tagged:
    """Every dimension's tags of the frame's images (image_id, catalog_category, source, analyses,
    attributes; `vectors` row-aligned when a dimension has a head or is zero_shot, `tower` the text
    tower of a zero_shot dimension)."""
    frame = prepare(frame)
    parts, rejects, untagged = [], [], {}
    by_name: dict[str, pd.DataFrame] = {}
    for dim in taxonomy.dims.values():
        if dim.source == "rules":
            continue
        tags, bad = dimension_tags(frame, dim, heads, vectors, tower)
        by_name[dim.name] = tags
        parts.append(tags.assign(dimension=dim.name))
        rejects.append(bad)
    for dim in taxonomy.by_source("rules"):
        rules = pd.DataFrame(
            [(r["from_tag"], r["tag"]) for r in taxonomy.derivations() if r["dimension"] == dim.name],
            columns=["from_tag", "tag"],
        )
        base = by_name[dim.derived_from].rename(columns={"tag": "from_tag"})[["row", "from_tag", "confidence"]]
        derived = base.merge(rules, on="from_tag")[["row", "tag", "confidence"]].drop_duplicates(["row", "tag"])
        parts.append(derived.assign(dimension=dim.name, tag_source="rules"))
    tags = pd.concat(parts, ignore_index=True).astype({"row": int})
    awaiting = [d.name for d in taxonomy.by_source("head") if heads is None or d.name not in heads.dimensions]
    if awaiting and len(frame):
        log.warning(
            "dimensions %s are tagged by a head and no head set for them is trained: they stay untagged until "
            "`python -m vecflow.cli tags train --labels FILE` and a retag",
            awaiting,
        )
    for dim in taxonomy.dims.values():
        tagged = tags.loc[tags["dimension"] == dim.name, "row"].nunique()
        untagged[dim.name] = len(frame) - int(tagged)
    rejects = pd.concat(rejects, ignore_index=True)
    return Tagged(tags=tags, rejects=rejects, untagged=untagged)


def long_rows(frame: pd.DataFrame, tagged: Tagged, taxonomy: Taxonomy, heads, run_id: str) -> pd.DataFrame:
    """image_tags rows (TAG_COLUMNS) of a tagged frame."""
    frame = frame.reset_index(drop=True)
    t = tagged.tags
    rows = t["row"].to_numpy(dtype=int)
    return pd.DataFrame(
        {
            "image_id": frame["image_id"].to_numpy()[rows],
            "listed_date": frame["listed_date"].to_numpy()[rows],
            "dimension": t["dimension"].to_numpy(),
            "tag": t["tag"].to_numpy(),
            "confidence": pd.to_numeric(t["confidence"], errors="coerce").to_numpy(dtype=float),
            "tag_source": t["tag_source"].to_numpy(),
            "run_id": run_id,
            "source": frame["source"].to_numpy()[rows],
            "taxonomy_version": taxonomy.version,
            "head_version": heads.version if heads is not None else None,
        },
        columns=TAG_COLUMNS,
    )


def reject_rows(frame: pd.DataFrame, tagged: Tagged) -> pd.DataFrame:
    """rejects rows (image_id, reason, detail, category) of a tagged frame."""
    frame = frame.reset_index(drop=True)
    rows = tagged.rejects["row"].to_numpy(dtype=int)
    return pd.DataFrame(
        {
            "image_id": frame["image_id"].to_numpy()[rows],
            "listed_date": frame["listed_date"].to_numpy()[rows],
            "reason": tagged.rejects["reason"].to_numpy(),
            "detail": tagged.rejects["detail"].to_numpy(),
            "category": frame["category"].to_numpy()[rows],
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


def vectors_of(frame: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["embedding"]]) if len(frame) else np.zeros((0, 0))


def embedding_matrix(embeddings: pa.ChunkedArray) -> np.ndarray:
    """(n, d) float32 of an Arrow list column of equal-length vectors, without a Python loop."""
    flat = embeddings.combine_chunks()
    if len(flat) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(flat), -1)


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
    version (analysts and SQL steps read them); returns whether it wrote."""
    if warehouse.has_table("taxonomy"):
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


def tag_partition(settings, warehouse, taxonomy: Taxonomy, run_date: dt.date, run_id: str, model_version: str) -> dict:
    """Replaces a partition's image_tags and tag rejects with the taxonomy's tags of its clean images,
    and records the stage's funnel (in: images, out: images tagged, per category)."""
    from vecflow.funnel import replace_rejects, replace_stage_funnel

    publish_taxonomy(warehouse, taxonomy)
    heads = head_set(settings, taxonomy, model_version)
    tower = text_tower(settings, taxonomy, model_version)
    vectors = needs_vectors(heads, tower)
    frame = warehouse.query(
        "select_tagging_rows",
        names={"extra_columns": ["embedding"] if vectors else []},
        date_from=run_date,
        date_to=run_date,
        model_version=model_version,
    )
    tagged = tag_frame(frame, taxonomy, heads, vectors_of(frame) if vectors else None, tower)
    rows = long_rows(frame, tagged, taxonomy, heads, run_id)
    warehouse.run("replace_image_tags", rows=rows, names={"columns": TAG_COLUMNS}, run_date=run_date)
    rejects = reject_rows(frame, tagged)
    replace_rejects(warehouse, "tags", run_date, run_id, rejects)
    tagged_images = frame[frame["image_id"].isin(rows["image_id"])]
    counts = {(c, "in"): n for c, n in frame["category"].value_counts().items()}
    counts |= {(c, "out"): n for c, n in tagged_images["category"].value_counts().items()}
    replace_stage_funnel(warehouse, "tags", run_date, run_id, counts)
    stats = {
        "images": len(frame),
        "tag_rows": len(rows),
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
        frame = warehouse.query(
            "select_tagging_rows",
            names={"extra_columns": ["embedding"] if vectors else []},
            date_from=first,
            date_to=last,
            model_version=model_version,
        )
        tagged = tag_frame(frame, taxonomy, heads, vectors_of(frame) if vectors else None, tower)
        rows = long_rows(frame, tagged, taxonomy, heads, run_id)
        warehouse.run("append_image_tags_candidate", rows=rows, names={"columns": TAG_COLUMNS})
        rejects.append(reject_rows(frame, tagged))
        images, tag_rows = images + len(frame), tag_rows + len(rows)
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
