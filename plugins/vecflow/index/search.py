"""Search the published window indexes: by a picture (embedded with the serving model), by a vector,
or by a catalog image's own vector; narrowed by filters on tags, source, listing dates and catalog
attributes; without the images delisted since the version was built (the tombstone set).

Filters are applied inside faiss: the ids that match go into an id selector in the per-query search
parameters (faiss IDSelectorBatch, or IDSelectorNot of the ids that do not match when those are
fewer), so IVF ranks only matching vectors; a broad filter (a fifth of the window or more) ranks
2k / selectivity results without a selector and keeps the matches, falling back to the selector
when too few match. IVF visits `nprobe` lists, and a narrow filter leaves
few matches in them (faiss #3112: fewer than k results), so a filtered search visits nprobe divided
by the filter's selectivity lists (capped at every list), searches a small subset exactly (its
vectors reconstructed), and repeats over every list when it still found fewer than k of the matches.

What a result shows (tags, folded duplicates, source, listing date, attributes) comes from the
version's ids.parquet (METADATA_COLUMNS), so a search service needs the index store only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vecflow.index.window import METADATA_COLUMNS

RESULT_COLUMNS = [
    "rank",
    "image_id",
    "score",
    "category",
    "listed_date",
    "source",
    "tags",
    "duplicates",
    "attributes",
    "index_version",
]
EXACT_SUBSET = 4096  # a filtered subset this small is searched exactly, from its reconstructed vectors
POST_FILTER_SELECTIVITY = 0.2  # a filter matching this share or more is applied to an over-fetched result
TOMBSTONES = "TOMBSTONES.parquet"  # the index store's tombstone set (vecflow.lifecycle writes it)


class SearchError(ValueError):
    """A search that cannot be answered as asked (a malformed filter, an unknown image or category)."""


# --- filters ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchFilter:
    """What results must match: every key (tag dimension, `source`, `attributes.<name>`) one of its
    values, and the listing date within [listed_after, listed_before]."""

    equals: tuple[tuple[str, frozenset[str]], ...] = ()
    listed_after: dt.date | None = None
    listed_before: dt.date | None = None

    @property
    def empty(self) -> bool:
        return not self.equals and self.listed_after is None and self.listed_before is None

    def values(self, key: str) -> frozenset[str] | None:
        return dict(self.equals).get(key)

    def describe(self) -> str:
        parts = [f"{k}={'|'.join(sorted(v))}" for k, v in self.equals]
        parts += [f"listed_after={self.listed_after}"] if self.listed_after else []
        parts += [f"listed_before={self.listed_before}"] if self.listed_before else []
        return ", ".join(parts) or "none"


def parse_filters(
    pairs: Iterable[str], listed_after: dt.date | None = None, listed_before: dt.date | None = None
) -> SearchFilter:
    """`key=value` pairs (a key given twice matches either value): a tag dimension of the taxonomy
    (`color=red`, `category=dress`), `source`, or `attributes.<name>` (a catalog column)."""
    from vecflow.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    wanted: dict[str, set[str]] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise SearchError(f"filter {pair!r}: expected key=value (e.g. color=red, source=shop_a)")
        if key in taxonomy.dimensions:
            if value not in taxonomy.tags(key):
                raise SearchError(f"filter {pair!r}: {value!r} is not a {key} tag ({', '.join(taxonomy.tags(key))})")
        elif key != "source" and not (key.startswith("attributes.") and len(key) > len("attributes.")):
            raise SearchError(
                f"filter {pair!r}: unknown key {key!r}; filter on a tag dimension "
                f"({', '.join(taxonomy.dimensions)}), source, or attributes.<name>"
            )
        wanted.setdefault(key, set()).add(value)
    if listed_after and listed_before and listed_after > listed_before:
        raise SearchError(f"listed_after {listed_after} is after listed_before {listed_before}")
    return SearchFilter(tuple(sorted((k, frozenset(v)) for k, v in wanted.items())), listed_after, listed_before)


# --- a loaded window version -----------------------------------------------------------------------------


class Window:
    """One category's published window version in memory: the faiss index, its metadata (one row per
    id) and manifest, with the lookups filtered search needs."""

    def __init__(self, index, meta: pd.DataFrame, manifest: dict, tombstones: frozenset[str] = frozenset()):
        self.index, self.manifest = index, manifest
        self.category, self.version = manifest["category"], manifest["version"]
        self.meta = meta.reset_index(drop=True)
        self.ids = self.meta["id"].to_numpy(dtype=np.int64)
        self.row_of = pd.Index(self.ids)
        self.ivf = _ivf(index)
        if self.ivf is not None:  # reconstruct by id: exact search over a small subset, search by image_id
            import faiss

            self.ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.nprobe = int(manifest.get("nprobe") or 1)
        self.has_metadata = "tags" in self.meta.columns
        self._postings: dict[str, dict[str, np.ndarray]] = {}
        self._attributes: pd.DataFrame | None = None
        self.tombstoned = self.meta["image_id"].isin(tombstones).to_numpy()

    @classmethod
    def load(cls, store, model_version: str, category: str, tombstones: frozenset[str] = frozenset()) -> Window:
        """The published version of a category, md5-checked (IndexIntegrityError when damaged)."""
        from vecflow.index.window import load_published

        index, ids, manifest = load_published(store, model_version, category)
        return cls(index, ids, manifest, tombstones)

    def with_tombstones(self, tombstones: frozenset[str]) -> Window:
        twin = object.__new__(Window)
        twin.__dict__.update(self.__dict__)
        twin.tombstoned = self.meta["image_id"].isin(tombstones).to_numpy()
        return twin

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def _posting(self, key: str) -> dict[str, np.ndarray]:
        """value -> the rows that have it, for a tag dimension or `source` (built on first use)."""
        if key not in self._postings:
            if key == "source":
                values = self.meta["source"].fillna("")
                self._postings[key] = {v: np.flatnonzero(values.to_numpy() == v) for v in values.unique()}
            else:
                exploded = self.meta["tags"].explode().dropna()
                exploded = exploded[exploded.str.startswith(f"{key}=")]
                rows = exploded.groupby(exploded.to_numpy()).indices
                self._postings[key] = {
                    tag.split("=", 1)[1]: exploded.index.to_numpy()[positions] for tag, positions in rows.items()
                }
        return self._postings[key]

    def _attribute(self, name: str) -> np.ndarray:
        if self._attributes is None:
            parsed = [json.loads(a) if isinstance(a, str) else {} for a in self.meta["attributes"]]
            self._attributes = pd.DataFrame(parsed, index=self.meta.index)
        if name not in self._attributes.columns:
            return np.full(len(self.meta), "", dtype=object)
        return self._attributes[name].map(lambda v: "" if v is None or v != v else str(v)).to_numpy()

    def mask(self, flt: SearchFilter) -> np.ndarray | None:
        """The rows a search may return (filter and tombstones), or None for all of them."""
        keep = ~self.tombstoned if self.tombstoned.any() else None
        if flt.empty:
            return keep
        if not self.has_metadata:
            raise SearchError(
                f"{self.category} version {self.version} has no search metadata (built before filtered search): "
                "the next daily run publishes one that has"
            )
        keep = np.ones(len(self.meta), dtype=bool) if keep is None else keep
        for key, values in flt.equals:
            if key.startswith("attributes."):
                keep &= np.isin(self._attribute(key.removeprefix("attributes.")), list(values))
                continue
            hit = np.zeros(len(self.meta), dtype=bool)
            posting = self._posting(key)
            for value in values:
                hit[posting.get(value, [])] = True
            keep &= hit
        if flt.listed_after or flt.listed_before:
            listed = pd.to_datetime(self.meta["listed_date"]).dt.date.to_numpy()
            if flt.listed_after:
                keep &= listed >= flt.listed_after
            if flt.listed_before:
                keep &= listed <= flt.listed_before
        return keep

    def vector_of(self, image_id: str) -> np.ndarray | None:
        rows = np.flatnonzero(self.meta["image_id"].to_numpy() == image_id)
        if not len(rows):
            return None
        return self.index.reconstruct(int(self.ids[rows[0]])).astype(np.float32)

    def search(self, query: np.ndarray, k: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top-k among the rows `keep` allows (all when None), best first."""
        import faiss

        allowed = self.size if keep is None else int(keep.sum())
        want = min(k, allowed)
        if want == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if keep is not None and allowed <= EXACT_SUBSET:
            rows = np.flatnonzero(keep)
            vectors = self.index.reconstruct_batch(self.ids[rows])
            scores = vectors @ query[0]
            best = np.argsort(-scores, kind="stable")[:want]
            return scores[best].astype(np.float32), rows[best]
        nlist = self.ivf.nlist if self.ivf is not None else 1
        nprobe = self.nprobe
        selector = batch = None
        selectivity = allowed / max(self.size, 1)
        if keep is not None and selectivity >= POST_FILTER_SELECTIVITY:
            # a broad filter: an id selector over so many ids costs more than the search, so rank
            # k / selectivity (twice over) without one and keep the matches; too few: the selector
            scores, found = self._search(query, min(self.size, math.ceil(2 * k / selectivity)), nprobe, None)
            rows = self.row_of.get_indexer(found)
            hit = keep[rows]
            if hit.sum() >= want:
                return scores[hit][:want], rows[hit][:want]
        if keep is not None:
            nprobe = min(nlist, math.ceil(self.nprobe / selectivity))
            # the smaller id set: the matches, or (IDSelectorNot) those that do not match
            batch = faiss.IDSelectorBatch(self.ids[keep] if 2 * allowed <= self.size else self.ids[~keep])
            selector = batch if 2 * allowed <= self.size else faiss.IDSelectorNot(batch)
        scores, found = self._search(query, want, nprobe, selector)
        if len(found) < want and nprobe < nlist:  # IVF's lists held fewer matches than asked: every list
            scores, found = self._search(query, want, nlist, selector)
        del selector, batch  # after the searches: faiss holds raw pointers to both
        return scores, self.row_of.get_indexer(found)

    def _search(self, query, k: int, nprobe: int, selector) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self.ivf is not None:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, found = self.index.search(query, k, params=params)
        valid = found[0] != -1
        return scores[0][valid], found[0][valid]

    def results(self, scores: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        out = self.meta.iloc[rows].copy()
        out["score"] = scores.astype(float)
        out["category"] = self.category
        out["index_version"] = self.version
        return out


def _ivf(index):
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


# --- the served set of windows -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Library:
    """What one search answers from: the serving model's published window per category and the
    tombstone set, swapped as a whole by a search service (a request holds one Library)."""

    model_version: str
    windows: dict[str, Window]
    tombstones: frozenset[str]
    tombstones_md5: str | None

    def versions(self) -> dict[str, str]:
        return {category: window.version for category, window in sorted(self.windows.items())}

    def categories_for(self, category: str | None, flt: SearchFilter) -> list[str]:
        """The categories to search: the filter's `category` values, or `category` ('all' or None: every one)."""
        wanted = flt.values("category") or ({category} if category not in (None, "all") else None)
        if wanted is None:
            return sorted(self.windows)
        missing = sorted(set(wanted) - set(self.windows))
        if missing and len(missing) == len(wanted):
            raise SearchError(
                f"no published index of {self.model_version} for {', '.join(missing)} "
                f"(published: {', '.join(sorted(self.windows)) or 'none'})"
            )
        return sorted(set(wanted) & set(self.windows))

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        category: str | None = None,
        flt: SearchFilter = SearchFilter(),
        exclude: str | None = None,
    ) -> pd.DataFrame:
        """The top-k over the categories (see categories_for) that match `flt`, without delisted
        images (nor `exclude`, the query's own image); RESULT_COLUMNS."""
        if k < 1:
            raise SearchError(f"k must be at least 1, not {k}")
        frames = []
        for name in self.categories_for(category, flt):
            window = self.windows[name]
            keep = window.mask(flt)
            if exclude is not None:
                own = window.meta["image_id"].to_numpy() == exclude
                if own.any():
                    keep = (np.ones(window.size, dtype=bool) if keep is None else keep) & ~own
            scores, rows = window.search(vector, k, keep)
            frames.append(window.results(scores, rows))
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METADATA_COLUMNS)
        if results.empty:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        # an image listed again on a later day may sit in two categories' windows: once, at its best
        results = results.sort_values("score", ascending=False, kind="stable").drop_duplicates("image_id")
        results = results.head(k).reset_index(drop=True)
        results.insert(0, "rank", range(1, len(results) + 1))
        for column in RESULT_COLUMNS:
            if column not in results.columns:
                results[column] = None
        return results[RESULT_COLUMNS]

    def vector_of(self, image_id: str) -> tuple[np.ndarray, str]:
        """A served image's vector and category (SearchError when no published window has it)."""
        for name, window in sorted(self.windows.items()):
            vector = window.vector_of(image_id)
            if vector is not None:
                return vector, name
        raise SearchError(f"image_id {image_id!r} is not in any published index of {self.model_version}")


