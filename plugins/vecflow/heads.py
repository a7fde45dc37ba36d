"""Heads trained on labels (#25 item 3): one linear classifier per `head` dimension of the taxonomy,
trained on the vectors already stored (v_vectors_clean; nothing is re-embedded) from a labels file
(image_id, dimension, tag: a merchandisers' sample), like the LAION aesthetic predictor's one linear
head over stored CLIP embeddings.

A single-label dimension gets a multinomial logistic regression, a multi-label one a binary logistic
regression per tag (one-vs-rest). The labelled images are split, stratified and seeded, into training
and held-out images; every tag gets precision, recall, F1 and support on the held-out images, and its
threshold is the confidence at which its held-out F1 is best (Rekognition Custom Labels' practice),
placed halfway to the next held-out score under it (a few held-out images must not make it brittle). A
tag whose held-out precision is under VECFLOW_TAG_MIN_HEAD_PRECISION is kept in the weights but not
published: it is never predicted, and the report says why.

A head set is written beside its model in the registry:
`<VECFLOW_MODEL_REGISTRY>/<model_version>/heads/<head_version>/` with card.json (metrics, taxonomy
version, the labels' md5, the weights' md5), weights.npz (per dimension `<dim>/W` (d x tags), `/b`,
`/tags`, `/thresholds`, `/published`) and rejects.csv (the label rows not used, each with a reason).
Versions are `heads-<UTC YYYYMMDDHHMMSSmmm>-<weights md5 prefix>`, so the newest sorts last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("image_id", "dimension", "tag")
HOLDOUT_FRACTION = 0.25  # of each tag's labelled images (at least one when a tag has two)
SPLIT_SEED = 0  # the same labels give the same split, so two trainings compare
# vectors are unit-length, so coordinates are small: a weak L2 penalty lets the head separate them
REGULARISATION_C = 10.0
HEAD_VERSION = re.compile(r"^heads-\d{17}-[0-9a-f]{8}$")
PREDICT_CHUNK = 262_144  # rows scored at once: bounds the (rows x tags) scores' memory at 1M+ vectors
REJECT_COLUMNS = ["image_id", "dimension", "tag", "reason", "detail"]


class HeadError(RuntimeError):
    """Labels unreadable or malformed, a head set missing, or its weights not matching their md5."""


@dataclass(frozen=True)
class Head:
    """One dimension's linear head: scores = vectors @ W + b."""

    dimension: str
    multi_label: bool
    tags: np.ndarray  # (k,) tag keys
    W: np.ndarray  # (d, k) float32
    b: np.ndarray  # (k,) float32
    thresholds: np.ndarray  # (k,) float64: the confidence a tag needs (best held-out F1)
    published: np.ndarray  # (k,) bool: held-out precision reached the minimum


class HeadSet:
    """A trained head set: `predict(dimension, vectors)` tags stored vectors in long form."""

    def __init__(self, version: str, card: dict, heads: dict[str, Head], path: Path):
        self.version = version
        self.card = card
        self.heads = heads
        self.path = path

    @property
    def dimensions(self) -> list[str]:
        return list(self.heads)

    @property
    def model_version(self) -> str:
        return self.card["model_version"]

    @property
    def taxonomy_version(self) -> str:
        return self.card["taxonomy_version"]

    def predict(self, dimension: str, vectors: np.ndarray) -> pd.DataFrame:
        """(row, tag, confidence) of `vectors` (n x d): single-label, the most probable tag when it is
        published and its probability reaches its threshold; multi-label, every published tag whose
        sigmoid reaches its threshold. Rows with no tag are absent."""
        if dimension not in self.heads:
            raise HeadError(
                f"head set {self.version} has no head for dimension {dimension!r}; it has {self.dimensions}"
            )
        head = self.heads[dimension]
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != head.W.shape[0]:
            raise HeadError(
                f"head set {self.version}, {dimension}: vectors of shape {vectors.shape}, the head takes "
                f"(n, {head.W.shape[0]})"
            )
        parts = [
            _predict_chunk(head, vectors[start : start + PREDICT_CHUNK], start)
            for start in range(0, len(vectors), PREDICT_CHUNK)
        ]
        rows = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
        codes = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
        confidence = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.float32)
        return pd.DataFrame(
            {"row": rows, "tag": head.tags.astype(object)[codes], "confidence": confidence.astype(np.float64)}
        )


