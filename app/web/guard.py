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

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from model.errors import PlaygroundError

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
        host_allowed: Callable[[str], bool] = lambda host: True,
        body_timeout_s: float,  # BODY_TIMEOUT_S; the settings table holds its default
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.headers = security_headers(frame_ancestors)
        self.trusted_origins = {o.rstrip("/").lower() for o in trusted_origins if o}
        self.host_allowed = host_allowed
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = scope_headers(scope)
        if path.rstrip("/") in CLOSED_PATHS:
            return await self._reply(send, "not_found", "Not found.", None)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            refusal = self._cross_site(headers)
            if refusal:
                log.info(
                    "refused a cross-site %s to %s from %s",
                    scope["method"],
                    path,
                    headers.get("origin", "")[:100],
                )
                return await self._reply(send, "forbidden", *refusal)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await self._reply(send, "too_large", self._too_large(int(length)), "body")

        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            # Read the body here, up to the cap and within the deadline, then replay it to the
            # app: a socket that trickled its body used to stay open for ever, and a client
            # that dropped mid-upload logged a 70-line ClientDisconnect traceback in the app.
            try:
                body = await asyncio.wait_for(
                    read_capped(receive, self.max_body_bytes), self.body_timeout_s
                )
            except TimeoutError:
                log.info(
                    "refused: a %s to %s whose body took over %g s",
                    scope["method"],
                    path,
                    self.body_timeout_s,
                )
                return await self._reply(
                    send,
                    "timeout",
                    f"The request body did not arrive within "
                    f"{self.body_timeout_s:g} s (BODY_TIMEOUT_S).",
                    "body",
                )
            except ClientGone:
                log.info("a client went away while sending its %s to %s", scope["method"], path)
                return None
            if body is None:
                return await self._reply(send, "too_large", self._too_large(None), "body")
            receive = _replay(body, receive)

        async def secure_send(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in self.headers.items()
                    if k.encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, secure_send)

    def _cross_site(self, headers: dict[str, str]) -> tuple[str, str] | None:
        """Why a browser's write is refused (message, field), or None if it may go on."""
        origin = headers.get("origin")
        if origin is None:
            return None  # not a browser's cross-site request (curl, gradio_client, same-origin)
        origin = origin.rstrip("/").lower()
        if origin in self.trusted_origins:
            return None
        host = headers.get("host", "").lower()
        if not host or urlsplit(origin).netloc != host:
            return ("Cross-site requests are not allowed: the `Origin` header must be this "
                    "site.", "origin")  # fmt: skip
        if not self.host_allowed(host):
            # Same-origin by the headers, but under a name we do not answer to: DNS rebinding
            # (a page on evil.example whose name now points at this machine) looks like this.
            return (f"The `Host` {host[:100]!r} is not a name this server answers to: add it "
                    "to ALLOWED_HOSTS or set PUBLIC_URL.", "host")  # fmt: skip
        return None

    async def _reply(self, send, kind: str, message: str, field: str | None):
        refusal = PlaygroundError(message, field=field, kind=kind)
        status, body = refusal.status, json.dumps(refusal.body()).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        headers += [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, given: int | None) -> str:
        size = f"{given:,} bytes" if given is not None else "more than that"
        return f"Request body must be at most {self.max_body_bytes:,} bytes. Given: {size}."


def scope_headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class ClientGone(Exception):
    """The client closed its connection before its request was answered."""


async def read_capped(receive, cap: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
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
