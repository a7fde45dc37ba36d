"""The command line refuses bad input at start with a message naming what is wrong."""

from __future__ import annotations

import json
import logging

import pytest

from vecflow.cli import main
from vecflow.demo.__main__ import main as demo_main
from vecflow.warehouse import get_warehouse


def test_malformed_trend_spec_stops_the_run_before_anything_starts(tmp_path, vecflow_home, caplog):
    spec = tmp_path / "trends.json"
    spec.write_text(json.dumps({"trends": [{"dimension": "color", "tag": "teal", "from_share": 0.1, "to_share": 0.2}]}))
    with caplog.at_level(logging.ERROR):
        assert demo_main(["run", "--days", "2", "--trends", str(spec)]) == 2
    assert "trends[0].tag='teal'" in caplog.text
    assert not (vecflow_home / "catalog").exists() and not (vecflow_home / "airflow").exists()


def test_bad_settings_are_named(vecflow_home, monkeypatch, caplog):
    monkeypatch.setenv("VECFLOW_SHARD_SIZE", "lots")
    with caplog.at_level(logging.ERROR):
        assert demo_main(["generate-catalog", "--days", "1", "--images-per-day", "8"]) == 2
    assert "VECFLOW_SHARD_SIZE='lots' is not an integer" in caplog.text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["search", "--image", "/nonexistent.jpg"], "search: --image /nonexistent.jpg: no such file"),
        (["search", "--image", "README.md"], "search: --image README.md is not an image"),
        (["search", "--image", "{photo}"], "search: nothing published for model"),
        (["index-rollback", "--category", "hat"], "has no published index to roll back"),
        (["switch-model", "--model-version", "nope"], "nope has no published window index"),
    ],
)
def test_expected_errors_are_one_line_naming_the_input(argv, expected, vecflow_home, tmp_path, monkeypatch, caplog):
    """A new user's mistakes end in one line on stderr and exit 1, not a traceback."""
    from PIL import Image

    from vecflow.resources import PROJECT_DIR
    from vecflow.warehouse import migrate

    monkeypatch.chdir(PROJECT_DIR)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (28, 28), (200, 30, 30)).save(photo)
    migrate(get_warehouse())
    with caplog.at_level(logging.ERROR):
        assert main([a.format(photo=photo) for a in argv]) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0].getMessage() and not errors[0].exc_info
