"""The tag taxonomy: data, not code. A JSON file (VECFLOW_TAXONOMY_URL: a path or an fsspec URL,
the shipped include/taxonomy.json by default) declares any number of dimensions, each with its tags
(key, display name, synonyms) and where its tags come from. It is validated completely when read: a
problem is a `TaxonomyError` naming the file, the dimension and what is wrong, never a KeyError in a
task. Its version is the hash of its content, stamped on every image_tags row.

A dimension:

    "brand": {
      "display": "Brand",
      "source": "catalog",        catalog | model | head | pixels | rules | zero_shot
      "fallback": "head",         optional: a second source where the first gives no tag
      "multi_label": false,       an image may carry several tags of the dimension
      "none_tag": "none",         optional: the explicit not-applicable tag (an image with no value gets it)
      "column": "brand",          catalog: the catalog column or attribute key (default: the dimension's name)
      "separator": "|",           catalog, multi_label: a string value is split on it (a JSON list is taken as it is)
      "analyser": "colour",       pixels: `colour` or `pattern`
      "from": "category",         rules: the dimension the rules read
      "zero_shot_threshold": 0.25, zero_shot, multi_label: a tag is given above this cosine
      "tags": {"key": {"display": "...", "synonyms": ["..."], ...per-source fields}}
    }

Per-source tag fields: colour `rgb` [r, g, b]; pattern `layout` (stripes, checks, dots) with
`period_px` (one tag without a layout is the plain fabric); rules `from` [tags of the `from`
dimension]; zero_shot `prompts` [texts]. `category` is required: it partitions the indexes, so it is
single-label and comes from the catalog, the model's head or a trained head.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from vecflow.config import ConfigError
from vecflow_model.pixel_tags import PATTERN_LAYOUTS, PATTERN_PERIODS

SOURCES = ("catalog", "model", "head", "pixels", "rules", "zero_shot")
# where a tag of each source is computed: from the catalog row, or from what the embedding job wrote
CATEGORY_SOURCES = ("catalog", "model", "head")
ANALYSERS = ("colour", "pattern")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TAG_KEY = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
# names taken by image_tags' and tag_trends' own columns
RESERVED_DIMENSIONS = {
    "source",
    "attributes",
    "image_id",
    "listed_date",
    "facet",
    "tag",
    "dimension",
    "month",
    "images",
}


class TaxonomyError(ConfigError):
    """The taxonomy file is unreadable or inconsistent; the message names the file, the dimension
    and the problem."""


def normalise(value: str) -> str:
    """How catalog values meet synonyms: case, spacing, hyphens and underscores do not matter."""
    return re.sub(r"[\s_\-]+", " ", str(value)).strip().casefold()


@dataclass(frozen=True)
class Dimension:
    name: str
    display: str
    source: str
    tags: dict[str, dict]
    fallback: str | None = None
    multi_label: bool = False
    none_tag: str | None = None
    column: str | None = None
    separator: str = "|"
    analyser: str | None = None
    derived_from: str | None = None
    zero_shot_threshold: float = 0.25
    synonyms: dict[str, str] = field(default_factory=dict)  # normalised synonym or key or display -> tag

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source, self.fallback) if self.fallback else (self.source,)

    def map_value(self, value) -> str | None:
        """The tag a catalog value (or a model's class name) names, or None."""
        return self.synonyms.get(normalise(value))


@dataclass(frozen=True)
class Taxonomy:
    raw: dict
    location: str = "taxonomy"
    version: str = ""
    dims: dict[str, Dimension] = field(default_factory=dict)

    @property
    def dimensions(self) -> list[str]:
        return list(self.dims)

    def dimension(self, name: str) -> Dimension:
        try:
            return self.dims[name]
        except KeyError:
            raise ConfigError(f"unknown tag dimension {name!r}; known: {self.dimensions}") from None

    def tags(self, dimension: str) -> list[str]:
        return list(self.dimension(dimension).tags)

    def tag_info(self, dimension: str, tag: str) -> dict:
        return self.dimension(dimension).tags[tag]

    def by_source(self, source: str) -> list[Dimension]:
        """Dimensions whose tags come from `source`, first or as the fallback."""
        return [d for d in self.dims.values() if source in d.sources]

    def category_by_label(self) -> dict[int, str]:
        """Category tags by their `label` (the demo generator's Fashion-MNIST classes)."""
        labelled = {info["label"]: tag for tag, info in self.dimension("category").tags.items() if "label" in info}
        if len(labelled) != len(self.dims["category"].tags):
            raise TaxonomyError(f"{self.location}: category: every tag needs a `label` for the demo generator")
        return labelled

    def derivations(self) -> list[dict]:
        """(dimension, tag, from_dimension, from_tag) of every rules dimension."""
        return [
            {"dimension": d.name, "tag": tag, "from_dimension": d.derived_from, "from_tag": source_tag}
            for d in self.by_source("rules")
            for tag, info in d.tags.items()
            for source_tag in info.get("from", [])
        ]

    def derived(self, dimension: str) -> dict[str, str]:
        """from_tag -> tag of a single-label rules dimension (what `style` a `category` has)."""
        return {r["from_tag"]: r["tag"] for r in self.derivations() if r["dimension"] == dimension}

    def rows(self) -> list[dict]:
        """The warehouse `taxonomy` table: one row per tag with its dimension's declaration."""
        return [
            {
                "dimension": d.name,
                "tag": tag,
                "display": info.get("display", tag),
                "dimension_display": d.display,
                "tag_source": d.source,
                "multi_label": d.multi_label,
                "taxonomy_version": self.version,
            }
            for d in self.dims.values()
            for tag, info in d.tags.items()
        ]


def _check_dimension(where: str, name: str, spec) -> Dimension:
    def fail(problem: str):
        raise TaxonomyError(f"{where}: dimension {name!r}: {problem}")

    if not NAME.match(name) or name in RESERVED_DIMENSIONS:
        fail(f"a dimension name is lower-case letters, digits and _ (not {sorted(RESERVED_DIMENSIONS)})")
    if not isinstance(spec, dict):
        fail("must be an object")
    source = spec.get("source")
    if source not in SOURCES:
        fail(f"source {source!r} is not one of {list(SOURCES)}")
    fallback = spec.get("fallback")
    if fallback is not None and (fallback not in ("model", "head") or fallback == source):
        fail(f"fallback {fallback!r} must be `model` or `head`, and not the source itself")
    multi = spec.get("multi_label", False)
    if not isinstance(multi, bool):
        fail("multi_label must be true or false")
    tags = spec.get("tags")
    if not isinstance(tags, dict) or not tags:
        fail("tags must be a non-empty object")
    synonyms: dict[str, str] = {}
    for tag, info in tags.items():
        if not TAG_KEY.match(str(tag)):
            fail(f"tag key {tag!r} must be lower-case letters, digits and _")
        if not isinstance(info, dict):
            fail(f"tag {tag!r} must be an object")
        names = info.get("synonyms", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            fail(f"tag {tag!r}: synonyms must be a list of non-empty strings")
        if not isinstance(info.get("display", tag), str):
            fail(f"tag {tag!r}: display must be a string")
        for synonym in {tag, info.get("display", tag), *names}:
            key = normalise(synonym)
            if synonyms.setdefault(key, tag) != tag:
                fail(f"{synonym!r} names both {synonyms[key]!r} and {tag!r}")
    none_tag = spec.get("none_tag")
    if none_tag is not None and none_tag not in tags:
        fail(f"none_tag {none_tag!r} is not one of its tags")
    column = spec.get("column", name)
    if source == "catalog" and not (isinstance(column, str) and column):
        fail("column must name a catalog column or attribute key")
    separator = spec.get("separator", "|")
    if not isinstance(separator, str) or not separator:
        fail("separator must be a non-empty string")
    analyser = spec.get("analyser")
    if source == "pixels":
        if multi:
            fail("a pixels dimension is single-label")
        if analyser not in ANALYSERS:
            fail(f"analyser {analyser!r} is not one of {list(ANALYSERS)}")
        if analyser == "colour":
            for tag, info in tags.items():
                rgb = info.get("rgb")
                if not (
                    isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)
                ):
                    fail(f"colour {tag!r} needs rgb: three integers 0..255")
        else:
            plain = [tag for tag, info in tags.items() if "layout" not in info]
            if len(plain) != 1:
                fail(f"exactly one pattern tag has no layout (the plain fabric); found {plain}")
            for tag, info in tags.items():
                if "layout" not in info:
                    continue
                if info["layout"] not in PATTERN_LAYOUTS:
                    fail(
                        f"pattern {tag!r}: no detector for layout {info['layout']!r}; layouts: {list(PATTERN_LAYOUTS)}"
                    )
                if info.get("period_px") not in PATTERN_PERIODS:
                    fail(
                        f"pattern {tag!r}: period_px {info.get('period_px')!r} is not a measured period {list(PATTERN_PERIODS)}"
                    )
            seen: dict[tuple, str] = {}
            for tag, info in tags.items():
                if "layout" in info and seen.setdefault((info["layout"], info["period_px"]), tag) != tag:
                    fail(
                        f"patterns {seen[(info['layout'], info['period_px'])]!r} and {tag!r} are the same layout and period"
                    )
    if source == "zero_shot":
        for tag, info in tags.items():
            prompts = info.get("prompts")
            if not (isinstance(prompts, list) and prompts and all(isinstance(p, str) and p.strip() for p in prompts)):
                fail(f"zero_shot tag {tag!r} needs prompts: a non-empty list of non-empty texts")
    threshold = spec.get("zero_shot_threshold", 0.25)
    if not (isinstance(threshold, int | float) and not isinstance(threshold, bool) and -1 < threshold < 1):
        fail(f"zero_shot_threshold {threshold!r} must be a number between -1 and 1 (a cosine)")
    return Dimension(
        name=name,
        display=str(spec.get("display", name)),
        source=source,
        tags=tags,
        fallback=fallback,
        multi_label=multi,
        none_tag=none_tag,
        column=column if source == "catalog" else None,
        separator=separator,
        analyser=analyser,
        derived_from=spec.get("from"),
        zero_shot_threshold=float(threshold),
        synonyms=synonyms,
    )


def parse_taxonomy(raw, location: str = "taxonomy", version: str = "") -> Taxonomy:
    """A validated Taxonomy of a parsed taxonomy file, or a TaxonomyError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("dimensions"), dict) or not raw["dimensions"]:
        raise TaxonomyError(f"{location}: 'dimensions' must be a non-empty object")
    dims = {name: _check_dimension(location, name, spec) for name, spec in raw["dimensions"].items()}
    category = dims.get("category")
    if category is None:
        raise TaxonomyError(
            f"{location}: dimension 'category' is required (it partitions the indexes); found {sorted(dims)}"
        )
    column = raw["dimensions"]["category"].get("column", "category")
    if column != "category":
        raise TaxonomyError(
            f"{location}: dimension 'category': column {column!r} must be 'category' (the catalog's "
            "category column; VECFLOW_CATALOG_COLUMNS maps a catalog's own column onto it)"
        )
    if category.multi_label or category.source not in CATEGORY_SOURCES:
        raise TaxonomyError(
            f"{location}: dimension 'category': single-label, from one of {list(CATEGORY_SOURCES)} (found "
            f"source {category.source!r}, multi_label {category.multi_label})"
        )
    for d in dims.values():
        if "model" in d.sources and d.name != "category":
            raise TaxonomyError(f"{location}: dimension {d.name!r}: source `model` is the model's category head only")
        for analyser in ANALYSERS:
            users = [x.name for x in dims.values() if x.analyser == analyser]
            if len(users) > 1:
                raise TaxonomyError(f"{location}: dimensions {users} both use the {analyser} analyser")
        if d.source != "rules":
            continue
        if d.derived_from not in dims or d.derived_from == d.name:
            raise TaxonomyError(
                f"{location}: dimension {d.name!r}: rules read `from` another dimension, not {d.derived_from!r}"
            )
        base = dims[d.derived_from]
        if base.source == "rules":
            raise TaxonomyError(
                f"{location}: dimension {d.name!r}: rules read a dimension with tags of its own, not rules dimension {base.name!r}"
            )
        claimed: dict[str, str] = {}
        for tag, info in d.tags.items():
            for source_tag in info.get("from", []):
                if source_tag not in base.tags:
                    raise TaxonomyError(
                        f"{location}: dimension {d.name!r}: tag {tag!r} derives from {source_tag!r}, not a {base.name} tag"
                    )
                if not d.multi_label and claimed.setdefault(source_tag, tag) != tag:
                    raise TaxonomyError(
                        f"{location}: dimension {d.name!r}: {base.name}={source_tag} derives both {claimed[source_tag]!r} and {tag!r}"
                    )
    return Taxonomy(raw=raw, location=location, version=version, dims=dims)


def read_taxonomy_bytes(url: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise TaxonomyError(f"taxonomy file {url} does not exist (VECFLOW_TAXONOMY_URL)") from None


@lru_cache(maxsize=8)
def _parsed(url: str, content: bytes) -> Taxonomy:
    try:
        raw = json.loads(content)
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"taxonomy file {url} is not valid JSON: {exc}") from None
    return parse_taxonomy(raw, f"taxonomy file {url}", hashlib.sha256(content).hexdigest()[:12])


def load_taxonomy(url: str | None = None) -> Taxonomy:
    """The configured taxonomy (VECFLOW_TAXONOMY_URL), or the one at `url`; read on every call (a
    changed file is a new version), parsed once per content."""
    if url is None:
        from vecflow.config import settings

        url = settings().tags.taxonomy_url
    return _parsed(str(url), read_taxonomy_bytes(str(url)))
