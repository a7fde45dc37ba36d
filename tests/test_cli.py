"""The command line refuses bad input at start with a message naming what is wrong."""

from __future__ import annotations

import json
import logging

from vecflow.cli import main


def test_malformed_trend_spec_stops_the_run_before_anything_starts(tmp_path, vecflow_home, caplog):
    spec = tmp_path / "trends.json"
    spec.write_text(json.dumps({"trends": [{"dimension": "color", "tag": "teal", "from_share": 0.1, "to_share": 0.2}]}))
    with caplog.at_level(logging.ERROR):
        assert main(["run", "--days", "2", "--trends", str(spec)]) == 2
    assert "trends[0].tag='teal'" in caplog.text
    assert not (vecflow_home / "catalog").exists() and not (vecflow_home / "airflow").exists()


def test_bad_settings_are_named(vecflow_home, monkeypatch, caplog):
    monkeypatch.setenv("VECFLOW_SHARD_SIZE", "lots")
    with caplog.at_level(logging.ERROR):
        assert main(["generate-catalog", "--days", "1", "--images-per-day", "8"]) == 2
    assert "VECFLOW_SHARD_SIZE='lots' is not an integer" in caplog.text
