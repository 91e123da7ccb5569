"""HTTP routes for shares (thin): pages, deletion, and `POST /api/shares` over the shares service
(app/services/shares.py), which the Gradio `/share` endpoint calls too.

Routes (mount them before Gradio is mounted at "/", or Gradio's catch-all shadows them):
  GET  /s/{id}                      share page, or a friendly 404 page
  GET  /s/{id}/delete?token=...     confirmation page (403 page for a wrong token)
  POST /s/{id}/delete               form field `token`; 200 deleted, 403 wrong token, 404 unknown
  POST /api/shares                  JSON {mode, prompt, output, parameters?, model?, fim?, spans?}
                                    -> 201 {id, url, delete_url, created} (200 and delete_url null
                                    when identical content was already shared)
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.links import PublicLinks
from app.ratelimit import client_address
from app.services.shares import create_share
from app.shares import page as share_page
from app.shares.store import MAX_JSON_DEPTH, Store
from app.web.openai_shapes import error as error_response
from model.errors import PlaygroundError

log = logging.getLogger(__name__)

API_FIELDS = ("mode", "prompt", "output", "parameters", "model", "fim", "spans")


def mount_share_routes(
    app: FastAPI,
    store: Store,
    *,
    links: PublicLinks | None = None,
    client_ip_header: str | None = None,
    max_body_bytes: int | None = None,
    page_cache_chars: int = 32 * 2**20,
) -> None:
    """Add the share routes to `app`.

    `links` builds absolute links (PUBLIC_URL, or an allowed request host). `client_ip_header`
    (e.g. "x-forwarded-for") names the header that holds the client address behind a trusted
    proxy; by default the socket peer is the client.
    """
    links = links or PublicLinks()
    max_body = max_body_bytes or store.limits.max_body_bytes

    # Shares never change, so rendered pages can be reused (a link posted in a chat is fetched by
    # many unfurl bots at once). The row is still read first, so a deleted share is a 404 at once.
    pages = _LRU(page_cache_chars)

    def base_path(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def base_url(request: Request) -> str:
        host = request.headers.get("host")
        return links.base(host, request.url.scheme, base_path(request))

    def client_id(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers, client_ip_header)

    def html(body: str, status: int = 200, *, cache: str = "no-store") -> HTMLResponse:
        headers = {**share_page.SECURITY_HEADERS, "Cache-Control": cache}
        return HTMLResponse(body, status_code=status, headers=headers)

    def unavailable_is_503(page):
        """The database down or restarting: a page saying to try again, not a 500."""

        @functools.wraps(page)
        async def answer(share_id: str, request: Request, *args, **kwargs) -> Response:
            try:
                return await page(share_id, request, *args, **kwargs)
            except PlaygroundError as exc:
                if exc.kind != "busy":
                    raise
                body = share_page.render_unavailable(exc.message, base_path=base_path(request))
                response = html(body, 503)
                response.headers["Retry-After"] = "30"
                return response

        return answer

    @unavailable_is_503
    async def show(share_id: str, request: Request) -> Response:
        share = await run_in_threadpool(store.get, share_id)
        bp = base_path(request)
        if share is None:
            return html(share_page.render_not_found(share_id, base_path=bp), 404)
        url = f"{base_url(request)}/s/{share.id}"
        key = (share.id, bp, url)
        page = pages.get(key)
        if page is None:
            page = await run_in_threadpool(
                share_page.render_share, share, base_path=bp, public_url=url
            )
            pages.put(key, page)
        # Short cache: a deleted share should disappear soon from shared caches too.
        return html(page, cache="public, max-age=60")

    @unavailable_is_503
    async def confirm_delete(share_id: str, request: Request, token: str = "") -> Response:
        bp = base_path(request)
        share = await run_in_threadpool(store.get, share_id)
        if share is None:
            return html(share_page.render_not_found(share_id, base_path=bp), 404)
        if not await run_in_threadpool(store.token_matches, share_id, token):
            return html(share_page.render_delete_refused(share_id, base_path=bp), 403)
        return html(share_page.render_delete_confirm(share, token, base_path=bp))

    @unavailable_is_503
    async def do_delete(share_id: str, request: Request) -> Response:
        bp = base_path(request)
        form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        try:
            await run_in_threadpool(store.delete, share_id, token)
        except PlaygroundError as exc:
            if exc.kind == "not_found":
                return html(share_page.render_not_found(share_id, base_path=bp), 404)
            if exc.kind == "forbidden":
                return html(share_page.render_delete_refused(share_id, base_path=bp), 403)
            raise
        return html(share_page.render_deleted(share_id, base_path=bp))

    async def api_create(request: Request) -> Response:
        try:
            _require_json(request)
            payload = await _read_json(request, max_body)
            link = await run_in_threadpool(
                lambda: create_share(store, **payload, client_id=client_id(request))
            )
        except PlaygroundError as exc:
            return _error_json(exc)
        root = base_url(request)
        body = {
            "id": link.id,
            "url": root + link.path,
            "delete_url": root + link.delete_path if link.delete_path else None,
            "created": link.created,
        }
        return JSONResponse(body, status_code=201 if link.created else 200)

    app.add_api_route("/s/{share_id}", show, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route(
        "/s/{share_id}/delete", confirm_delete, methods=["GET"], include_in_schema=False
    )
    app.add_api_route("/s/{share_id}/delete", do_delete, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/shares", api_create, methods=["POST"])


def _require_json(request: Request) -> None:
    """A JSON body only: a cross-site form or text/plain POST needs no CORS preflight."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise PlaygroundError(
            f"`Content-Type` must be application/json. Given: {kind[:60] or 'none'!r}.",
            field="content-type",
            kind="unsupported_media_type",
        )


async def _read_json(request: Request, max_body: int) -> dict[str, Any]:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise PlaygroundError(
                f"Request body must be at most {max_body:,} bytes. Given: more than that.",
                field="body",
                kind="too_large",
            )
        chunks.append(chunk)
    try:
        payload = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlaygroundError(f"Request body is not valid JSON: {exc}.", field="body") from None
    except RecursionError:
        raise PlaygroundError(
            f"Request body nests too deeply; the limit is {MAX_JSON_DEPTH} levels.", field="body"
        ) from None
    if not isinstance(payload, dict):
        raise PlaygroundError(
            f"Request body must be a JSON object. Given: {type(payload).__name__}.", field="body"
        )
    unknown = sorted(set(payload) - set(API_FIELDS))
    if unknown:
        raise PlaygroundError(
            f"Unknown field(s): {', '.join(unknown)[:200]}. Allowed: {', '.join(API_FIELDS)}.",
            field=unknown[0][:50],
        )
    for required in ("mode", "prompt", "output"):
        if required not in payload:
            raise PlaygroundError(f"`{required}` is required.", field=required)
    return payload


class _LRU:
    """Least recently used pages, bounded by their total length in characters."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self._items: OrderedDict[tuple, str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> str | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple, value: str) -> None:
        if len(value) > self.max_chars // 4:
            return  # one huge page must not flush everything else
        with self._lock:
            if key in self._items:
                self._chars -= len(self._items.pop(key))
            self._items[key] = value
            self._chars += len(value)
            while self._chars > self.max_chars:
                self._chars -= len(self._items.popitem(last=False)[1])


def _error_json(exc: PlaygroundError) -> JSONResponse:
    return error_response(exc, openai=False)
