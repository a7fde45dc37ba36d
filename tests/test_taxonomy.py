"""The taxonomy is data: read from VECFLOW_TAXONOMY_URL (a path or an fsspec URL), validated when
read (a TaxonomyError naming the file, the dimension and the problem), versioned by its content;
the edits a new user makes to it either work through the tagging step or are refused when read."""

from __future__ import annotations

import copy
import hashlib
import json
import logging

import fsspec
import pandas as pd
import pytest
from warehouse_rows import analyses

from vecflow.config import _warn_unknown, settings
from vecflow.resources import TAXONOMY_PATH
from vecflow.search.sink import image_tags_template
from vecflow.tagging import tag_frame
from vecflow.taxonomy import TaxonomyError, load_taxonomy
from vecflow_model.pixel_tags import PATTERN_LAYOUTS, PATTERN_PERIODS


def shipped() -> dict:
    return copy.deepcopy(json.loads(TAXONOMY_PATH.read_text()))


def write(tmp_path, raw: dict):
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(raw))
    return path


def frame(rows: list[dict]) -> pd.DataFrame:
    """Tagging rows (what select_tagging_rows gives) of images with these analyses."""
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(len(rows))],
            "catalog_category": "dress",
            "source": "shop_a",
            "analyses": [r["analyses"] for r in rows],
            "attributes": [json.dumps(r.get("attributes", {})) for r in rows],
        }
    )


def tags_of(tagged) -> dict[tuple[int, str], set[str]]:
    return {(r, d): set(g["tag"]) for (r, d), g in tagged.tags.groupby(["row", "dimension"])}


# --- the shipped taxonomy, its version, where it is read from -----------------------------------------


def test_the_shipped_taxonomy_loads_and_is_versioned_by_its_content(tmp_path):
    taxonomy = load_taxonomy(TAXONOMY_PATH)
    assert len(taxonomy.dimensions) >= 9 and len(taxonomy.rows()) >= 300
    assert taxonomy.version == hashlib.sha256(TAXONOMY_PATH.read_bytes()).hexdigest()[:12]
    assert {r["taxonomy_version"] for r in taxonomy.rows()} == {taxonomy.version}
    # the same bytes elsewhere: the same version; one synonym more: another
    copied = tmp_path / "copy.json"
    copied.write_bytes(TAXONOMY_PATH.read_bytes())
    assert load_taxonomy(copied).version == taxonomy.version
    raw = shipped()
    raw["dimensions"]["color"]["tags"]["red"]["synonyms"].append("Scarlet")
    edited = load_taxonomy(write(tmp_path, raw))
    assert edited.version != taxonomy.version and edited.dimension("color").map_value("scarlet") == "red"


def test_the_taxonomy_url_setting_takes_a_path_or_an_fsspec_url(tmp_path, monkeypatch):
    assert load_taxonomy().version == load_taxonomy(TAXONOMY_PATH).version  # the shipped one by default
    raw = shipped()
    raw["dimensions"]["season"] = {"source": "catalog", "tags": {"summer": {}, "winter": {}}}
    path = write(tmp_path, raw)
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", str(path))
    assert "season" in load_taxonomy().dimensions
    raw["dimensions"]["season"]["tags"]["spring"] = {}
    fsspec.filesystem("memory").pipe("/vecflow-test/taxonomy.json", json.dumps(raw).encode())
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", "memory://vecflow-test/taxonomy.json")
    assert load_taxonomy().tags("season") == ["summer", "winter", "spring"]
    assert load_taxonomy().location == "taxonomy file memory://vecflow-test/taxonomy.json"
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", "memory://vecflow-test/gone.json")
    with pytest.raises(TaxonomyError, match="taxonomy file memory://vecflow-test/gone.json does not exist"):
        load_taxonomy()
    path.write_text("{not json")
    with pytest.raises(TaxonomyError, match=f"taxonomy file {path} is not valid JSON"):
        load_taxonomy(path)


