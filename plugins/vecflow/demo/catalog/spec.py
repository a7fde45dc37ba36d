"""Trend spec: which tag shares move across the date range, and how much to plant.

The generator draws the tags of `category` and of every pixels- and catalog-sourced dimension
(`drawn_dimensions`); rules and head dimensions follow from the category (world.derived_dimensions).
A single-label dimension's planted tags move linearly and the others share the rest in proportion to
their weights (even, Zipf by rank where the spec says `zipf`, or by category: world.CATEGORY_WEIGHTS).
In a multi-label dimension each planted tag is carried with its planned probability and every image
carries OTHER_TAGS more tags drawn evenly from the rest, so the others' shares stay put."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vecflow.config import ConfigError, read_json
from vecflow.demo.catalog.world import CATEGORY_WEIGHTS, derived_dimensions
from vecflow.taxonomy import Taxonomy

if TYPE_CHECKING:  # numpy and pandas are imported where shares are computed, not when a spec is read
    import numpy as np
    import pandas as pd

SOURCES = ("shop_a", "shop_b", "shop_c")
# what a trend can be planted within: a facet key and its values
WITHIN_KEYS = ("category", "source")
RATE_FIELDS = ("exact_duplicate_rate", "near_duplicate_rate", "corrupt_rate")
# how a catalog writes a catalog-sourced tag, besides its display name: in another case or spacing,
# by a synonym (misspellings included), or as a value that names no tag (an `unknown_tag` reject)
VALUE_RATE_FIELDS = ("variant_rate", "synonym_rate", "unknown_rate")
# tags of a multi-label dimension an image carries besides the planted ones: 1 or 2, evenly
OTHER_TAGS = (1, 2)


def drawn_dimensions(taxonomy: Taxonomy) -> list[str]:
    """The dimensions the generator draws tags for, in drawing order (trends are planted in these):
    category first (others can be planted within it), then the pixels and catalog ones."""
    return ["category"] + [
        d.name for d in taxonomy.dims.values() if d.name != "category" and d.source in ("pixels", "catalog")
    ]


def catalog_dimensions(taxonomy: Taxonomy) -> list:
    """The catalog-sourced dimensions written as manifest columns (category is its own column)."""
    return [d for d in taxonomy.dims.values() if d.source == "catalog" and d.name != "category"]


@dataclass(frozen=True)
class Trend:
    dimension: str
    tag: str
    from_share: float
    to_share: float
    # (key, value): planted among the images with that category or source only; None: the whole catalog
    within: tuple[str, str] | None = None

    @property
    def facet(self) -> str:
        """The facet it is planted in, as tag_trends writes it ('' for the whole catalog)."""
        from vecflow.search.queries import facet_label

        return facet_label(dict([self.within]) if self.within else {})

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "within"}
        return {**out, "within": {self.within[0]: self.within[1]}} if self.within else out


@dataclass(frozen=True)
class TrendSpec:
    trends: tuple[Trend, ...]
    exact_duplicate_rate: float
    near_duplicate_rate: float
    corrupt_rate: float
    # dimension -> Zipf exponent: its unplanted tags' popularity falls with their rank in the taxonomy
    zipf: dict[str, float] = field(default_factory=dict)
    # VALUE_RATE_FIELDS -> rate, for every catalog-sourced dimension (absent: 0)
    catalog_values: dict[str, float] = field(default_factory=dict)

    def value_rate(self, name: str) -> float:
        return self.catalog_values.get(name, 0.0)

    def to_json(self) -> dict:
        return {
            "trends": [t.to_json() for t in self.trends],
            **{f: getattr(self, f) for f in RATE_FIELDS},
            "zipf": dict(self.zipf),
            "catalog_values": dict(self.catalog_values),
        }


def _share(value, field: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"trend spec: {field}={value!r} must be a number in [0, 1]")
    return float(value)


def parse_trend_spec(raw: dict, taxonomy: Taxonomy, source: str = "trend spec") -> TrendSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a JSON object")
    unknown = set(raw) - {"trends", *RATE_FIELDS, "zipf", "catalog_values"}
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {sorted(unknown)}")
    items = raw.get("trends", [])
    if not isinstance(items, list):
        raise ConfigError(f"{source}: 'trends' must be a list")
    trends = []
    for i, item in enumerate(items):
        where = f"{source}: trends[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object")
        for key in ("dimension", "tag", "from_share", "to_share"):
            if key not in item:
                raise ConfigError(f"{where}.{key} is missing")
        unknown = set(item) - {"dimension", "tag", "from_share", "to_share", "within"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        dim, tag = item["dimension"], item["tag"]
        if dim not in drawn_dimensions(taxonomy):
            raise ConfigError(f"{where}.dimension={dim!r} must be one of {drawn_dimensions(taxonomy)}")
        if tag not in taxonomy.tags(dim):
            raise ConfigError(f"{where}.tag={tag!r} is not a {dim} tag; known: {taxonomy.tags(dim)}")
        trends.append(
            Trend(
                dim,
                tag,
                _share(item["from_share"], f"{where}.from_share"),
                _share(item["to_share"], f"{where}.to_share"),
                _within(item.get("within"), dim, taxonomy, where),
            )
        )
    zipf = _zipf(raw.get("zipf", {}), taxonomy, source)
    for dim in drawn_dimensions(taxonomy):
        keys = {t.within[0] for t in trends if t.dimension == dim and t.within}
        if len(keys) > 1:
            raise ConfigError(f"{source}: {dim} trends are planted within {sorted(keys)}; use one key per dimension")
        for within in {t.within for t in trends if t.dimension == dim}:
            mine = [t for t in trends if t.dimension == dim and t.within == within]
            group = f"{dim} within {within[0]}={within[1]}" if within else dim
            if len({t.tag for t in mine}) != len(mine):
                raise ConfigError(f"{source}: a {group} tag is planted twice")
            _check_group(trends, taxonomy, dim, within, zipf, f"{source}: planted {group}")
    rates = {}
    for name in RATE_FIELDS:
        value = raw.get(name, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 0.3:
            raise ConfigError(f"{source}: {name}={value!r} must be a number in [0, 0.3]")
        rates[name] = float(value)
    if sum(rates.values()) > 0.5:
        raise ConfigError(f"{source}: planted rates sum to {sum(rates.values()):.2f}; keep them below 0.5")
    values = raw.get("catalog_values", {})
    if not isinstance(values, dict) or set(values) - set(VALUE_RATE_FIELDS):
        raise ConfigError(f"{source}: catalog_values must be an object of {list(VALUE_RATE_FIELDS)}")
    values = {k: _share(v, f"{source}: catalog_values.{k}") for k, v in values.items()}
    if sum(values.values()) > 1.0:
        raise ConfigError(f"{source}: catalog_values rates sum to {sum(values.values()):.2f}; at most 1")
    return TrendSpec(tuple(trends), **rates, zipf=zipf, catalog_values=values)


def _zipf(raw, taxonomy: Taxonomy, source: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ConfigError(f'{source}: zipf must be an object of dimension -> exponent, e.g. {{"brand": 1.0}}')
    for dim, exponent in raw.items():
        if dim not in drawn_dimensions(taxonomy) or dim in CATEGORY_WEIGHTS or taxonomy.dimension(dim).multi_label:
            raise ConfigError(
                f"{source}: zipf.{dim}: a Zipf popularity is for a single-label dimension the generator draws "
                f"whose tags do not depend on the category ({drawn_dimensions(taxonomy)}, not {sorted(CATEGORY_WEIGHTS)})"
            )
        if not isinstance(exponent, (int, float)) or isinstance(exponent, bool) or not 0.0 < exponent <= 4.0:
            raise ConfigError(f"{source}: zipf.{dim}={exponent!r} must be a number in (0, 4]")
    return {dim: float(exponent) for dim, exponent in raw.items()}


def tag_weights(taxonomy: Taxonomy, dimension: str, zipf: dict[str, float], category: str | None) -> dict[str, float]:
    """The tags an image of `category` can carry in a dimension, with their relative weights before any
    trend: by category where the demo's world says so, else every tag but the none tag, evenly or Zipf."""
    if dimension in CATEGORY_WEIGHTS:
        return CATEGORY_WEIGHTS[dimension][category]
    d = taxonomy.dimension(dimension)
    exponent = zipf.get(dimension, 0.0)
    return {tag: rank**-exponent for rank, tag in enumerate((t for t in d.tags if t != d.none_tag), 1)}


