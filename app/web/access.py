"""Who may use the compute: API keys in front of every route that can spend model time.

`API_KEYS` used to guard `/v1` only, while the same models answered without a key through
Gradio's named API (`/gradio_api/call/complete`), the page's own queue events and
`POST /api/shares`: an operator who set keys to limit who uses the machine got no such limit.

With keys set, one ASGI middleware in front of everything asks for a key on every route except
those that cannot spend model time or write:

- programs send `Authorization: Bearer <key>` (the `openai` client, `gradio_client(headers=...)`,
  curl);
- people open the page, are sent to `/login`, type a key once and get a signed session cookie
  (HttpOnly, SameSite=Lax, 7 days), which the page's own requests then carry;
- open to all: `/healthz` (load balancers), share pages `/s/<id>` (reading a link costs no
  model time; deleting one needs its secret token) and the login form itself.

`/metrics` takes `METRICS_TOKEN` when one is set (then only that token), else a key when keys
are set, else it is open.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import time
from collections.abc import Sequence
from urllib.parse import parse_qs, quote, urlsplit

from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.requests import cookie_parser

from app.ratelimit import RateLimited, RateLimiter, client_address
from app.web.guard import ClientGone, read_capped, scope_headers
from app.web.openai_shapes import error as error_response
from model.errors import PlaygroundError

log = logging.getLogger(__name__)

COOKIE = "playground_session"
SESSION_SECONDS = 7 * 24 * 3600
LOGIN_TRIES_PER_MIN = 10  # per client address: keys are long, but guessing must stay slow
LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"
MAX_LOGIN_BODY = 4096

# Routes that spend no model time and write nothing a key should guard.
_OPEN_EXACT = ("/healthz", "/favicon.ico")
_OPEN_PREFIXES = ("/s/",)


class AccessGuard:
    def __init__(
        self,
        app,
        *,
        api_keys: Sequence[str] = (),
        metrics_token: str | None = None,
        secure_cookie: bool = False,
        trusted_proxy_header: str | None = None,
    ):
        self.app = app
        self.keys = tuple(k for k in api_keys if k)
        self.metrics_token = metrics_token or None
        self.secure_cookie = secure_cookie
        self.trusted_proxy_header = trusted_proxy_header
        # Derived from the keys, so replicas with the same keys accept each other's cookies and
        # removing a key ends every session (no extra secret to configure and rotate).
        self._secret = hashlib.sha256(
            b"playground-session\0" + "\0".join(sorted(self.keys)).encode()
        ).digest()
        self._logins = RateLimiter(LOGIN_TRIES_PER_MIN, what="login attempts")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not (self.keys or self.metrics_token):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = scope_headers(scope)
        if self.keys and path == LOGIN_PATH:
            return await self._login(scope, receive, send, headers)
        if self.keys and path == LOGOUT_PATH:
            return await self._logout()(scope, receive, send)
        if path == "/metrics" and self.metrics_token:
            if hmac.compare_digest(_bearer(headers), self.metrics_token):
                return await self.app(scope, receive, send)
            return await self._refuse(
                scope,
                receive,
                send,
                "`Authorization: Bearer <METRICS_TOKEN>` is required for /metrics.",
            )
        if not self.keys or path in _OPEN_EXACT or path.startswith(_OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE, "")
        if self.key_valid(_bearer(headers)) or self.cookie_valid(cookie):
            return await self.app(scope, receive, send)
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and ("text/html" in headers.get("accept", ""))
        ):  # a person opening the page: the login form, then back here
            target = path + (
                f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""
            )
            return await RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", 303)(
                scope, receive, send
            )
        await self._refuse(
            scope,
            receive,
            send,
            "A valid API key is required: send `Authorization: Bearer <key>`, or log in at /login.",
        )

    def key_valid(self, given: str) -> bool:
        # Every key compared, in constant time each: the answer's timing says nothing.
        return bool(given) and sum(hmac.compare_digest(given, k) for k in self.keys) > 0

    def issue_cookie(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        return f"{expires}.{self._sign(expires)}"

    def cookie_valid(self, value: str, now: float | None = None) -> bool:
        expires, _, sig = value.partition(".")
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(sig, self._sign(int(expires)))

    def _sign(self, expires: int) -> str:
        return hmac.new(self._secret, str(expires).encode(), hashlib.sha256).hexdigest()

    async def _refuse(self, scope, receive, send, message: str) -> None:
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        exc = PlaygroundError(message, field="authorization", kind="unauthorized")
        response = error_response(exc, openai=scope.get("path", "").startswith("/v1/"))
        response.headers["www-authenticate"] = "Bearer"
        await response(scope, receive, send)

    async def _login(self, scope, receive, send, headers) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = _local_path((query.get("next") or ["/"])[0])
        if scope["method"] != "POST":
            return await _login_page(target)(scope, receive, send)
        try:
            body = await read_capped(receive, MAX_LOGIN_BODY)
        except ClientGone:
            return None
        form = parse_qs(body.decode("utf-8", "replace")) if body is not None else {}
        client = client_address(
            (scope.get("client") or ("", 0))[0], headers, self.trusted_proxy_header
        )
        try:
            self._logins.check(client)
        except RateLimited as exc:
            return await _login_page(target, exc.message, 429)(scope, receive, send)
        if not self.key_valid((form.get("key") or [""])[0]):
            log.info("refused: login with a wrong key from %s", client)
            return await _login_page(target, "That key is not valid.", 401)(scope, receive, send)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            self.issue_cookie(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookie,
        )
        await response(scope, receive, send)

    def _logout(self) -> Response:
        response = RedirectResponse(LOGIN_PATH, 303)
        response.delete_cookie(COOKIE, path="/")
        return response


def _bearer(headers: dict[str, str]) -> str:
    value = headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def _local_path(target: str) -> str:
    """Where to go after logging in: a path on this site only (no open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(target: str, error: str = "", status: int = 200) -> HTMLResponse:
    # No script and no outside resource: it renders under the strictest policy.
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · StarCoder Playground</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}}
button{{margin-top:.75rem;padding:.5rem 1rem;font-size:1rem}}.error{{color:#b00020}}</style>
</head><body><h1>StarCoder Playground</h1>
<p>This playground is for people with an API key. Enter yours to continue.</p>{notice}
<form method="post" action="{LOGIN_PATH}?next={html.escape(quote(target, safe=""))}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button></form></body></html>"""
    return HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"})
