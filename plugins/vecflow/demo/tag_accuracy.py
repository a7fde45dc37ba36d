"""How right the pipeline's tags are, per dimension and tag, against the generator's truth: every
image the pipeline tagged (image_tags) with its true tags (truth/images.parquet; multi-label tags
`|`-joined, a catalog value that named no tag None). Precision: of the images given a tag, the share
that truly have it; recall: of the images that truly have a tag, the share given it. Written to
reports/tag_accuracy.json for `make run`."""

from __future__ import annotations

import json

import pandas as pd

from vecflow.demo.catalog.generate import TRUTH_SEPARATOR


def _pairs(frame: pd.DataFrame, column: str) -> set[tuple[str, str]]:
    return set(zip(frame["image_id"], frame[column]))


def tag_accuracy(image_tags: pd.DataFrame, truth: pd.DataFrame, taxonomy) -> dict:
    """{dimension: {source, precision, recall, images, tags: {tag: {precision, recall, support}}}}
    for every dimension the truth has a column for; micro-averaged over the dimension's tags."""
    tagged = truth[truth["image_id"].isin(set(image_tags["image_id"]))]
    out = {}
    for dim in taxonomy.dims.values():
        if dim.name not in tagged.columns:
            continue
        true = tagged[["image_id", dim.name]].dropna()
        true = true.assign(**{dim.name: true[dim.name].astype(str).str.split(TRUTH_SEPARATOR)}).explode(dim.name)
        given = image_tags[image_tags["dimension"] == dim.name]
        truth_pairs, given_pairs = _pairs(true, dim.name), _pairs(given, "tag")
        hits = truth_pairs & given_pairs
        per_tag = {}
        for tag in dim.tags:
            t = {p for p in truth_pairs if p[1] == tag}
            g = {p for p in given_pairs if p[1] == tag}
            if not t and not g:
                continue
            h = t & g
            per_tag[tag] = {
                "precision": round(len(h) / len(g), 4) if g else None,
                "recall": round(len(h) / len(t), 4) if t else None,
                "support": len(t),
            }
        out[dim.name] = {
            "source": dim.source + (f"+{dim.fallback}" if dim.fallback else ""),
            "precision": round(len(hits) / len(given_pairs), 4) if given_pairs else None,
            "recall": round(len(hits) / len(truth_pairs), 4) if truth_pairs else None,
            "images": int(true["image_id"].nunique()),
            "tags": per_tag,
        }
    return out


def write_tag_accuracy(settings, warehouse) -> dict:
    from vecflow.taxonomy import load_taxonomy

    truth = pd.read_parquet(settings.paths.catalog_dir / "truth" / "images.parquet")
    accuracy = tag_accuracy(warehouse.table("image_tags"), truth, load_taxonomy())
    path = settings.paths.reports_dir / "tag_accuracy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(accuracy, indent=1))
    return accuracy


def format_tag_accuracy(accuracy: dict) -> str:
    """One line per dimension: its source, precision and recall, and its weakest tag by F1."""
    lines = ["tags against the truth (precision / recall over the images tagged):"]
    for dim, a in accuracy.items():
        scored = [
            (t, v)
            for t, v in a["tags"].items()
            if v["precision"] is not None and v["recall"] is not None and v["support"] >= 5
        ]
        weakest = min(scored, key=lambda tv: _f1(tv[1]), default=None)
        worst = f"; weakest {weakest[0]} {weakest[1]['precision']:.2f}/{weakest[1]['recall']:.2f}" if weakest else ""
        p = "-" if a["precision"] is None else f"{a['precision']:.3f}"
        r = "-" if a["recall"] is None else f"{a['recall']:.3f}"
        lines.append(f"  {dim:<11} {a['source']:<14} {p} / {r}  {len(a['tags'])} tags{worst}")
    return "\n".join(lines)


def _f1(v: dict) -> float:
    p, r = v["precision"], v["recall"]
    return 2 * p * r / (p + r) if p + r else 0.0