def _categories(taxonomy: Taxonomy, dimension: str, within: tuple[str, str] | None) -> list[str | None]:
    """The categories whose images a group's shares differ by (None: they do not)."""
    if dimension not in CATEGORY_WEIGHTS:
        return [None]
    return [within[1]] if within and within[0] == "category" else taxonomy.tags("category")


def tag_plan(
    spec: TrendSpec, taxonomy: Taxonomy, dimension: str, within: tuple[str, str] | None, category: str | None
) -> tuple[dict[str, Trend], dict[str, float]]:
    """A group's (and category's) planted trends and the other tags it can carry, with their weights."""
    weights = tag_weights(taxonomy, dimension, spec.zipf, category)
    planted = {tag: t for tag, t in _group_trends(spec.trends, dimension, within).items() if tag in weights}
    return planted, {tag: w for tag, w in weights.items() if tag not in planted}


def _check_group(trends, taxonomy: Taxonomy, dim: str, within, zipf, group: str) -> None:
    multi = taxonomy.dimension(dim).multi_label
    reachable = set()
    for category in _categories(taxonomy, dim, within):
        weights = tag_weights(taxonomy, dim, zipf, category)
        planted = {tag: t for tag, t in _group_trends(trends, dim, within).items() if tag in weights}
        reachable |= set(planted)
        free = len(weights) - len(planted)
        where = f"{group} (category {category})" if category else group
        if multi:
            if free < max(OTHER_TAGS):
                raise ConfigError(
                    f"{where}: a multi-label dimension needs {max(OTHER_TAGS)} unplanted tags to draw others from"
                )
            continue
        for end in ("from_share", "to_share"):
            total = sum(getattr(t, end) for t in planted.values())
            if total > 1.0 + 1e-9 or (free == 0 and abs(total - 1.0) > 1e-9):
                raise ConfigError(
                    f"{where} {end} values sum to {total:.3f}; "
                    "they must leave a share for the other tags (or sum to 1 if all are planted)"
                )
    never = sorted({t.tag for t in trends if t.dimension == dim and t.within == within} - reachable)
    if never:
        raise ConfigError(f"{group}: {never} never occur there (world.CATEGORY_WEIGHTS)")


