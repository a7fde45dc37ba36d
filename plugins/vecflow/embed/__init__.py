"""Embed stage: plan shards from a catalog partition, run the embedding entrypoint, load the vector log."""

import re

from vecflow.config import ConfigError


def safe_run_id(run_id: str) -> str:
    """A run_id usable as a path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def model_card(settings, model_version: str | None = None) -> dict:
    """The registry card of a model, the serving one by default (ConfigError naming the registry, the
    card and the field when it is missing or malformed)."""
    from vecflow_model.registry import ModelRegistryError, read_card

    try:
        return read_card(model_version or settings.model_version, settings.embed.model_registry)[0]
    except ModelRegistryError as exc:
        raise ConfigError(str(exc)) from None


def card_embedding_dim(settings, model_version: str | None = None) -> int:
    """The vector length a model's card declares (the serving model's by default): what the clean
    stage, the quality suite and an index pod's memory expect of that model's vectors."""
    return int(model_card(settings, model_version)["embedding_dim"])
