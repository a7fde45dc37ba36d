"""The search service (`python -m vecflow.cli serve`): the published window indexes over HTTP.

- `POST /search`: an image in the body (any image type) or JSON `{"vector": [...]}` or
  `{"vector_b64": ...}` (little-endian float32); `GET /search?image_id=...`: more like a catalog
  image (a folded duplicate searches as its canonical image: `searched_as`); `POST /search/batch`:
  up to MAX_BATCH queries at once, `{"vectors": [[...], ...]}`, `{"vectors_b64": [...]}` or
  `{"image_ids": [...]}`, one faiss search per window for them all. Each takes `k`, `category`
  (default: the image's predicted one; `all`), `filter=key=value` (repeatable), `listed_after`,
  `listed_before`. Results carry tags, folded duplicates, source, listing date and attributes.
- Requests run in worker threads (faiss and the model release the GIL, so they overlap); results
  are read from column arrays prepared when a version loads and written by orjson.
- `GET /healthz`: the model and versions served, the tombstone count, the last refresh error.
- It checks the CURRENT pointers, SERVING and the tombstone set every `poll_seconds`, loads a new
  version whole and md5-verified (vecflow.index.search.load_library) and only then swaps it in: a
  request holds one Library from start to end, so it never sees half a version; a version that
  fails to load leaves the old one serving (and /healthz says why).
- It reads the index store only (local or gs://), never the warehouse.
- Expected errors are 4xx with `{"error": ...}`: a malformed filter, not an image, an unknown image
  or category (404), nothing published (503).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import numpy as np
import orjson
from fastapi import Query, Request  # at module level: the route signatures' annotations name them

from vecflow.index.search import ImageEmbedder, Library, SearchError, load_library, parse_filters

log = logging.getLogger(__name__)
FILTERS = Query(default=[], description="key=value: a tag (color=red), source=..., attributes.<name>=...")
MAX_BATCH = 256  # queries one POST /search/batch takes at most


class SearchService:
    """The served Library and its refresh (one swap of a reference: requests never lock)."""

    def __init__(self, settings, poll_seconds: float = 30.0):
        from vecflow.index.store import index_store

        self.settings, self.poll_seconds = settings, poll_seconds
        self.store = index_store(settings)
        self.library: Library | None = None
        self.last_error: str | None = None
        self.refreshed_at: str | None = None
        self._embedders: dict[str, ImageEmbedder] = {}
        self._stop = threading.Event()
        self.refresh()

    def refresh(self) -> bool:
        """Loads what changed and swaps it in; False (the old library stays) when that failed."""
        from vecflow.index.pointers import SERVING

        try:
            switched = self.store.read_pointer(SERVING)  # a reindex's switch is followed without a restart
            model_version = switched.payload["model_version"] if switched else self.settings.model_version
            library = load_library(self.store, model_version, previous=self.library)
        except Exception as exc:  # a damaged or half-written version, an unreachable store: keep the old one
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("index refresh failed, still serving %s: %s", self.versions(), self.last_error)
            return False
        if self.library is not None and library.versions() != self.library.versions():
            log.info("now serving %s (was %s)", library.versions(), self.library.versions())
        self.library = library  # the swap: a request that started before keeps the Library it took
        self.last_error = None
        self.refreshed_at = dt.datetime.now(dt.UTC).isoformat()
        return True

    def versions(self) -> dict[str, str]:
        return self.library.versions() if self.library else {}

    def start_polling(self) -> threading.Thread:
        def poll():
            while not self._stop.wait(self.poll_seconds):
                self.refresh()

        thread = threading.Thread(target=poll, name="vecflow-index-poll", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def embedder(self, model_version: str) -> ImageEmbedder:
        if model_version not in self._embedders:
            self._embedders[model_version] = ImageEmbedder(model_version, self.settings.embed.model_registry)
        return self._embedders[model_version]


def create_app(service: SearchService):
    from fastapi import FastAPI
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    from vecflow_model.imaging import DecodeError

    app = FastAPI(title="vecflow search", summary=__doc__.splitlines()[0])

    def respond(payload: dict, status_code: int = 200) -> Response:
        return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")

    @app.exception_handler(SearchError)
    async def bad_request(_, exc: SearchError):
        status = 404 if "not in any published index" in str(exc) or "no published index" in str(exc) else 400
        return respond({"error": str(exc)}, status)

    @app.exception_handler(DecodeError)
    async def not_an_image(_, exc: DecodeError):
        return respond({"error": f"the body is not an image: {exc}"}, 415)

    def library() -> Library:
        current = service.library  # one Library for the whole request
        if current is None or not current.windows:
            raise SearchError("nothing published yet")
        return current

    def answer(lib: Library, vectors, k, category, filters, listed_after, listed_before, excludes=None, predicted=None):
        """The results of each of `vectors` (m, d): one faiss search per window for them all."""
        flt = parse_filters(filters, _date(listed_after), _date(listed_before))
        chosen = category if category is not None or flt.values("category") else predicted
        found = lib.search_batch(vectors, k, chosen, flt, excludes)
        head = {"model_version": lib.model_version, "predicted_category": predicted, "filters": flt.describe()}
        return head, [[_json_ready(r) for r in results] for results in found]

    @app.get("/healthz")
    def healthz():
        lib = service.library
        return respond(
            {
                "status": "ok" if service.last_error is None and lib is not None and lib.windows else "degraded",
                "model_version": lib.model_version if lib else None,
                "versions": service.versions(),
                "tombstones": len(lib.tombstones) if lib else 0,
                "refreshed_at": service.refreshed_at,
                "last_error": service.last_error,
            }
        )

    @app.get("/search")
    def search_by_image_id(
        image_id: str,
        k: int = 10,
        category: str | None = None,
        filter: list[str] = FILTERS,
        listed_after: str | None = None,
        listed_before: str | None = None,
    ):
        lib = library()
        vector, own_category, searched_as = lib.resolve(image_id)  # a folded duplicate: its canonical
        head, [results] = answer(
            lib, vector[None], k, category, filter, listed_after, listed_before, [searched_as], own_category
        )
        return respond({**head, "searched_as": searched_as, "results": results})

    @app.post("/search")
    async def search_by_image(
        request: Request,
        k: int = 10,
        category: str | None = None,
        filter: list[str] = FILTERS,
        listed_after: str | None = None,
        listed_before: str | None = None,
    ):
        lib = library()
        body = await request.body()

        def run():  # in a worker thread: faiss and the model release the GIL, requests overlap
            predicted = None
            if request.headers.get("content-type", "").startswith("application/json"):
                vectors = _json_vectors(body, batch=False)
            else:
                from vecflow_model.imaging import decode

                decode(body)  # not an image: 415 before the model is loaded
                vector, predicted = service.embedder(lib.model_version).embed(body)
                vectors = vector[None]
            head, [results] = answer(lib, vectors, k, category, filter, listed_after, listed_before, None, predicted)
            return respond({**head, "results": results})

        return await run_in_threadpool(run)

    @app.post("/search/batch")
    async def search_batch(
        request: Request,
        k: int = 10,
        category: str | None = None,
        filter: list[str] = FILTERS,
        listed_after: str | None = None,
        listed_before: str | None = None,
    ):
        lib = library()
        body = await request.body()

        def run():
            try:
                image_ids = orjson.loads(body).get("image_ids")
            except (orjson.JSONDecodeError, AttributeError):
                image_ids = None
            searched_as = None
            if image_ids is not None:
                if not isinstance(image_ids, list) or not 0 < len(image_ids) <= MAX_BATCH:
                    raise SearchError(f'"image_ids" is a list of 1 to {MAX_BATCH} catalog image ids')
                resolved = [lib.resolve(str(i)) for i in image_ids]
                vectors = np.stack([vector for vector, _, _ in resolved])
                searched_as = [image_id for _, _, image_id in resolved]
            else:
                vectors = _json_vectors(body, batch=True)
            head, results = answer(lib, vectors, k, category, filter, listed_after, listed_before, searched_as)
            return respond({**head, "searched_as": searched_as, "results": results})

        return await run_in_threadpool(run)

    app.state.service = service
    return app


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SearchError(f"{value!r} is not a date (YYYY-MM-DD)") from None


VECTOR_BODY = (
    'a JSON body is {"vector": [numbers]} or {"vector_b64": base64 of little-endian float32}; for '
    '/search/batch {"vectors": [[numbers], ...]}, {"vectors_b64": [base64, ...]} or {"image_ids": [...]}'
)


def _json_vectors(body: bytes, batch: bool) -> np.ndarray:
    """The query vectors of a JSON body as an (m, d) float32 matrix (m = 1 unless `batch`), from
    numbers or base64 float32 (4 bytes a number instead of ~20)."""
    import base64
    import binascii

    def unpacked(encoded) -> np.ndarray:
        return np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f4")

    try:
        parsed = orjson.loads(body)
        if batch:
            numbers = parsed.get("vectors")
            vectors = [np.asarray(v, dtype=np.float32) for v in numbers] if numbers is not None else None
            vectors = vectors if vectors is not None else [unpacked(e) for e in parsed["vectors_b64"]]
        else:
            numbers = parsed.get("vector")
            vectors = [np.asarray(numbers, dtype=np.float32) if numbers is not None else unpacked(parsed["vector_b64"])]
    except (AttributeError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        raise SearchError(VECTOR_BODY) from None
    if not 0 < len(vectors) <= MAX_BATCH or any(v.ndim != 1 for v in vectors):
        raise SearchError(f"{VECTOR_BODY} (1 to {MAX_BATCH} vectors)")
    if len({len(v) for v in vectors}) != 1:
        raise SearchError(f"vectors of lengths {sorted({len(v) for v in vectors})} in one batch")
    matrix = np.stack(vectors)
    if not np.isfinite(matrix).all():
        raise SearchError("a vector holds a NaN or an infinity")
    return matrix


def _json_ready(record: dict) -> dict:
    """A result for orjson: its attributes' JSON text goes into the response as it is."""
    attributes = record["attributes"]
    return {**record, "attributes": orjson.Fragment(attributes) if attributes else None}


def serve(settings, host: str, port: int, poll_seconds: float) -> None:
    """Runs the service until interrupted."""
    import uvicorn

    service = SearchService(settings, poll_seconds)
    service.start_polling()
    log.info("serving %s on http://%s:%d (refresh every %g s)", service.versions(), host, port, poll_seconds)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="info")
    finally:
        service.stop()