def _predict_chunk(head: Head, x: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if head.multi_label:
        # unpublished tags are never predicted: only the published columns are scored, and the
        # thresholds are compared as logits, so only the admitted scores go through the sigmoid
        cols = np.flatnonzero(head.published)
        logits = x @ head.W[:, cols] + head.b[cols]
        with np.errstate(divide="ignore"):
            t = head.thresholds[cols].astype(np.float64)
            cut = np.log(t) - np.log1p(-t)  # 0 -> -inf, 1 -> inf (never)
        rows, j = np.nonzero(logits >= cut.astype(np.float32))
        return rows + offset, cols[j], _sigmoid(logits[rows, j])
    logits = x @ head.W + head.b
    best = logits.argmax(axis=1)
    top = logits[np.arange(len(x)), best]
    # the softmax probability of the argmax: 1 / sum(exp(logit - top)), in place on the chunk
    logits -= top[:, None]
    np.exp(logits, out=logits)
    prob = 1.0 / logits.sum(axis=1)
    keep = head.published[best] & (prob >= head.thresholds[best])
    rows = np.flatnonzero(keep)
    return rows + offset, best[rows], prob[rows]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # within +-36 float64's sigmoid stays under 1, so a threshold chosen on it is a finite logit
    return 1.0 / (1.0 + np.exp(-np.clip(z, -36, 36)))


# ---------------------------------------------------------------------------------------------- labels


def read_labels(settings, warehouse, file_or_table: str) -> pd.DataFrame:
    """The labels (image_id, dimension, tag as strings) of a CSV or parquet file (a path or an fsspec
    URL, opened with the catalog's VECFLOW_CATALOG_STORAGE_OPTIONS: labels live beside the catalog) or
    of a warehouse table; `attrs` carry where they came from and the md5 the card records."""
    name = str(file_or_table)
    looks_like_file = "://" in name or "/" in name or Path(name).suffix.lower() in (".csv", ".parquet", ".gz")
    if looks_like_file or Path(name).exists():
        remote = "://" in name and not name.startswith("file://")
        content = _read_bytes(name, settings.catalog.storage_options if remote else {})
        try:
            if _is_parquet(name):
                frame = pd.read_parquet(io.BytesIO(content))
            else:
                gzip = "gzip" if name.lower().endswith(".gz") else None
                frame = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False, compression=gzip)
        except Exception as exc:  # a malformed file: say which and why, not a parser traceback
            raise HeadError(
                f"labels {name}: not a readable {'parquet' if _is_parquet(name) else 'CSV'} file ({exc})"
            ) from None
        digest = hashlib.md5(content).hexdigest()
    else:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not warehouse.has_table(name):
            raise HeadError(f"labels {name}: no such file, nor a table of warehouse dataset {warehouse.dataset}")
        frame = warehouse.table(name)
        digest = None
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise HeadError(f"labels {name}: missing column(s) {missing}; found {list(frame.columns)}")
    labels = pd.DataFrame({c: frame[c].map(_text) for c in LABEL_COLUMNS})
    if digest is None:  # a table has no file: hash its rows, in a fixed order
        canonical = labels.sort_values(list(LABEL_COLUMNS)).to_csv(index=False).encode()
        digest = hashlib.md5(canonical).hexdigest()
    labels.attrs.update({"source": name, "md5": digest})
    return labels


def _read_bytes(url: str, storage_options: dict) -> bytes:
    import fsspec

    try:
        with fsspec.open(url, "rb", **storage_options) as fh:
            return fh.read()
    except FileNotFoundError:
        raise HeadError(f"labels {url}: no such file") from None


def _is_parquet(name: str) -> bool:
    return name.lower().endswith((".parquet", ".pq"))


