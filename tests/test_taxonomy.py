"""The taxonomy format holds production-sized vocabularies (seed 000: 1000+ tags over ~10 dimensions)."""

from __future__ import annotations

import json

import pytest

from vecflow.config import ConfigError
from vecflow.search.sink import image_tags_template
from vecflow.taxonomy import load_taxonomy

DIMENSIONS = [
    "category",
    "fabric",
    "texture",
    "craft",
    "accessories",
    "style",
    "silhouette",
    "collar",
    "color",
    "pattern",
]


def test_a_taxonomy_of_1200_tags_over_10_dimensions_loads(tmp_path):
    path = tmp_path / "taxonomy.json"
    path.write_text(
        json.dumps(
            {
                "dimensions": {
                    dim: {
                        "display": dim.title(),
                        "tags": {f"{dim}_{i:03d}": {"display": f"{dim.title()} {i}"} for i in range(120)},
                    }
                    for dim in DIMENSIONS
                }
            }
        )
    )
    taxonomy = load_taxonomy(path)
    rows = taxonomy.rows()
    assert len(rows) == 1200 and len({(r["dimension"], r["tag"]) for r in rows}) == 1200
    assert rows[1] == {"dimension": "category", "tag": "category_001", "display": "Category 1"}
    mapping = image_tags_template(taxonomy.dimensions, None)["mappings"]["properties"]
    assert sorted(mapping["tags"]["properties"]) == sorted(DIMENSIONS)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "'dimensions' must be a non-empty object"),
        ({"dimensions": {"color": {"tags": {}}}}, "dimensions.color.tags must be a non-empty object"),
    ],
)
def test_a_malformed_taxonomy_is_named(tmp_path, raw, message):
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        load_taxonomy(path)
