"""The search service (`python -m vecflow.cli serve`): the published window indexes over HTTP.

- `POST /search`: an image in the body (any image type) or JSON `{"vector": [...]}`; `GET
  /search?image_id=...`: more like a catalog image. Both take `k`, `category` (default: the
  image's predicted one; `all`), `filter=key=value` (repeatable), `listed_after`, `listed_before`.
  Results carry tags, folded duplicates, source, listing date and attributes.
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
from fastapi import Query, Request  # at module level: the route signatures' annotations name them

from vecflow.index.search import ImageEmbedder, Library, SearchError, load_library, parse_filters

log = logging.getLogger(__name__)
FILTERS = Query(default=[], description="key=value: a tag (color=red), source=..., attributes.<name>=...")


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
    from fastapi.responses import JSONResponse

    from vecflow_model.imaging import DecodeError

    app = FastAPI(title="vecflow search", summary=__doc__.splitlines()[0])

    @app.exception_handler(SearchError)
    async def bad_request(_, exc: SearchError):
        status = 404 if "not in any published index" in str(exc) or "no published index" in str(exc) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(DecodeError)
    async def not_an_image(_, exc: DecodeError):
        return JSONResponse({"error": f"the body is not an image: {exc}"}, status_code=415)

    def library() -> Library:
        current = service.library  # one Library for the whole request
        if current is None or not current.windows:
            raise SearchError("nothing published yet")
        return current

    def answer(lib: Library, vector, k, category, filters, listed_after, listed_before, exclude=None, predicted=None):
        flt = parse_filters(filters, _date(listed_after), _date(listed_before))
        dim = next(iter(lib.windows.values())).index.d
        if len(vector) != dim:
            raise SearchError(f"the vector has {len(vector)} numbers; the served model's have {dim}")
        chosen = category if category is not None or flt.values("category") else predicted
        results = lib.search(np.asarray(vector, dtype=np.float32), k, chosen, flt, exclude=exclude)
        return {
            "model_version": lib.model_version,
            "predicted_category": predicted,
            "filters": flt.describe(),
            "results": _records(results),
        }

    @app.get("/healthz")
    def healthz():
        lib = service.library
        return {
            "status": "ok" if service.last_error is None and lib is not None and lib.windows else "degraded",
            "model_version": lib.model_version if lib else None,
            "versions": service.versions(),
            "tombstones": len(lib.tombstones) if lib else 0,
            "refreshed_at": service.refreshed_at,
            "last_error": service.last_error,
        }

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
        vector, own_category = lib.vector_of(image_id)
        return answer(lib, vector, k, category, filter, listed_after, listed_before, image_id, own_category)

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
        predicted = None
        if request.headers.get("content-type", "").startswith("application/json"):
            vector = _json_vector(body)
        else:
            from vecflow_model.imaging import decode

            decode(body)  # not an image: 415 before the model is loaded
            vector, predicted = service.embedder(lib.model_version).embed(body)
        return answer(lib, vector, k, category, filter, listed_after, listed_before, predicted=predicted)

    app.state.service = service
    return app


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SearchError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _json_vector(body: bytes) -> list[float]:
    import json

    try:
        vector = json.loads(body)["vector"]
        return [float(v) for v in vector]
    except (ValueError, KeyError, TypeError):
        raise SearchError('a JSON body is {"vector": [numbers]}') from None


def _records(results) -> list[dict]:
    import json

    out = []
    for row in results.to_dict("records"):
        row["listed_date"] = str(row["listed_date"]) if row["listed_date"] is not None else None
        row["tags"] = list(row["tags"] if row["tags"] is not None else [])
        row["duplicates"] = list(row["duplicates"] if row["duplicates"] is not None else [])
        row["score"] = float(row["score"])
        row["rank"] = int(row["rank"])
        row["attributes"] = json.loads(row["attributes"]) if isinstance(row["attributes"], str) else None
        out.append(row)
    return out


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