def _text(value) -> str:
    """A label cell as stripped text; missing values become '' (rejected as `missing_value`)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def check_labels(labels: pd.DataFrame, taxonomy, known_images: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted labels with the tag mapped to its key, rejects with a reason): missing values, unknown
    dimensions, dimensions that are not `head` dimensions, tags that map to no tag of the dimension
    (synonyms are accepted), images with no stored vector of the model, duplicates, and single-label
    images labelled with two different tags."""
    head_dims = {d.name for d in taxonomy.by_source("head")}
    frame = labels[list(LABEL_COLUMNS)].copy().reset_index(drop=True)
    reason = pd.Series("", index=frame.index, dtype=object)
    detail = pd.Series("", index=frame.index, dtype=object)

    def mark(mask, why: str, what) -> None:
        mask = mask & (reason == "")
        reason[mask] = why
        detail[mask] = what if isinstance(what, str) else what[mask]

    mark((frame == "").any(axis=1), "missing_value", "image_id, dimension and tag must all be given")
    known_dims = set(taxonomy.dimensions)
    mark(~frame["dimension"].isin(known_dims), "unknown_dimension", "not a dimension of taxonomy " + taxonomy.version)
    others = {d: taxonomy.dimension(d).sources for d in known_dims - head_dims}
    mark(
        frame["dimension"].isin(others),
        "not_a_head_dimension",
        frame["dimension"].map(lambda d: f"{d} comes from {' / '.join(others.get(d, ()))}, not a trained head"),
    )
    mapped = pd.Series(
        [
            taxonomy.dimension(d).map_value(t) if d in head_dims and t else None
            for d, t in zip(frame["dimension"], frame["tag"])
        ],
        index=frame.index,
        dtype=object,
    )
    mark(
        mapped.isna(), "unknown_tag", frame["tag"].map(lambda t: f"{t!r} names no tag of the dimension (nor a synonym)")
    )
    mark(~frame["image_id"].isin(known_images), "unknown_image", "no stored vector of the model for this image")
    frame["tag"] = mapped.where(reason == "", frame["tag"])
    ok = reason == ""
    mark(ok & frame.duplicated(["image_id", "dimension", "tag"]), "duplicate_label", "the same label given again")
    single = frame["dimension"].map(lambda d: d in head_dims and not taxonomy.dimension(d).multi_label)
    ok = (reason == "") & single
    distinct = frame[ok].groupby(["image_id", "dimension"])["tag"].transform("nunique")
    conflict = pd.Series(False, index=frame.index)
    conflict[distinct.index] = distinct > 1
    mark(conflict, "conflicting_labels", "a single-label dimension labelled with two different tags for this image")
    rejects = frame.assign(tag=labels["tag"].reset_index(drop=True), reason=reason, detail=detail)[reason != ""]
    return frame[reason == ""].reset_index(drop=True), rejects[REJECT_COLUMNS].reset_index(drop=True)


# -------------------------------------------------------------------------------------------- training


def _split(keys: np.ndarray, seed: int) -> np.ndarray:
    """A held-out mask over images, stratified by `keys` (each image's tag, or its rarest tag): of each
    key's n images round(n * HOLDOUT_FRACTION) are held out, at least one and at most n - 1 when n >= 2."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(keys), dtype=bool)
    for key in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == key))
        n = len(members)
        take = min(max(round(n * HOLDOUT_FRACTION), 1), n - 1) if n >= 2 else 0
        held[members[:take]] = True
    return held


def _best_threshold(scores: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of predicting a tag where score >= t, at the t of best F1 over the
    held-out scores (-inf: the tag cannot be predicted for that row). support: held-out positives."""
    support = int(truth.sum())
    candidates = np.isfinite(scores)
    order = np.argsort(-scores[candidates], kind="stable")
    s, t = scores[candidates][order], truth[candidates][order]
    result = {"support": support, "precision": 0.0, "recall": 0.0, "f1": 0.0, "threshold": 1.0}
    if support == 0 or len(s) == 0:
        return result
    tp = np.cumsum(t)
    predicted = np.arange(1, len(s) + 1)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold admits every row of its score
    precision, recall = tp / predicted, tp / support
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    f1 = np.where(last_of_tie, f1, -1.0)
    i = int(f1.argmax())
    if f1[i] <= 0:
        return result
    # halfway to the first score left out (half the last one when none is): the held-out rows are
    # split the same, and new rows scored a little under the lowest held-out positive are not lost
    threshold = (s[i] + s[i + 1]) / 2 if i + 1 < len(s) else s[i] / 2
    return {
        "support": support,
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "f1": float(f1[i]),
        "threshold": float(threshold),
    }


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=REGULARISATION_C, max_iter=2000).fit(x, y)