def _group_trends(trends, dimension: str, within: tuple[str, str] | None) -> dict[str, Trend]:
    """The trends of a dimension among one group's images: the catalog-wide ones, and within a
    category or source its own on top (replacing a catalog-wide one of the same tag)."""
    planted = {t.tag: t for t in trends if t.dimension == dimension and t.within is None}
    if within:
        planted.update({t.tag: t for t in trends if t.dimension == dimension and t.within == within})
    return planted


def _within(raw, dimension: str, taxonomy: Taxonomy, where: str) -> tuple[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f'{where}.within must be an object with one key, e.g. {{"category": "sneaker"}}')
    ((key, value),) = raw.items()
    allowed = {"category": taxonomy.tags("category"), "source": list(SOURCES)}
    if key not in allowed:
        raise ConfigError(f"{where}.within: {key!r} must be one of {list(WITHIN_KEYS)}")
    if key == dimension:
        raise ConfigError(f"{where}.within: a {dimension} trend cannot be planted within a {key}")
    if value not in allowed[key]:
        raise ConfigError(f"{where}.within.{key}={value!r} is not one of {allowed[key]}")
    return key, value


def load_trend_spec(path: Path, taxonomy: Taxonomy) -> TrendSpec:
    return parse_trend_spec(read_json(path, "trend spec"), taxonomy, source=f"trend spec {path}")


