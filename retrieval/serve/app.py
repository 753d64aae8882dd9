"""The search service's HTTP API over a reference bundle: :func:`create_app`.

Endpoints (JSON errors are ``{"error": "<one line naming the fault>"}``):

* ``POST /search``: multipart ``image`` (and ``k``, form or query, default 10) -> the top ``k``
  reference ids with scores, best first;
* ``POST /references``: multipart ``image`` and ``id`` (repeated, paired in order, for several)
  -> adds them to the bundle on disk, then serves the re-opened bundle (201; 409: id known);
* ``DELETE /references/{id}``: removes one (404: unknown id);
* ``GET /references/{id}/thumbnail``: its JPEG; ``GET /health``; ``GET /``: the search page.

Bad input: an upload over the size limit 413 (:class:`retrieval.serve.limits.BodyLimit`), an
image that is not one, undecodable or a decompression bomb 400, a missing field 422.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from retrieval.bundle import FORMAT_VERSION, Bundle, add_references, decode_image, remove_references
from retrieval.io import InputError
from retrieval.serve.limits import BodyLimit

DEFAULT_K = 10
# searches run at once: a search's forwards already spread over every usable core (the ONNX pool,
# retrieval.bundle.onnx_model); a second one at once runs its serial steps (decoding, resizing,
# faiss, fusion) while the first's forwards hold the pool; more only queue, each with its buffers
CONCURRENT_SEARCHES = 2
PAGE = Path(__file__).with_name("page.html")


class Service:
    """The bundle being served. Readers take :attr:`current` once per request; a change is
    written to disk by the bundle package (atomically), re-opened, then swapped in whole, so a
    search sees the old or the new index, never a half-built one. Writers take turns (a lock);
    at most ``concurrent_searches`` searches run at once, the others wait their turn (a semaphore)."""

    def __init__(self, path: str | Path, concurrent_searches: int = CONCURRENT_SEARCHES) -> None:
        self.path = Path(path)
        self.current = Bundle.open(self.path)
        self._writing = threading.Lock()
        self._searching = threading.BoundedSemaphore(concurrent_searches)

    def search(self, image, k: int) -> list[tuple[str, float]]:
        """The top ``k`` of ``image`` in the current bundle (all of them if it holds fewer)."""
        bundle = self.current  # once: an add running now swaps in a new one, not this one
        n_refs = len(bundle.ids)
        with self._searching:
            return bundle.search([image], min(k, n_refs))[0] if n_refs else []

    def add(self, ids: list[str], images: list) -> None:
        with self._writing:
            known = set(self.current.ids)
            taken = [i for i in ids if i in known]
            if taken:
                raise HTTPException(409, f"reference id {taken[0]!r} already in the bundle")
            add_references(self.path, ids, images)
            self.current = Bundle.open(self.path)

    def remove(self, ref_id: str) -> None:
        with self._writing:
            if ref_id not in set(self.current.ids):
                raise HTTPException(404, f"no reference {ref_id!r} in the bundle")
            remove_references(self.path, [ref_id])
            self.current = Bundle.open(self.path)


def read_image(upload: UploadFile):
    """The uploaded ``upload`` decoded (an :class:`InputError` naming it and the fault)."""
    name = upload.filename or "image"
    data = upload.file.read()
    if not data:
        raise InputError(f"{name}: empty upload")
    return decode_image(data, name)


def create_app(bundle_path: str | Path, max_upload_bytes: int, concurrent_searches: int = CONCURRENT_SEARCHES) -> FastAPI:
    """The service over the bundle at ``bundle_path`` (opened now: a bad bundle is an
    :class:`InputError` naming it), refusing request bodies over ``max_upload_bytes``, running
    at most ``concurrent_searches`` searches at once."""
    service = Service(bundle_path, concurrent_searches)
    app = FastAPI(title="retrieval search", docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    _errors(app)

    @app.post("/search")
    def search(image: Annotated[UploadFile, File()], k: Annotated[int | None, Form()] = None,
               k_query: Annotated[int | None, Query(alias="k")] = None) -> dict:
        k = DEFAULT_K if k is None and k_query is None else (k if k is not None else k_query)
        if k < 1:
            raise HTTPException(400, f"k must be >= 1, got {k}")
        hits = service.search(read_image(image), k)
        return {"k": k, "results": [{"id": i, "score": round(float(s), 6)} for i, s in hits]}

    @app.post("/references", status_code=201)
    def add(image: Annotated[list[UploadFile], File()], id: Annotated[list[str], Form()]) -> dict:
        if len(image) != len(id):
            raise HTTPException(400, f"{len(image)} image(s) but {len(id)} id(s): give one id per image")
        if len(set(id)) != len(id) or not all(i.strip() for i in id):
            raise HTTPException(400, "ids must be non-empty and distinct")
        service.add(list(id), [read_image(u) for u in image])
        return {"added": list(id), "references": len(service.current.ids)}

    @app.delete("/references/{ref_id:path}")
    def remove(ref_id: str) -> dict:
        service.remove(ref_id)
        return {"removed": ref_id, "references": len(service.current.ids)}

    @app.get("/references/{ref_id:path}/thumbnail")
    def thumbnail(ref_id: str) -> Response:
        bundle = service.current
        jpeg = bundle.thumbnail(ref_id)
        if jpeg is None:
            raise HTTPException(404, f"no thumbnail for reference {ref_id!r}")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    def health() -> dict:
        # Bundle.open refuses any other version, so the bundle served is of this one
        return {"status": "ok", "references": len(service.current.ids), "format_version": FORMAT_VERSION}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    return app


def _errors(app: FastAPI) -> None:
    """Every error as ``{"error": one line}``: bad input 400, a missing or malformed field 422."""

    @app.exception_handler(InputError)
    async def bad_input(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_field(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"field {field!r}: {first.get('msg', 'invalid')}"}, status_code=422)
