"""Trend spec: which tag shares move across the date range, and how much to plant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vecflow.config import ConfigError, read_json
from vecflow.taxonomy import Taxonomy

if TYPE_CHECKING:  # numpy is imported where shares are computed, not when a spec is read
    import numpy as np

GENERATED_DIMENSIONS = ("category", "color", "pattern")
SOURCES = ("shop_a", "shop_b", "shop_c")
# what a trend can be planted within: a facet key and its values
WITHIN_KEYS = ("category", "source")
RATE_FIELDS = ("exact_duplicate_rate", "near_duplicate_rate", "corrupt_rate")


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

    def to_json(self) -> dict:
        return {
            "trends": [t.to_json() for t in self.trends],
            **{f: getattr(self, f) for f in RATE_FIELDS},
        }


def _share(value, field: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"trend spec: {field}={value!r} must be a number in [0, 1]")
    return float(value)


def parse_trend_spec(raw: dict, taxonomy: Taxonomy, source: str = "trend spec") -> TrendSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a JSON object")
    unknown = set(raw) - {"trends", *RATE_FIELDS}
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
        if dim not in GENERATED_DIMENSIONS:
            raise ConfigError(f"{where}.dimension={dim!r} must be one of {list(GENERATED_DIMENSIONS)}")
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
    for dim in GENERATED_DIMENSIONS:
        keys = {t.within[0] for t in trends if t.dimension == dim and t.within}
        if len(keys) > 1:
            raise ConfigError(f"{source}: {dim} trends are planted within {sorted(keys)}; use one key per dimension")
        for within in {t.within for t in trends if t.dimension == dim}:
            planted = _group_trends(trends, dim, within)
            group = f"{dim} within {within[0]}={within[1]}" if within else dim
            mine = [t for t in trends if t.dimension == dim and t.within == within]
            if len({t.tag for t in mine}) != len(mine):
                raise ConfigError(f"{source}: a {group} tag is planted twice")
            free_tags = len(taxonomy.tags(dim)) - len(planted)
            for end in ("from_share", "to_share"):
                total = sum(getattr(t, end) for t in planted.values())
                if total > 1.0 + 1e-9 or (free_tags == 0 and abs(total - 1.0) > 1e-9):
                    raise ConfigError(
                        f"{source}: planted {group} {end} values sum to {total:.3f}; "
                        "they must leave a share for the other tags (or sum to 1 if all are planted)"
                    )
    rates = {}
    for field in RATE_FIELDS:
        value = raw.get(field, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 0.3:
            raise ConfigError(f"{source}: {field}={value!r} must be a number in [0, 0.3]")
        rates[field] = float(value)
    if sum(rates.values()) > 0.5:
        raise ConfigError(f"{source}: planted rates sum to {sum(rates.values()):.2f}; keep them below 0.5")
    return TrendSpec(tuple(trends), **rates)


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
    spec: TrendSpec, taxonomy: Taxonomy, dimension: str, days: int, within: tuple[str, str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(tags, shares[day, tag]) of the images of one group (`within` a category or source, or None: the
    images outside every within-group of the dimension): planted tags (the catalog-wide trends and the
    group's own) move linearly; the others split the rest evenly."""
    import numpy as np

    tags = taxonomy.tags(dimension)
    progress = np.linspace(0.0, 1.0, days) if days > 1 else np.zeros(1)
    shares = np.zeros((days, len(tags)))
    planted = _group_trends(spec.trends, dimension, within)
    for j, tag in enumerate(tags):
        if tag in planted:
            t = planted[tag]
            shares[:, j] = t.from_share + (t.to_share - t.from_share) * progress
    free = [j for j, tag in enumerate(tags) if tag not in planted]
    if free:
        rest = 1.0 - shares.sum(axis=1)
        shares[:, free] = (rest / len(free))[:, None]
    return tags, shares


def within_groups(spec: TrendSpec, dimension: str) -> tuple[str | None, list[str]]:
    """The key a dimension's trends are planted within (None: none) and its values that have trends."""
    within = sorted({t.within for t in spec.trends if t.dimension == dimension and t.within})
    return (within[0][0] if within else None), [value for _, value in within]
