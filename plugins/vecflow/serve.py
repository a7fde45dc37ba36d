"""The search service (`python -m vecflow.cli serve`): the published window indexes over HTTP.

- `POST /search`: an image in the body (any image type) or JSON `{"vector": [...]}` or
  `{"vector_b64": ...}` (little-endian float32); `GET /search?image_id=...`: more like a catalog
  image (a folded duplicate searches as its canonical image: `searched_as`); `POST /search/batch`:
  up to MAX_BATCH queries at once, `{"vectors": [[...], ...]}`, `{"vectors_b64": [...]}` or
  `{"image_ids": [...]}`, one faiss search per window for them all. Each takes `k`, `category`
  (default: the image's predicted one; `all`), `filter=key=value` (repeatable), `listed_after`,
  `listed_before`. Results carry tags, folded duplicates, source, listing date and attributes.
- A search alone runs on the event loop, one that arrives beside it in a worker thread (faiss and
  the model release the GIL, so they overlap); results are read from column arrays prepared when a
  version loads and written by orjson.
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

import asyncio
import datetime as dt
import logging
import threading
from urllib.parse import parse_qs

import numpy as np
import orjson

from vecflow.index.search import ImageEmbedder, Library, SearchError, load_library, parse_filters

log = logging.getLogger(__name__)
MAX_BATCH = 256  # queries one POST /search/batch takes at most
SEARCH_THREADS = 8  # requests searched at once


class SearchService:
    """The served Library and its refresh (one swap of a reference: requests never lock)."""

    def __init__(self, settings, poll_seconds: float = 30.0):
        from vecflow.index.store import index_store

        self.settings, self.poll_seconds = settings, poll_seconds
        self.store = index_store(settings)
        self.library: Library | None = None
        self.taxonomy = None
        self.last_error: str | None = None
        self.refreshed_at: str | None = None
        self._embedders: dict[str, ImageEmbedder] = {}
        self._stop = threading.Event()
        self.refresh()

    def refresh(self) -> bool:
        """Loads what changed and swaps it in; False (the old library stays) when that failed."""
        from vecflow.index.pointers import SERVING
        from vecflow.taxonomy import load_taxonomy

        try:
            switched = self.store.read_pointer(SERVING)  # a reindex's switch is followed without a restart
            model_version = switched.payload["model_version"] if switched else self.settings.model_version
            library = load_library(self.store, model_version, previous=self.library)
            self.taxonomy = load_taxonomy()  # what filters name, read once a refresh and not per request
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
    """The service's ASGI app: /search and /search/batch answered by SearchRoutes, the rest
    (/healthz, the OpenAPI docs) by FastAPI."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI(title="vecflow search", summary=__doc__.splitlines()[0])

    @app.get("/healthz")
    def healthz():
        lib = service.library
        payload = {
            "status": "ok" if service.last_error is None and lib is not None and lib.windows else "degraded",
            "model_version": lib.model_version if lib else None,
            "versions": service.versions(),
            "tombstones": len(lib.tombstones) if lib else 0,
            "refreshed_at": service.refreshed_at,
            "last_error": service.last_error,
        }
        return Response(orjson.dumps(payload), media_type="application/json")

    return SearchRoutes(service, app)


