"""The index store's pointer files: each category's CURRENT (its published window version) and
index/SERVING (the model whose indexes are served and which the daily run embeds with). Both are
small JSON files replaced atomically, so a reader sees the old pointer or the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vecflow.config import DEFAULT_MODEL_VERSION, ConfigError, read_json


def write_json_atomically(path: Path, payload: dict) -> None:
    """Writes a small JSON file through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def serving_pointer(index_dir: Path) -> Path:
    """index/SERVING: written by a reindex run when it switches models."""
    return index_dir / "SERVING"


def serving_model_version(index_dir: Path, configured: str | None) -> str:
    """The serving model: index/SERVING once a reindex switched models, else `configured`
    (VECFLOW_MODEL_VERSION) or the first model. A configured model other than the one SERVING names
    is a ConfigError, since the daily run would embed with a model other than the one served."""
    pointer = serving_pointer(index_dir)
    if not pointer.exists():
        return configured or DEFAULT_MODEL_VERSION
    serving = read_json(pointer, "serving model pointer")["model_version"]
    if configured and configured != serving:
        raise ConfigError(
            f"VECFLOW_MODEL_VERSION={configured!r} but {pointer} names {serving!r} (switched by a "
            f"reindex run): unset the variable, or switch back with `python -m vecflow.cli "
            f"switch-model --model-version {configured}`"
        )
    return serving
