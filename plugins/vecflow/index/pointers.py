"""The serving model's pointer, index/SERVING in the index store: written by a reindex run when it
switches models, read (through Settings.model_version) by every task that asks which model the daily
run embeds with and serves."""

from __future__ import annotations

SERVING = "SERVING"


def switched_model_version(store) -> str | None:
    """The model a reindex switched serving to, or None before any switch."""
    pointer = store.read_pointer(SERVING)
    return pointer.payload["model_version"] if pointer is not None else None