class SearchRoutes:
    """ASGI in front of the FastAPI app: the search routes are answered here from the raw request
    (FastAPI's per-request machinery, validation, dependencies and anyio's thread hop, cost ~1 ms,
    more than a search): a request that arrives while another search runs goes to a worker thread
    (faiss and the model release the GIL, so they overlap), one alone runs on the event loop.
    Expected errors are 4xx JSON `{"error": ...}`; anything else is a logged 500."""

    def __init__(self, service: SearchService, app):
        from concurrent.futures import ThreadPoolExecutor

        self.service, self.app = service, app
        self.workers = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="vecflow-search")
        self.in_flight = 0  # searches running (touched on the event loop only)
        self.routes = {
            ("GET", "/search"): self.by_image_id,
            ("POST", "/search"): self.by_image,
            ("POST", "/search/batch"): self.batch,
        }

    async def __call__(self, scope, receive, send):
        route = self.routes.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        self.in_flight += 1
        try:
            if self.in_flight > 1:  # another search is running: this one in a worker thread beside it
                loop = asyncio.get_running_loop()
                status, payload = await loop.run_in_executor(
                    self.workers, self.answer, route, query, content_type, body
                )
            else:  # alone: on the event loop (a thread hop cost ~0.5 ms on a 2-core VM, more than a search)
                status, payload = self.answer(route, query, content_type, body)
        finally:
            self.in_flight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def answer(self, route, query, content_type: str, body: bytes) -> tuple[int, bytes]:
        from vecflow_model.imaging import DecodeError

        try:
            lib = self.service.library  # one Library for the whole request
            if lib is None or not lib.windows:
                raise SearchError("nothing published yet")
            return 200, orjson.dumps(route(lib, query, content_type, body))
        except SearchError as exc:
            status = 404 if "not in any published index" in str(exc) or "no published index" in str(exc) else 400
            return status, orjson.dumps({"error": str(exc)})
        except DecodeError as exc:
            return 415, orjson.dumps({"error": f"the body is not an image: {exc}"})
        except Exception as exc:
            log.exception("search failed")
            return 500, orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})

    def search(self, lib: Library, query, vectors, excludes=None, predicted=None) -> tuple[dict, list]:
        """The results of each of `vectors` (m, d) under the request's options: one faiss search per
        window for them all."""

        def one(name, default=None):
            return query[name][-1] if name in query else default

        try:
            k = int(one("k", 10))
        except ValueError:
            raise SearchError(f"k must be a whole number, not {one('k')!r}") from None
        flt = parse_filters(
            query.get("filter", []),
            _date(one("listed_after")),
            _date(one("listed_before")),
            self.service.taxonomy,
        )
        category = one("category")
        chosen = category if category is not None or flt.values("category") else predicted
        found = lib.search_batch(vectors, k, chosen, flt, excludes)
        head = {"model_version": lib.model_version, "predicted_category": predicted, "filters": flt.describe()}
        return head, [[_json_ready(r) for r in results] for results in found]

    def by_image_id(self, lib: Library, query, content_type: str, body: bytes) -> dict:
        image_id = (query.get("image_id") or [""])[-1]
        if not image_id:
            raise SearchError("GET /search needs image_id=...; POST /search takes an image or a vector")
        vector, own_category, searched_as = lib.resolve(image_id)  # a folded duplicate: its canonical
        head, [results] = self.search(lib, query, vector[None], [searched_as], own_category)
        return {**head, "searched_as": searched_as, "results": results}

    def by_image(self, lib: Library, query, content_type: str, body: bytes) -> dict:
        predicted = None
        if content_type.startswith("application/json"):
            vectors = _json_vectors(_json_body(body), batch=False)
        else:
            from vecflow_model.imaging import decode

            decode(body)  # not an image: 415 before the model is loaded
            vector, predicted = self.service.embedder(lib.model_version).embed(body)
            vectors = vector[None]
        head, [results] = self.search(lib, query, vectors, None, predicted)
        return {**head, "results": results}

    def batch(self, lib: Library, query, content_type: str, body: bytes) -> dict:
        parsed = _json_body(body)
        image_ids = parsed.get("image_ids") if isinstance(parsed, dict) else None
        searched_as = None
        if image_ids is not None:
            if not isinstance(image_ids, list) or not 0 < len(image_ids) <= MAX_BATCH:
                raise SearchError(f'"image_ids" is a list of 1 to {MAX_BATCH} catalog image ids')
            resolved = [lib.resolve(str(i)) for i in image_ids]
            vectors = np.stack([vector for vector, _, _ in resolved])
            searched_as = [image_id for _, _, image_id in resolved]
        else:
            vectors = _json_vectors(parsed, batch=True)
        head, results = self.search(lib, query, vectors, searched_as)
        return {**head, "searched_as": searched_as, "results": results}


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


def _json_body(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SearchError(VECTOR_BODY) from None


def _json_vectors(parsed, batch: bool) -> np.ndarray:
    """The query vectors of a parsed JSON body as an (m, d) float32 matrix (m = 1 unless `batch`),
    from numbers or base64 float32 (4 bytes a number instead of ~20)."""
    import base64
    import binascii

    def unpacked(encoded) -> np.ndarray:
        return np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f4")

    try:
        numbers = parsed.get("vectors" if batch else "vector")
        if numbers is None:
            encoded = parsed["vectors_b64"] if batch else [parsed["vector_b64"]]
            vectors = [unpacked(e) for e in encoded]
        else:
            vectors = [np.asarray(v, dtype=np.float32) for v in (numbers if batch else [numbers])]
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error):
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


def serve(settings, host: str, port: int, poll_seconds: float, access_log: bool = False) -> None:
    """Runs the service until interrupted; a line per request only with `access_log` (writing it
    cost a fifth of a request)."""
    import uvicorn

    service = SearchService(settings, poll_seconds)
    service.start_polling()
    log.info("serving %s on http://%s:%d (refresh every %g s)", service.versions(), host, port, poll_seconds)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="info", access_log=access_log)
    finally:
        service.stop()
