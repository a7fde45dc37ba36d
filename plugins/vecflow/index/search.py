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
version's ids.parquet (vecflow.index.window.METADATA_COLUMNS), prepared as column arrays when the
version loads, so a search service needs the index store only and a request builds k small dicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

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
FILTER_CACHE = 32  # filters a window keeps prepared (Window.select)
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
    pairs: Iterable[str],
    listed_after: dt.date | None = None,
    listed_before: dt.date | None = None,
    taxonomy=None,
) -> SearchFilter:
    """`key=value` pairs (a key given twice matches either value): a tag dimension of `taxonomy` (the
    configured one when None, read from its file) (`color=red`, `category=dress`), `source`, or
    `attributes.<name>` (a catalog column)."""
    from vecflow.taxonomy import load_taxonomy

    taxonomy = taxonomy or load_taxonomy()
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
    id) and manifest, with the lookups filtered search and answers need, prepared at load: a request
    reads k rows of column arrays, never a DataFrame."""

    def __init__(self, index, meta: pd.DataFrame, manifest: dict, tombstones: frozenset[str] = frozenset()):
        self.index, self.manifest = index, manifest
        self.category, self.version = manifest["category"], manifest["version"]
        self.meta = meta.reset_index(drop=True)
        self.ids = self.meta["id"].to_numpy(dtype=np.int64)
        # faiss answers ids; their rows by binary search (pandas' hashed lookup cost ~50 us a call)
        self._id_order = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[self._id_order]
        self.image_ids = self.meta["image_id"].to_numpy(dtype=object)
        self.row_of_image = pd.Index(self.image_ids)
        self.has_metadata = "tags" in self.meta.columns
        # what an answer shows of a row, as column arrays (absent in versions built before metadata)
        self.columns = {
            column: self.meta[column].to_numpy(dtype=object) if column in self.meta.columns else None
            for column in ("listed_date", "source", "tags", "duplicates", "attributes")
        }
        self.ivf = _ivf(index)
        if self.ivf is not None:  # reconstruct by id: exact search over a small subset, search by image_id
            import faiss

            self.ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.nprobe = int(manifest.get("nprobe") or 1)
        self._postings: dict[str, dict[str, np.ndarray]] = {}
        self._attributes: pd.DataFrame | None = None
        self._listed_days: np.ndarray | None = None
        self._canonical_of: pd.Series | None = None
        self._tombstone(tombstones)

    def _tombstone(self, tombstones: frozenset[str]) -> None:
        self.tombstoned = self.meta["image_id"].isin(tombstones).to_numpy()
        self.any_tombstoned = bool(self.tombstoned.any())
        self._selections: OrderedDict[SearchFilter, Selection] = OrderedDict()  # they hold the tombstones
        self._lock = threading.Lock()

    @classmethod
    def load(cls, store, model_version: str, category: str, tombstones: frozenset[str] = frozenset()) -> Window:
        """The published version of a category, md5-checked (IndexIntegrityError when damaged)."""
        from vecflow.index.window import load_published

        index, ids, manifest = load_published(store, model_version, category)
        return cls(index, ids, manifest, tombstones)

    def with_tombstones(self, tombstones: frozenset[str]) -> Window:
        twin = object.__new__(Window)
        twin.__dict__.update(self.__dict__)
        twin._tombstone(tombstones)
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

    def _listed(self) -> np.ndarray:
        """Each row's listing date as datetime64[D] (built on first use)."""
        if self._listed_days is None:
            self._listed_days = pd.to_datetime(self.meta["listed_date"]).to_numpy().astype("datetime64[D]")
        return self._listed_days

    def mask(self, flt: SearchFilter) -> np.ndarray | None:
        """The rows a search may return (filter and tombstones), or None for all of them."""
        keep = ~self.tombstoned if self.any_tombstoned else None
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
        if flt.listed_after:
            keep &= self._listed() >= np.datetime64(flt.listed_after, "D")
        if flt.listed_before:
            keep &= self._listed() <= np.datetime64(flt.listed_before, "D")
        return keep

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The metadata rows of faiss ids (each id is in the window)."""
        return self._id_order[np.searchsorted(self._sorted_ids, ids)]

    def canonical_of(self, image_id: str) -> str | None:
        """The image a folded duplicate `image_id` was folded into, when this window holds it."""
        if self._canonical_of is None:
            duplicates = self.columns["duplicates"]
            folded = pd.Series(duplicates if duplicates is not None else [], dtype=object).explode().dropna()
            self._canonical_of = pd.Series(self.image_ids[folded.index.to_numpy()], index=folded.to_numpy())
        found = self._canonical_of.get(image_id)
        return None if found is None else str(found if np.ndim(found) == 0 else found.iloc[0])

    def vector_of(self, image_id: str) -> np.ndarray | None:
        row = self.row_of_image.get_indexer([image_id])[0]
        if row < 0:
            return None
        return self.index.reconstruct(int(self.ids[row])).astype(np.float32)

    def select(self, flt: SearchFilter) -> Selection | None:
        """What a search with `flt` may return (and the tombstones allow), prepared once and kept for
        the next FILTER_CACHE distinct filters (while the vectors they copy are fewer than the
        window's); None: every row."""
        if flt.empty and not self.any_tombstoned:
            return None
        with self._lock:
            if flt in self._selections:
                self._selections.move_to_end(flt)
                return self._selections[flt]
        selection = Selection(self, self.mask(flt))
        with self._lock:
            self._selections[flt] = selection
            # at most FILTER_CACHE filters, and no more copied vectors than the window has
            while len(self._selections) > FILTER_CACHE or (
                len(self._selections) > 1 and sum(s.held for s in self._selections.values()) > self.size
            ):
                self._selections.popitem(last=False)
        return selection

    def search(self, query: np.ndarray, k: int, keep=None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top-k among the rows `keep` allows (a mask or a Selection; all when
        None), best first."""
        return self.search_batch(np.asarray(query).reshape(1, -1), k, keep)[0]

    def search_batch(self, queries: np.ndarray, k: int, keep=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """search() for each row of `queries` (m, d), in as few faiss calls as the filter allows."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        selection = Selection(self, keep) if isinstance(keep, np.ndarray) else keep
        allowed = self.size if selection is None else selection.allowed
        want = min(k, allowed)
        empty = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
        if want == 0:
            return [empty] * len(queries)
        if selection is not None and selection.vectors is not None:  # a small subset: exactly
            scores = queries @ selection.vectors.T
            best = np.argsort(-scores, axis=1, kind="stable")[:, :want]
            return [(scores[i, b].astype(np.float32), selection.rows[b]) for i, b in enumerate(best)]
        nlist = self.ivf.nlist if self.ivf is not None else 1
        answers: list = [None] * len(queries)
        pending = np.arange(len(queries))
        if selection is not None and selection.selectivity >= POST_FILTER_SELECTIVITY:
            # a broad filter: an id selector over so many ids costs more than the search, so rank
            # k / selectivity (twice over) without one and keep the matches; too few: the selector
            fetch = min(self.size, math.ceil(2 * k / selection.selectivity))
            for i, (scores, found) in enumerate(self._search(queries, fetch, self.nprobe, None)):
                rows = self.rows_of(found)
                hit = selection.keep[rows]
                if hit.sum() >= want:
                    answers[i] = (scores[hit][:want], rows[hit][:want])
            pending = np.array([i for i in pending if answers[i] is None], dtype=np.int64)
        if not len(pending):
            return answers
        index, selector, nprobe = self.index, None, self.nprobe
        if selection is not None:
            nprobe = min(nlist, math.ceil(self.nprobe / selection.selectivity))
            index, selector = (
                (selection.index, None) if selection.index is not None else (self.index, selection.selector)
            )
        for i, (scores, found) in zip(pending, self._search(queries[pending], want, nprobe, selector, index)):
            answers[i] = (scores, self.rows_of(found))
        # IVF's lists held fewer matches than asked: every list
        short = np.array([i for i in pending if len(answers[i][1]) < want], dtype=np.int64)
        if len(short) and nprobe < nlist:
            for i, (scores, found) in zip(short, self._search(queries[short], want, nlist, selector, index)):
                answers[i] = (scores, self.rows_of(found))
        return answers

    def _search(self, queries, k: int, nprobe: int, selector, index=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(scores, ids) per query from `index` (the window's when None), without faiss's -1 padding."""
        import faiss

        if self.ivf is not None:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, found = (index or self.index).search(queries, k, params=params)
        return [(s[f != -1], f[f != -1]) for s, f in zip(scores, found)]

    def record(self, row: int, score: float) -> dict:
        """What an answer shows of a row (RESULT_COLUMNS less rank); attributes stay their JSON text."""
        columns = self.columns
        listed, source, tags, duplicates, attributes = (
            None if columns[c] is None else columns[c][row]
            for c in ("listed_date", "source", "tags", "duplicates", "attributes")
        )
        return {
            "image_id": self.image_ids[row],
            "score": score,
            "category": self.category,
            "listed_date": None if listed is None or listed != listed else str(listed)[:10],
            "source": source if isinstance(source, str) else None,
            "tags": _strings(tags),
            "duplicates": _strings(duplicates),
            "attributes": attributes if isinstance(attributes, str) else None,
            "index_version": self.version,
        }


def _strings(values) -> list[str]:
    """A list cell (an array from parquet, a list, or nothing) as a list of strings."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    return [str(v) for v in values] if isinstance(values, list | tuple) else []


class Selection:
    """The rows a search may return (a filter and the tombstones) and what searching among them
    needs, built once per filter (Window.select), read-only in a search (requests share it): the
    subset's vectors when it is small enough to search exactly; for a narrower subset than the
    post-filter's, an IVF-Flat index of the subset alone on the window's own quantizer (its lists
    hold only matches, so probing nprobe / selectivity lists scans what a plain search scans); and
    the faiss id selector of the matches, or IDSelectorNot of those that do not match when they are
    fewer (a broad filter's fallback, and the window's when it is not IVF-Flat)."""

    def __init__(self, window: Window, keep: np.ndarray):
        import faiss

        self.keep = keep
        self.allowed = int(keep.sum())
        self.selectivity = self.allowed / max(window.size, 1)
        self.rows = self.vectors = self.selector = self.index = None
        if self.allowed <= EXACT_SUBSET:
            self.rows = np.flatnonzero(keep)
            self.vectors = (
                window.index.reconstruct_batch(window.ids[self.rows])
                if self.allowed
                else np.zeros((0, window.index.d), dtype=np.float32)
            )
        elif self.selectivity < POST_FILTER_SELECTIVITY and isinstance(window.ivf, faiss.IndexIVFFlat):
            ivf, ids = window.ivf, window.ids[keep]
            self.index = faiss.IndexIVFFlat(ivf.quantizer, ivf.d, ivf.nlist, ivf.metric_type)
            self.index.add_with_ids(window.index.reconstruct_batch(ids), ids)
        else:
            few = 2 * self.allowed <= window.size
            # kept here: faiss holds a raw pointer to the batch inside IDSelectorNot
            self._batch = faiss.IDSelectorBatch(window.ids[keep] if few else window.ids[~keep])
            self.selector = self._batch if few else faiss.IDSelectorNot(self._batch)

    @property
    def held(self) -> int:
        """Vectors this selection copies (Window.select bounds them): its subset, when it keeps one."""
        return self.allowed if self.vectors is not None or self.index is not None else 0


def _ivf(index):
    import faiss

    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))  # its own class: IndexIVFFlat, ...
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

    @property
    def dim(self) -> int:
        return next(iter(self.windows.values())).index.d

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
    ) -> list[dict]:
        """The top-k over the categories (see categories_for) that match `flt`, without delisted
        images (nor `exclude`, the query's own image): a dict per result (RESULT_COLUMNS), best first."""
        return self.search_batch(np.asarray(vector).reshape(1, -1), k, category, flt, [exclude])[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int = 10,
        category: str | None = None,
        flt: SearchFilter = SearchFilter(),
        excludes: list[str | None] | None = None,
    ) -> list[list[dict]]:
        """search() for each row of `vectors` (m, d): one faiss search per window for them all."""
        if k < 1:
            raise SearchError(f"k must be at least 1, not {k}")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise SearchError(f"vectors of {vectors.shape[-1]} numbers; the served model's have {self.dim}")
        excludes = excludes or [None] * len(vectors)
        # one more than asked when a query excludes its own image, which may be among them
        fetch = k + any(e is not None for e in excludes)
        found: list[list[tuple[float, Window, int]]] = [[] for _ in vectors]
        for name in self.categories_for(category, flt):
            window = self.windows[name]
            for hits, (scores, rows) in zip(found, window.search_batch(vectors, fetch, window.select(flt))):
                hits.extend((score, window, row) for score, row in zip(scores.tolist(), rows.tolist()))
        answers = []
        for hits, exclude in zip(found, excludes):
            # an image listed again on a later day may sit in two categories' windows: once, at its best
            seen, records = {exclude}, []
            for score, window, row in sorted(hits, key=lambda hit: -hit[0]):
                image_id = window.image_ids[row]
                if image_id in seen:
                    continue
                seen.add(image_id)
                records.append({"rank": len(records) + 1, **window.record(row, score)})
                if len(records) == k:
                    break
            answers.append(records)
        return answers

    def resolve(self, image_id: str) -> tuple[np.ndarray, str, str]:
        """A catalog image's vector, category and the image searched as: itself when served, its
        canonical image when it was folded as a duplicate (SearchError when neither is served)."""
        for name, window in sorted(self.windows.items()):
            vector = window.vector_of(image_id)
            if vector is not None:
                return vector, name, image_id
        for window in self.windows.values():
            canonical = window.canonical_of(image_id)
            if canonical is not None:
                vector, name, _ = self.resolve(canonical)
                return vector, name, canonical
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
    results = pd.DataFrame(library.search(vector, k, chosen, flt), columns=RESULT_COLUMNS)
    results.attrs["predicted_category"] = predicted
    return results
