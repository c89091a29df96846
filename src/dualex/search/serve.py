"""``dualex serve IDX``: the search page as a local web app (Starlette + uvicorn).

Routes:
    ``GET /``                 the search page (search box, image upload, the hits and their maps)
    ``POST /api/search``      ``?q=TEXT&k=N[&target=image|text][&weights=W1,W2]``; the body, if
                              any, is the query image's bytes. Answers the page's data as JSON.
    ``GET /api/health``       ``{"ok": true, "items": N}``

A bad request (empty query, an upload that is not an image or larger than ``max_upload``
bytes, a bad ``k``) gets a 4xx with ``{"error": message}``; an unexpected failure gets a 500 with
its message; the server keeps serving either way. Searches run one at a time in a worker thread
(torch is not shared between concurrent requests).
"""

from __future__ import annotations

import io
import threading
from typing import Any

from dualex.errors import DualexError, InvalidInputError, SettingError
from dualex.search.index import Index

__all__ = ["MAX_UPLOAD", "make_app", "serve"]

MAX_UPLOAD = 10 * 1024 * 1024
"""Largest query image upload, in bytes."""

MAX_K = 100
"""Most hits one request may ask for."""


def _read_upload(body: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    from dualex.towers.inputs import load_image

    try:
        im = Image.open(io.BytesIO(body))
        im.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise InvalidInputError(
            f"the uploaded file is not an image the server can read ({type(err).__name__}); "
            "upload a PNG, JPEG or WebP file"
        ) from err
    return load_image(im)


def _parse_k(text: str | None) -> int:
    try:
        k = int(text) if text not in (None, "") else 10
    except ValueError as err:
        raise SettingError(f"k must be a whole number, got {text!r}") from err
    if not 1 <= k <= MAX_K:
        raise SettingError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


def _parse_weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as err:
        raise SettingError(f"cannot read weights {text!r}; pass numbers like 1,0.5") from err


def make_app(index: Index, *, max_upload: int = MAX_UPLOAD, title: str | None = None) -> Any:
    """The Starlette app serving ``index``.

    Args:
        index: The loaded index.
        max_upload: Largest query image upload in bytes (a larger one gets 413).
        title: The page title.

    Returns:
        An ASGI application.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    from dualex.search.page import page_data, page_html

    lock = threading.Lock()
    name = title or f"dualex search: {index.root.name} ({len(index)} items, {index.meta['model']})"
    html_page = page_html(None, live=True, title=name)

    def run(query: str, image: Any, k: int, weights: Any, target: str | None) -> dict[str, Any]:
        with lock:
            hits = index.search(query, k, image=image, weights=weights, target=target)
            return page_data(
                hits, query, image, model=index.meta["model"], weights=index.meta["weights"]
            )

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(html_page)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "items": len(index)})

    async def search(request: Request) -> JSONResponse:
        try:
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_upload:
                return _too_large(int(declared), max_upload)
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_upload:
                    return _too_large(len(body), max_upload)
            q = request.query_params.get("q", "")
            k = _parse_k(request.query_params.get("k"))
            weights = _parse_weights(request.query_params.get("weights"))
            target = request.query_params.get("target") or None
            image = _read_upload(body) if body else None
            if not q.strip() and image is None:
                raise InvalidInputError("the query is empty; type a query or upload an image")
            data = await run_in_threadpool(run, q, image, k, weights, target)
            return JSONResponse(data)
        except DualexError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        except Exception as err:  # keep serving; say what broke
            return JSONResponse(
                {"error": f"the search failed ({type(err).__name__}: {err})"}, status_code=500
            )

    return Starlette(
        routes=[
            Route("/", home),
            Route("/api/health", health),
            Route("/api/search", search, methods=["POST"]),
        ]
    )


def _too_large(size: int, limit: int) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": f"the upload is too large ({size} bytes > {limit}); upload a smaller image"},
        status_code=413,
    )


def serve(index: Index, *, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Serve ``index`` until interrupted (uvicorn; binds to 127.0.0.1 unless told otherwise)."""
    import uvicorn

    uvicorn.run(make_app(index, **kwargs), host=host, port=port, log_level="warning")
