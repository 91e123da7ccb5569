"""The HTTP edge: one ASGI middleware in front of every route (ours and Gradio's).

- Caps request bodies before they are read: a 100 MiB body used to be read in full (4 s,
  ~200 MB of memory) before a field check refused it.
- Refuses cross-site writes: a POST whose Origin is not this site's (browsers always send
  Origin on cross-site POSTs, so any web page could otherwise make visitors generate or share).
- Closes Gradio routes production does not use: dev reload (each open stream polls for ever)
  and anonymous file upload (no feature takes files).
- Adds security headers to every response. The share pages set a stricter CSP of their own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CLOSED_PATHS = ("/gradio_api/dev/reload", "/gradio_api/upload", "/upload", "/dev/reload")

# Gradio's page needs inline scripts and styles and evaluates js_on_load; everything else is
# same-origin. Its default theme fetches fonts from Google; they are allowed so the page looks
# as Gradio means it to, and nothing else from outside.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com; img-src 'self' data: blob:; "
    "media-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors {ancestors}"
)
# A Space is shown inside an iframe on huggingface.co; anywhere else nobody may frame us.
SPACE_FRAME_ANCESTORS = "https://huggingface.co"


def security_headers(frame_ancestors: str | None = None) -> dict[str, str]:
    headers = {
        "content-security-policy": PAGE_CSP.format(ancestors=frame_ancestors or "'none'"),
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
    }
    if frame_ancestors is None:
        headers["x-frame-options"] = "DENY"  # for browsers that predate frame-ancestors
    return headers


class EdgeGuard:
    def __init__(
        self,
        app,
        *,
        max_body_bytes: int,
        trusted_origins: Iterable[str] = (),
        frame_ancestors: str | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.headers = security_headers(frame_ancestors)
        self.trusted_origins = {o.rstrip("/").lower() for o in trusted_origins if o}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = _headers(scope)
        if path.rstrip("/") in CLOSED_PATHS:
            return await self._reply(send, 404, "not_found", "Not found.", None)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not self._same_site(headers):
            log.info("refused a cross-site %s to %s from %s", scope["method"], path,
                     headers.get("origin", "")[:100])  # fmt: skip
            return await self._reply(
                send, 403, "forbidden",
                "Cross-site requests are not allowed: the `Origin` header must be this site.",
                "origin",
            )  # fmt: skip
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await self._reply(send, 413, "too_large", self._too_large(int(length)), "body")

        if not length.isdigit() and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            # No length given (chunked): read up to the cap here, then replay it to the app.
            body = await _read_capped(receive, self.max_body_bytes)
            if body is None:
                return await self._reply(send, 413, "too_large", self._too_large(None), "body")
            receive = _replay(body, receive)

        async def secure_send(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in self.headers.items()
                         if k.encode() not in present]  # fmt: skip
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, secure_send)

    def _same_site(self, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser's cross-site request (curl, gradio_client, same-origin GET)
        origin = origin.rstrip("/").lower()
        if origin in self.trusted_origins:
            return True
        host = headers.get("host", "").lower()
        return bool(host) and urlsplit(origin).netloc == host

    async def _reply(self, send, status: int, kind: str, message: str, field: str | None):
        body = json.dumps({"error": message, "field": field, "kind": kind}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        headers += [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, given: int | None) -> str:
        size = f"{given:,} bytes" if given is not None else "more than that"
        return f"Request body must be at most {self.max_body_bytes:,} bytes. Given: {size}."


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _read_capped(receive, cap: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away; the app will see an empty body
        size += len(message.get("body", b""))
        if size > cap:
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()  # after the body: disconnects, as the server reports them
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