def read_tombstones(store) -> tuple[frozenset[str], str | None]:
    """The tombstone set (image_ids delisted since) and its md5, from the index store."""
    from vecflow.index.store import md5_of

    try:
        data = store.read_bytes(TOMBSTONES)
    except FileNotFoundError:
        return frozenset(), None
    return frozenset(pd.read_parquet(io.BytesIO(data))["image_id"]), md5_of(data)


def load_library(store, model_version: str, previous: Library | None = None) -> Library:
    """Every published window of `model_version` with the tombstone set; windows whose version
    `previous` already holds are reused, the others loaded and md5-checked (IndexIntegrityError, and
    nothing swapped, when one is damaged)."""
    from vecflow.index.window import model_categories_in, read_current

    tombstones, md5 = read_tombstones(store)
    reusable = previous.windows if previous and previous.model_version == model_version else {}
    windows = {}
    for category in model_categories_in(store, model_version):
        current = read_current(store, model_version, category)
        if current is None:
            continue
        old = reusable.get(category)
        if old is not None and old.version == current.payload["version"]:
            windows[category] = old if md5 == previous.tombstones_md5 else old.with_tombstones(tombstones)
        else:
            windows[category] = Window.load(store, model_version, category, tombstones)
    return Library(model_version, windows, tombstones, md5)


