"""The tag taxonomy (include/taxonomy.json): dimensions -> tags, with display names."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vecflow.config import ConfigError, read_json
from vecflow.resources import TAXONOMY_PATH


@dataclass(frozen=True)
class Taxonomy:
    raw: dict

    @property
    def dimensions(self) -> list[str]:
        return list(self.raw["dimensions"])

    def tags(self, dimension: str) -> list[str]:
        try:
            return list(self.raw["dimensions"][dimension]["tags"])
        except KeyError:
            raise ConfigError(f"unknown tag dimension {dimension!r}; known: {self.dimensions}") from None

    def tag_info(self, dimension: str, tag: str) -> dict:
        return self.raw["dimensions"][dimension]["tags"][tag]

    def category_by_label(self) -> dict[int, str]:
        return {info["label"]: tag for tag, info in self.raw["dimensions"]["category"]["tags"].items()}

    def style_of_category(self) -> dict[str, str]:
        return {
            category: style
            for style, info in self.raw["dimensions"]["style"]["tags"].items()
            for category in info["from"]
        }

    def rows(self) -> list[dict]:
        """(dimension, tag, display) rows for the warehouse `taxonomy` table."""
        return [
            {"dimension": dim, "tag": tag, "display": info.get("display", tag)}
            for dim, spec in self.raw["dimensions"].items()
            for tag, info in spec["tags"].items()
        ]


@lru_cache(maxsize=4)
def load_taxonomy(path: Path = TAXONOMY_PATH) -> Taxonomy:
    raw = read_json(path, "taxonomy file")
    dims = raw.get("dimensions")
    if not isinstance(dims, dict) or not dims:
        raise ConfigError(f"taxonomy file {path}: 'dimensions' must be a non-empty object")
    for name, spec in dims.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("tags"), dict) or not spec["tags"]:
            raise ConfigError(f"taxonomy file {path}: dimensions.{name}.tags must be a non-empty object")
    return Taxonomy(raw)
