"""README "Bring your own photos, taxonomy and labels", run as written: its taxonomy file and its
commands are read from README.md, the photos, attributes and labels a user brings are made here
(rendered garments in category folders), and what the commands leave is checked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vecflow.demo.catalog import fashion_mnist
from vecflow.demo.catalog.render import jpeg_bytes, pattern_modulation, render
from vecflow.resources import PROJECT_DIR

pytestmark = pytest.mark.e2e

FOLDERS = {"Dresses": (3, "dress", "worn"), "Coats": (4, "coat", "worn"), "Bags": (8, "bag", "carried")}
FOLDERS["Trainers"] = (7, "sneaker", "footwear")  # a synonym of the category, not its key
PER_FOLDER = 8
BRANDS = ["Northwind", "Nortwind", "ACME", "acme apparel", "Unknown Co"]  # a misspelling, a synonym, no tag
OCCASIONS = ["work;party", "gym", "", "party"]


def readme_block(marker: str) -> str:
    text = (PROJECT_DIR / "README.md").read_text()
    found = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert found, f"README.md has no block after <!-- {marker} -->"
    return found.group(1)


def bring_photos(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rendered garments in category folders (and two in a folder that is no category), with their
    attributes and a merchandisers' labelled sample."""
    images, labels = fashion_mnist.load("test")
    rng = np.random.default_rng(25)
    colours = [(200, 30, 35), (35, 75, 200), (40, 150, 60)]
    rows, labelled = [], []
    for name, (label, category, use) in [*FOLDERS.items(), ("misc", (0, None, None))]:
        (folder / name).mkdir(parents=True)
        picks = np.flatnonzero(labels == label)[: PER_FOLDER if category else 2]
        stem = category or "misc"
        for i, index in enumerate(picks):
            image_id = f"{name}/{stem}-{i:02d}.jpg"
            picture = render(images[index], colours[i % 3], pattern_modulation(None, None, 256), rng)
            (folder / image_id).write_bytes(jpeg_bytes(picture, 90))
            rows.append({"image_id": image_id, "brand": BRANDS[i % 5], "occasions": OCCASIONS[i % 4]})
            if category and i < 5:
                labelled.append({"image_id": image_id, "dimension": "use", "tag": use})
    return pd.DataFrame(rows), pd.DataFrame(labelled)


def test_bring_your_own_photos_taxonomy_and_labels(tmp_path):
    attributes, labels = bring_photos(tmp_path / "photos")
    attributes.to_csv(tmp_path / "attributes.csv", index=False)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    taxonomy = readme_block("bring-your-own:taxonomy")
    (tmp_path / "taxonomy.json").write_text(taxonomy)
    commands = readme_block("bring-your-own:commands")
    commands = re.sub(r"^PROJECT=.*$", f"PROJECT={PROJECT_DIR}", commands, flags=re.M)
    # the user's shell: none of the test session's settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VECFLOW_", "AIRFLOW"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    (tmp_path / "output.txt").write_text(done.stdout)

    # catalog import listed every photo and warned about the folder that is no category
    assert "catalog partition 2026-03-30: 34 images" in done.stdout
    assert "'misc' (2)" in done.stdout

    from vecflow.warehouse.duckdb_backend import DuckDBWarehouse

    warehouse = DuckDBWarehouse(tmp_path / "shop" / "warehouse.duckdb")
    tags = warehouse.table("image_tags")
    version = hashlib.sha256(taxonomy.encode()).hexdigest()[:12]
    assert set(tags["taxonomy_version"]) == {version} and tags["head_version"].notna().all()
    by = {d: g for d, g in tags.groupby("dimension")}
    assert set(by) == {"category", "colour", "brand", "occasion", "use"}
    kept = set(by["category"]["image_id"])
    assert not any(i.startswith("misc/") for i in kept)  # no category: rejected, not indexed
    category = dict(zip(by["category"]["image_id"], by["category"]["tag"]))
    assert {category[i] for i in kept if i.startswith("Trainers/")} == {"sneaker"}
    # the catalog's brand through synonyms and a misspelling; a value naming no tag is a reject naming it
    brand = dict(zip(by["brand"]["image_id"], by["brand"]["tag"]))
    for image_id in kept:
        written = attributes.set_index("image_id").loc[image_id, "brand"]
        expected = {"Northwind": "northwind", "Nortwind": "northwind", "ACME": "acme", "acme apparel": "acme"}
        assert brand.get(image_id) == expected.get(written)
    rejects = warehouse.table("rejects")
    unknown = rejects[rejects["reason"] == "unknown_tag"]
    assert len(unknown) and all("'Unknown Co'" in d for d in unknown["detail"])
    assert set(rejects.loc[rejects["reason"] == "unknown_category", "image_id"]) == {
        "misc/misc-00.jpg",
        "misc/misc-01.jpg",
    }
    # multi-label occasions: an image under each of its tags
    occasions = by["occasion"].groupby("image_id")["tag"].apply(set)
    assert occasions["Dresses/dress-00.jpg"] == {"work", "party"} and occasions["Dresses/dress-01.jpg"] == {"sport"}
    # the head learnt worn / carried / footwear from the labelled sample, and retag tagged every image
    use = dict(zip(by["use"]["image_id"], by["use"]["tag"]))
    truth = {i: FOLDERS[i.split("/")[0]][2] for i in kept}
    assert sum(use.get(i) == t for i, t in truth.items()) / len(truth) >= 0.85
    assert len(warehouse.table("tag_trends")) > 0
    # the filtered search: only Northwind photos
    results = [line for line in done.stdout.splitlines() if re.match(r"\s*\d+\s+\S+/\S+\.jpg", line)]
    assert results and all(brand.get(line.split()[1]) == "northwind" for line in results)
    assert json.loads((tmp_path / "taxonomy.json").read_text())  # the README's block is valid JSON