def daily_shares(
    spec: TrendSpec,
    taxonomy: Taxonomy,
    dimension: str,
    days: int,
    within: tuple[str, str] | None = None,
    category: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """(tags, shares[day, tag]) of the images of one group (`within` a category or source, or None: the
    images outside every within-group of the dimension) and, where the dimension's tags depend on it,
    one category: planted tags (the catalog-wide trends and the group's own) move linearly; single-label,
    the others split the rest by their weights; multi-label (each tag's probability), each other is one
    of the mean OTHER_TAGS drawn evenly."""
    import numpy as np

    tags = taxonomy.tags(dimension)
    progress = np.linspace(0.0, 1.0, days) if days > 1 else np.zeros(1)
    shares = np.zeros((days, len(tags)))
    planted, others = tag_plan(spec, taxonomy, dimension, within, category)
    for j, tag in enumerate(tags):
        if tag in planted:
            t = planted[tag]
            shares[:, j] = t.from_share + (t.to_share - t.from_share) * progress
    free = [j for j, tag in enumerate(tags) if tag in others]
    if free and taxonomy.dimension(dimension).multi_label:
        shares[:, free] = np.mean(OTHER_TAGS) / len(free)
    elif free:
        weights = np.array([others[tags[j]] for j in free], dtype=float)
        shares[:, free] = (1.0 - shares.sum(axis=1))[:, None] * (weights / weights.sum())[None, :]
    return tags, shares


def within_groups(spec: TrendSpec, dimension: str) -> tuple[str | None, list[str]]:
    """The key a dimension's trends are planted within (None: none) and its values that have trends."""
    within = sorted({t.within for t in spec.trends if t.dimension == dimension and t.within})
    return (within[0][0] if within else None), [value for _, value in within]


def plan_groups(
    spec: TrendSpec, taxonomy: Taxonomy, dimension: str
) -> list[tuple[tuple[str, str] | None, str | None, str | None, list[str]]]:
    """The groups a dimension's tags are planned in: (within, category, within key, that key's values
    with trends). An image is in (within, category) when its value of the key is within's (or, for
    within None, none of the values) and, unless category is None, its category is category."""
    key, values = within_groups(spec, dimension)
    return [
        ((key, value) if value else None, category, key, values)
        for value in [*values, None]
        for category in _categories(taxonomy, dimension, (key, value) if value else None)
    ]


def planned_probabilities(
    spec: TrendSpec, taxonomy: Taxonomy, images: pd.DataFrame, day, days: int
) -> dict[str, pd.DataFrame]:
    """Per dimension, each image's planned probability of every tag (rows: the images, with their true
    source and category; day: each image's day index): its day's planned shares in its group, and for a
    rules or head dimension the sum over the tags of the dimension it follows from."""
    import pandas as pd

    out = {}
    for dim in drawn_dimensions(taxonomy):
        matrix = pd.DataFrame(0.0, index=images.index, columns=taxonomy.tags(dim))
        for within, category, key, values in plan_groups(spec, taxonomy, dim):
            member = images[key] == within[1] if within else ~images[key].isin(values) if key else True
            member = pd.Series(member, index=images.index) & (images["category"] == category if category else True)
            _, shares = daily_shares(spec, taxonomy, dim, days, within, category)
            matrix.loc[member.to_numpy()] = shares[day[member.to_numpy()]]
        out[dim] = matrix
    for dim, (base, mapping) in derived_dimensions(taxonomy).items():
        out[dim] = out[base].T.groupby(mapping).sum().T.reindex(columns=taxonomy.tags(dim), fill_value=0.0)
    return out