# --- embedding a picture ----------------------------------------------------------------------------------


class ImageEmbedder:
    """The serving model, loaded once: a picture's unit vector and predicted category."""

    def __init__(self, model_version: str, registry: Path):
        from vecflow_model.registry import load_model

        self.model_version = model_version
        self.model = load_model(model_version, registry)

    def embed(self, data: bytes) -> tuple[np.ndarray, str | None]:
        """(unit vector, predicted category or None for a model without a category head);
        vecflow_model.imaging.DecodeError when `data` is not an image."""
        import torch

        from vecflow_model.imaging import analysis_planes, decode
        from vecflow_model.measure import measure
        from vecflow_model.preprocess import rgb_input

        model, preprocessing = self.model, self.model.preprocessing
        image = decode(data, preprocessing.decode_size)
        rgb = rgb_input(image, preprocessing)
        with torch.inference_mode():
            planes = torch.from_numpy(analysis_planes(image)[None])
            inputs = measure(planes, preprocessing, None if rgb is None else torch.from_numpy(rgb[None])).inputs
            vector, probabilities = model.network(inputs)
        category = model.categories[int(probabilities.argmax())] if probabilities is not None else None
        return vector[0].numpy().astype(np.float32), category


def search(
    settings,
    image: Path,
    k: int = 10,
    category: str | None = None,
    flt: SearchFilter = SearchFilter(),
) -> pd.DataFrame:
    """Top-k for a picture: in its predicted category (None), a given one, or every one ('all'), or
    in the filter's categories; attrs["predicted_category"] names the prediction."""
    from vecflow.index.store import index_store

    vector, predicted = ImageEmbedder(settings.model_version, settings.embed.model_registry).embed(
        Path(image).read_bytes()
    )
    library = load_library(index_store(settings), settings.model_version)
    chosen = category if category is not None or flt.values("category") else predicted
    results = library.search(vector, k, chosen, flt)
    results.attrs["predicted_category"] = predicted
    return results