def test_a_taxonomy_in_a_gcs_bucket_is_read(gcs_server, monkeypatch):
    import gcsfs

    bucket = gcsfs.GCSFileSystem(token="anon", endpoint_url=gcs_server)
    bucket.mkdir("shop-config")
    bucket.pipe("shop-config/taxonomy.json", TAXONOMY_PATH.read_bytes())
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)  # where gcsfs finds the bucket
    monkeypatch.setenv("VECFLOW_TAXONOMY_URL", "gs://shop-config/taxonomy.json")
    taxonomy = load_taxonomy()
    assert taxonomy.version == load_taxonomy(TAXONOMY_PATH).version
    assert taxonomy.location == "taxonomy file gs://shop-config/taxonomy.json"


def test_an_unknown_vecflow_variable_is_warned_about_by_name(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VECFLOW_TAXONOMY", str(tmp_path / "mine.json"))  # the setting is VECFLOW_TAXONOMY_URL
    monkeypatch.setenv("VECFLOW_QQQ_ZZZ", "1")
    _warn_unknown.cache_clear()
    with caplog.at_level(logging.WARNING, logger="vecflow.config"):
        settings()
    assert (
        "VECFLOW_TAXONOMY is not a vecflow setting and is ignored (did you mean VECFLOW_TAXONOMY_URL?)" in caplog.text
    )
    assert "VECFLOW_QQQ_ZZZ is not a vecflow setting and is ignored\n" in caplog.text + "\n"
    assert "VECFLOW_TAXONOMY_URL is not" not in caplog.text and "VECFLOW_HOME is not" not in caplog.text


def test_a_taxonomy_of_1200_tags_over_10_dimensions_loads(tmp_path):
    names = ["category", "fabric", "texture", "craft", "trims", "style", "silhouette", "collar", "brand", "season"]
    raw = {
        "dimensions": {
            name: {
                "display": name.title(),
                "source": "catalog",
                "multi_label": name == "trims",
                "tags": {f"{name}_{i:03d}": {"display": f"{name.title()} {i}"} for i in range(120)},
            }
            for name in names
        }
    }
    taxonomy = load_taxonomy(write(tmp_path, raw))
    rows = taxonomy.rows()
    assert len(rows) == 1200 and len({(r["dimension"], r["tag"]) for r in rows}) == 1200
    assert rows[1]["display"] == "Category 1" and rows[1]["dimension_display"] == "Category"
    mapping = image_tags_template(taxonomy.dimensions, None)["mappings"]["properties"]
    assert sorted(mapping["tags"]["properties"]) == sorted(names)


# --- edits that work -----------------------------------------------------------------------------------


def test_color_renamed_colour_is_tagged_under_the_new_name(tmp_path):
    raw = shipped()
    raw["dimensions"] = {("colour" if k == "color" else k): v for k, v in raw["dimensions"].items()}
    taxonomy = load_taxonomy(write(tmp_path, raw))
    images = [{"analyses": analyses("red", "striped")}, {"analyses": analyses("beige", "solid")}]
    got = tags_of(tag_frame(frame(images), taxonomy))
    assert got[(0, "colour")] == {"red"} and got[(1, "colour")] == {"beige"}
    assert got[(0, "pattern")] == {"striped"} and got[(0, "style")] == {"formal"}  # dress, from the catalog
    assert not any(d == "color" for _, d in got)


def test_white_and_beige_added_to_a_palette_are_told_from_black(tmp_path):
    raw = shipped()
    palette = raw["dimensions"]["color"]["tags"]
    added = {k: palette.pop(k) for k in ("white", "grey", "beige")}
    images = [{"analyses": analyses(c, "solid")} for c in ("white", "beige", "black", "red")]
    before = tags_of(tag_frame(frame(images), load_taxonomy(write(tmp_path, raw))))
    # one achromatic colour: white is black; beige, a pale orange, is orange
    assert [before[(i, "color")] for i in range(4)] == [{"black"}, {"orange"}, {"black"}, {"red"}]
    palette |= {"white": added["white"], "beige": added["beige"]}
    after = tags_of(tag_frame(frame(images), load_taxonomy(write(tmp_path, raw))))
    assert [after[(i, "color")] for i in range(4)] == [{"white"}, {"beige"}, {"black"}, {"red"}]


def test_a_new_pattern_with_a_detector_is_tagged(tmp_path):
    raw = shipped()
    raw["dimensions"]["pattern"]["tags"]["pinstriped"] = {"layout": "stripes", "period_px": 4}
    taxonomy = load_taxonomy(write(tmp_path, raw))
    measured = {f"{layout}_{p}": 8.0 for layout in PATTERN_LAYOUTS for p in PATTERN_PERIODS} | {"stripes_4": 150.0}
    image = {"analyses": json.dumps({"pattern": measured})}
    assert tags_of(tag_frame(frame([image]), taxonomy))[(0, "pattern")] == {"pinstriped"}


def test_dropping_style_works(tmp_path):
    raw = shipped()
    del raw["dimensions"]["style"]
    taxonomy = load_taxonomy(write(tmp_path, raw))
    got = tags_of(tag_frame(frame([{"analyses": analyses("red", "solid")}]), taxonomy))
    assert {d for _, d in got} == {"category", "color", "pattern", "fit"}  # fit: its none tag
    assert got[(0, "fit")] == {"not_applicable"}


def test_a_category_without_label_loads_and_only_the_demo_generator_refuses_it(tmp_path):
    raw = shipped()
    raw["dimensions"]["category"]["tags"]["jumpsuit"] = {"display": "Jumpsuit"}
    path = write(tmp_path, raw)
    taxonomy = load_taxonomy(path)
    assert "jumpsuit" in taxonomy.tags("category")
    with pytest.raises(TaxonomyError, match=f"taxonomy file {path}: category: every tag needs a `label`"):
        taxonomy.category_by_label()


# --- edits refused when read ---------------------------------------------------------------------------


def _no_rgb(raw):
    del raw["dimensions"]["color"]["tags"]["red"]["rgb"]


def _layout(raw):
    raw["dimensions"]["pattern"]["tags"]["striped"]["layout"] = "zigzag"


def _period(raw):
    raw["dimensions"]["pattern"]["tags"]["striped"]["period_px"] = 7


def _rename_category(raw):
    raw["dimensions"]["product_type"] = raw["dimensions"].pop("category")
    raw["dimensions"]["style"]["from"] = "product_type"


def _category_column(raw):
    raw["dimensions"]["category"]["column"] = "product_type"


def _synonym(raw):
    raw["dimensions"]["color"]["tags"]["orange"]["synonyms"].append("rouge")  # red's


def _multi_label_pixels(raw):
    raw["dimensions"]["color"]["multi_label"] = True


def _rules_from_unknown(raw):
    raw["dimensions"]["style"]["from"] = "genre"


def _unknown_source(raw):
    raw["dimensions"]["fit"]["source"] = "magic"


def _no_prompts(raw):
    raw["dimensions"]["look"] = {"source": "zero_shot", "tags": {"boho": {"prompts": ["a boho dress"]}, "punk": {}}}


@pytest.mark.parametrize(
    "edit, dimension, problem",
    [
        (_no_rgb, "color", "colour 'red' needs rgb: three integers 0..255"),
        (_layout, "pattern", "pattern 'striped': no detector for layout 'zigzag'; layouts: ['stripes'"),
        (_period, "pattern", "pattern 'striped': period_px 7 is not a measured period [4, 6, 8"),
        (_rename_category, "category", "is required (it partitions the indexes); found ["),
        (_category_column, "category", "column 'product_type' must be 'category' (the catalog's category column; "),
        (_synonym, "color", "'rouge' names both 'red' and 'orange'"),
        (_multi_label_pixels, "color", "a pixels dimension is single-label"),
        (_rules_from_unknown, "style", "rules read `from` another dimension, not 'genre'"),
        (_unknown_source, "fit", "source 'magic' is not one of ['catalog', 'model', 'head', 'pixels', 'rules'"),
        (_no_prompts, "look", "zero_shot tag 'punk' needs prompts"),
    ],
)
def test_a_broken_edit_is_refused_naming_the_file_the_dimension_and_the_problem(tmp_path, edit, dimension, problem):
    raw = shipped()
    edit(raw)
    path = write(tmp_path, raw)
    with pytest.raises(TaxonomyError) as refused:
        load_taxonomy(path)
    message = str(refused.value)
    assert message.startswith(f"taxonomy file {path}: ")
    assert f"dimension '{dimension}'" in message and problem in message
    if edit is _category_column:
        assert "VECFLOW_CATALOG_COLUMNS maps a catalog's own column onto it" in message
