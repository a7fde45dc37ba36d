"""The serving model's pointer, index/SERVING in the index store: written by a reindex run when it
switches models, read by every task that asks which model the daily run embeds with and serves."""

from __future__ import annotations

from vecflow.config import DEFAULT_MODEL_VERSION, ConfigError

SERVING = "SERVING"


def serving_model_version(store, configured: str | None) -> str:
    """The serving model: SERVING once a reindex switched models, else `configured`
    (VECFLOW_MODEL_VERSION) or the first model. A configured model other than the one SERVING names
    is a ConfigError, since the daily run would embed with a model other than the one served."""
    pointer = store.read_pointer(SERVING)
    if pointer is None:
        return configured or DEFAULT_MODEL_VERSION
    serving = pointer.payload["model_version"]
    if configured and configured != serving:
        raise ConfigError(
            f"VECFLOW_MODEL_VERSION={configured!r} but {store.uri(SERVING)} names {serving!r} (switched by a "
            f"reindex run): unset the variable, or switch back with `python -m vecflow.cli "
            f"switch-model --model-version {configured}`"
        )
    return serving