def _train_single(x: np.ndarray, y: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tags, W, b, held-out mask) of a multinomial head."""
    tags, codes = np.unique(np.asarray(y), return_inverse=True)
    held = _split(codes, SPLIT_SEED)
    model = _fit(x[~held], codes[~held])
    W, b = model.coef_.T.astype(np.float32), model.intercept_.astype(np.float32)
    if len(tags) == 2:  # scikit-learn fits one binary logit; [-w/2, w/2] gives the same softmax
        W, b = np.hstack([-W / 2, W / 2]), np.array([-b[0] / 2, b[0] / 2], dtype=np.float32)
    return tags, W, b, held


def _train_multi(x: np.ndarray, y: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(W, b, held-out mask, tags that could not be trained) of one-vs-rest heads; y is (n x k) bool."""
    counts = y.sum(axis=0)
    # stratify on each image's rarest tag, so rare tags reach the held-out images too
    rarest = np.where(y, counts[None, :], np.iinfo(np.int64).max).argmin(axis=1)
    held = _split(rarest, SPLIT_SEED)
    W = np.zeros((x.shape[1], len(tags)), dtype=np.float32)
    b = np.full(len(tags), -36.0, dtype=np.float32)  # an untrained tag is never published either
    untrained = []
    for k in range(len(tags)):
        positives = int(y[~held, k].sum())
        if positives == 0 or positives == int((~held).sum()):
            untrained.append(k)
            continue
        model = _fit(x[~held], y[~held, k])
        W[:, k], b[k] = model.coef_[0], model.intercept_[0]
    return W, b, held, untrained


def train_heads(
    settings, warehouse, labels: pd.DataFrame, taxonomy, model_version: str | None = None
) -> tuple[HeadSet | None, dict]:
    """Trains a head per `head` dimension that has labels on the stored vectors of `model_version`
    (the serving model by default), writes the head set to the model registry and returns it with
    the training report; the head set is None when no head could be trained (nothing is written then)."""
    started = time.monotonic()
    model_version = model_version or settings.model_version
    images = sorted(set(labels["image_id"]) - {""})
    stored = warehouse.query("select_labelled_vectors", model_version=model_version, image_ids=images)
    accepted, rejects = check_labels(labels, taxonomy, set(stored["image_id"]))
    sizes = {len(v) for v in stored["embedding"]}
    if len(sizes) > 1:
        raise HeadError(
            f"model {model_version}: stored vectors of labelled images have different sizes {sorted(sizes)}"
        )
    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in stored["embedding"]]) if len(stored) else None
    row_of = {image: i for i, image in enumerate(stored["image_id"])}
    min_precision = settings.tags.min_head_precision
    report = {
        "model_version": model_version,
        "labels": labels.attrs.get("source", "labels"),
        "label_rows": len(labels),
        "accepted": len(accepted),
        "rejects": rejects,
        "reject_counts": rejects["reason"].value_counts().to_dict(),
        "min_head_precision": min_precision,
        "tags": [],
        "untrained": {},
        "not_labelled": {},  # tags of a trained dimension with no labels: its head never predicts them
    }
    heads: dict[str, Head] = {}
    metrics: dict[str, dict] = {}
    for dim in taxonomy.by_source("head"):
        rows = accepted[accepted["dimension"] == dim.name]
        if rows.empty:
            report["untrained"][dim.name] = "no accepted labels"
            continue
        trained = _train_dimension(dim, rows, vectors, row_of, min_precision)
        if isinstance(trained, str):
            report["untrained"][dim.name] = trained
            continue
        heads[dim.name], metrics[dim.name] = trained
        report["tags"].extend({"dimension": dim.name, **m} for m in metrics[dim.name]["tags"])
        if metrics[dim.name]["not_labelled"]:
            report["not_labelled"][dim.name] = metrics[dim.name]["not_labelled"]
    for dim, why in report["untrained"].items():
        log.warning("tags train: no head for %s: %s", dim, why)
    if not heads:
        report["path"] = None
        return None, report
    card = {
        "model_version": model_version,
        "embedding_dim": int(vectors.shape[1]),
        "taxonomy_version": taxonomy.version,
        "taxonomy": taxonomy.location,
        "labels": {
            "source": report["labels"],
            "md5": labels.attrs.get("md5") or _frame_md5(labels),
            "rows": len(labels),
            "accepted": len(accepted),
            "rejects": report["reject_counts"],
        },
        "holdout_fraction": HOLDOUT_FRACTION,
        "split_seed": SPLIT_SEED,
        "min_head_precision": min_precision,
        "dimensions": metrics,
        "untrained": report["untrained"],
    }
    head_set = _write_head_set(settings, model_version, heads, card, rejects, time.monotonic() - started)
    report.update(head_version=head_set.version, path=str(head_set.path))
    return head_set, report


