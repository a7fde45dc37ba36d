"""The demo's product world: what the generator knows of its categories that the taxonomy does not
say. Each category's silhouette (a `head` dimension: merchandisers label a sample, a head learns it),
and the catalog-sourced dimensions whose tags depend on the category (what a bag is made of, that a
sneaker has no fit). Keyed by the shipped taxonomy's tag keys and checked against the taxonomy in
use (`check_world`), so another taxonomy is refused by name rather than generated wrongly."""

from __future__ import annotations

from vecflow.config import ConfigError
from vecflow.taxonomy import ANALYSERS, Taxonomy

_SILHOUETTE = {
    "tshirt_top": "top",
    "trouser": "bottom",
    "pullover": "top",
    "dress": "one_piece",
    "coat": "top",
    "sandal": "footwear",
    "shirt": "top",
    "sneaker": "footwear",
    "bag": "carried",
    "ankle_boot": "footwear",
}
# head dimension -> category -> its true tag (what a head trained on the labelled sample should find)
HEAD_MAPS: dict[str, dict[str, str]] = {"silhouette": _SILHOUETTE}

_APPAREL_FIT = {"slim": 2, "regular": 4, "relaxed": 3, "oversized": 1}
# dimension -> category -> tag weights: a tag without a weight never occurs in that category (a trend
# in it moves it among the categories that have it)
CATEGORY_WEIGHTS: dict[str, dict[str, dict[str, float]]] = {
    "material": {
        "tshirt_top": {"cotton": 5, "jersey": 4, "linen": 1, "polyester": 2, "viscose": 1},
        "trouser": {"denim": 5, "cotton": 3, "linen": 1, "wool": 1, "polyester": 1},
        "pullover": {"wool": 5, "cotton": 3, "cashmere": 2, "polyester": 1},
        "dress": {"viscose": 3, "cotton": 2, "silk": 2, "polyester": 2, "linen": 1, "jersey": 1},
        "coat": {"wool": 4, "polyester": 2, "nylon": 2, "leather": 1, "faux_leather": 1, "cashmere": 1},
        "sandal": {"leather": 5, "faux_leather": 2, "suede": 1, "canvas": 1},
        "shirt": {"cotton": 5, "linen": 2, "silk": 1, "denim": 1, "viscose": 1, "polyester": 1},
        "sneaker": {"canvas": 3, "leather": 3, "faux_leather": 2, "nylon": 2, "suede": 1},
        "bag": {"leather": 5, "faux_leather": 3, "canvas": 2, "nylon": 2},
        "ankle_boot": {"leather": 6, "suede": 3, "faux_leather": 2},
    },
    # footwear and bags have no fit: the catalog gives no value, the pipeline the none tag
    "fit": {
        category: _APPAREL_FIT if silhouette in ("top", "bottom", "one_piece") else {"not_applicable": 1}
        for category, silhouette in _SILHOUETTE.items()
    },
}


def derived_dimensions(taxonomy: Taxonomy) -> dict[str, tuple[str, dict[str, str]]]:
    """Dimensions whose true tag follows from another's: dimension -> (the dimension it reads, its
    tag by that dimension's tag). Rules dimensions by the taxonomy's rules, head dimensions by HEAD_MAPS."""
    out = {d.name: ("category", HEAD_MAPS[d.name]) for d in taxonomy.dims.values() if d.source == "head"}
    # rules after heads: a rules dimension may read a head dimension
    out.update({d.name: (d.derived_from, taxonomy.derived(d.name)) for d in taxonomy.by_source("rules")})
    return out


def check_world(taxonomy: Taxonomy) -> None:
    """ConfigError naming what of the taxonomy the demo generator cannot plant ground truth for."""
    categories = set(taxonomy.tags("category"))
    for analyser in ANALYSERS:  # the renderer tints and patterns every picture
        if not [d for d in taxonomy.by_source("pixels") if d.analyser == analyser]:
            raise ConfigError(
                f"{taxonomy.location}: the demo generator needs a pixels dimension with analyser {analyser!r}"
            )
    for d in taxonomy.dims.values():
        if d.source == "zero_shot" or (d.source == "head" and d.name not in HEAD_MAPS):
            raise ConfigError(
                f"{taxonomy.location}: the demo generator cannot plant dimension {d.name!r} (source {d.source}); "
                f"it plants catalog, pixels and rules dimensions and head dimensions {sorted(HEAD_MAPS)}"
            )
        if d.source == "rules" and (d.multi_label or taxonomy.dimension(d.derived_from).multi_label):
            raise ConfigError(
                f"{taxonomy.location}: the demo generator plants rules between single-label dimensions only, not {d.name!r}"
            )
    tables = {**{k: {c: {t: 1} for c, t in m.items()} for k, m in HEAD_MAPS.items()}, **CATEGORY_WEIGHTS}
    for name, by_category in tables.items():
        if name not in taxonomy.dims:
            continue
        if set(by_category) != categories:
            raise ConfigError(
                f"{taxonomy.location}: the demo generator knows {name} for categories {sorted(by_category)}, "
                f"the taxonomy has {sorted(categories)}"
            )
        unknown = {t for weights in by_category.values() for t in weights} - set(taxonomy.tags(name))
        if unknown:
            raise ConfigError(f"{taxonomy.location}: the demo generator plants {name} tags {sorted(unknown)} it lacks")