def _train_dimension(dim, rows: pd.DataFrame, vectors: np.ndarray, row_of: dict, min_precision: float):
    """(Head, metrics) of one dimension, or the reason none could be trained."""
    by_image = rows.groupby("image_id", sort=True)["tag"].agg(list)
    x = vectors[[row_of[i] for i in by_image.index]]
    # held-out scores in float64: float32 probabilities of a confident head round to 1.0, and a
    # threshold of 1.0 would admit nothing
    as64 = np.float64
    if dim.multi_label:
        tags = np.array(sorted(set(rows["tag"])))
        y = np.stack([np.isin(tags, labelled) for labelled in by_image])
        if len(by_image) < 2:
            return f"{len(by_image)} labelled image; a head needs images with and without each tag"
        W, b, held, untrained = _train_multi(x, y, tags)
        if len(untrained) == len(tags):
            return "no tag has both labelled and unlabelled training images"
        truth = y[held]
        scores = _sigmoid(x[held].astype(as64) @ W.astype(as64) + b.astype(as64))
        scores[:, untrained] = -np.inf
    else:
        if rows["tag"].nunique() < 2:
            return f"only one tag ({rows['tag'].iloc[0]}) labelled; a single-label head needs two or more"
        tags, W, b, held = _train_single(x, [t[0] for t in by_image])
        untrained = []
        logits = x[held].astype(as64) @ W.astype(as64) + b.astype(as64)
        best = logits.argmax(axis=1)
        prob = 1.0 / np.exp(logits - logits[np.arange(len(best)), best][:, None]).sum(axis=1)
        # a tag is predicted for a row only where it is the most probable
        scores = np.where(best[:, None] == np.arange(len(tags))[None, :], prob[:, None], -np.inf)
        truth = np.asarray([t[0] for t in by_image])[held][:, None] == tags[None, :]
    train_counts = (np.stack([np.isin(tags, labelled) for labelled in by_image]) & ~held[:, None]).sum(axis=0)
    per_tag, thresholds, published = [], np.ones(len(tags), np.float64), np.zeros(len(tags), bool)
    for k, tag in enumerate(tags):
        m = _best_threshold(scores[:, k], truth[:, k])
        if k in untrained:
            note = "no training images with and without it"
        elif m["support"] == 0:
            note = "no held-out images: too few labels to measure it"
        elif m["f1"] == 0:
            note = "never right on held-out images"
        elif m["precision"] < min_precision:
            note = f"held-out precision {m['precision']:.3f} < {min_precision}"
        else:
            note = ""
        thresholds[k], published[k] = m["threshold"], note == ""
        per_tag.append({"tag": str(tag), "train": int(train_counts[k]), **m, "published": note == "", "note": note})
    head = Head(
        dim.name, dim.multi_label, tags.astype(str), W.astype(np.float32), b.astype(np.float32), thresholds, published
    )
    return head, {
        "multi_label": dim.multi_label,
        "train_images": int((~held).sum()),
        "heldout_images": int(held.sum()),
        "tags": per_tag,
        "not_labelled": sorted(set(dim.tags) - set(tags.tolist())),
    }


def _frame_md5(labels: pd.DataFrame) -> str:
    return hashlib.md5(
        labels[list(LABEL_COLUMNS)].sort_values(list(LABEL_COLUMNS)).to_csv(index=False).encode()
    ).hexdigest()


# ------------------------------------------------------------------------------------------- registry


def heads_dir(settings, model_version: str) -> Path:
    return Path(settings.embed.model_registry) / model_version / "heads"


def _write_head_set(
    settings, model_version: str, heads: dict[str, Head], card: dict, rejects: pd.DataFrame, seconds: float
) -> HeadSet:
    arrays = {}
    for name, head in heads.items():
        arrays.update(
            {
                f"{name}/W": head.W,
                f"{name}/b": head.b,
                f"{name}/tags": head.tags,
                f"{name}/thresholds": head.thresholds,
                f"{name}/published": head.published,
            }
        )
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    weights = buffer.getvalue()
    md5 = hashlib.md5(weights).hexdigest()
    now = dt.datetime.now(dt.UTC)
    # milliseconds: two trainings in one second still sort in the order they were made
    version = f"heads-{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}-{md5[:8]}"
    card = {
        "head_version": version,
        **card,
        "weights_file": "weights.npz",
        "weights_md5": md5,
        "created_at": now.isoformat(),
        "training_seconds": round(seconds, 3),
    }
    root = heads_dir(settings, model_version)
    # written in a scratch folder and renamed: `newest` never sees a half-written head set
    scratch = root / f".tmp-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True)
    try:
        (scratch / "weights.npz").write_bytes(weights)
        (scratch / "card.json").write_text(json.dumps(card, indent=2, default=str))
        rejects.to_csv(scratch / "rejects.csv", index=False)
        if (root / version).exists():
            raise HeadError(
                f"head set {root / version} exists already: the same weights, trained in the same millisecond"
            )
        scratch.rename(root / version)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("head set %s written to %s (%d head(s))", version, root / version, len(heads))
    return HeadSet(version, card, heads, root / version)


def load_head_set(settings, model_version: str, head_version: str | None = None) -> HeadSet | None:
    """The head set `head_version`, else the one VECFLOW_TAG_HEADS names, else the newest of the
    model; None when the model has none. A named one that is missing, or weights that do not match
    the card's md5, are a HeadError."""
    root = heads_dir(settings, model_version)
    name = head_version or settings.tags.heads
    if name is None:
        found = sorted(p.name for p in root.glob("heads-*") if HEAD_VERSION.match(p.name)) if root.is_dir() else []
        if not found:
            return None
        name = found[-1]
    path = root / name
    if not (path / "card.json").is_file():
        raise HeadError(f"head set {name} of model {model_version}: no {path / 'card.json'}")
    card = json.loads((path / "card.json").read_text())
    weights = (path / card.get("weights_file", "weights.npz")).read_bytes()
    md5 = hashlib.md5(weights).hexdigest()
    if md5 != card.get("weights_md5"):
        raise HeadError(f"head set {path}: weights md5 {md5} does not match the card's {card.get('weights_md5')}")
    if card.get("model_version") != model_version:
        raise HeadError(f"head set {path} was trained on model {card.get('model_version')}, not {model_version}")
    with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
        heads = {
            dim: Head(
                dim,
                bool(info["multi_label"]),
                npz[f"{dim}/tags"],
                npz[f"{dim}/W"],
                npz[f"{dim}/b"],
                npz[f"{dim}/thresholds"],
                npz[f"{dim}/published"],
            )
            for dim, info in card["dimensions"].items()
        }
    return HeadSet(name, card, heads, path)


def tag_table(report: dict) -> pd.DataFrame:
    """The training report's per-tag table (what `tags train` prints)."""
    columns = ["dimension", "tag", "train", "support", "precision", "recall", "f1", "threshold", "published", "note"]
    return pd.DataFrame(report["tags"], columns=columns)
