"""API keys in front of every route (app/web/access.py), over a stand-in app that answers 200
to anything: what a client with and without a key, a cookie or the metrics token gets."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.testclient import TestClient

from app.web.access import COOKIE, AccessGuard
from app.web.guard import EdgeGuard

KEYS = ("key-one", "key-two")


def _app(**guard) -> TestClient:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    def anything(path: str):
        return PlainTextResponse(f"reached /{path}")

    app.add_middleware(AccessGuard, **guard)
    app.add_middleware(EdgeGuard, max_body_bytes=10_000, body_timeout_s=30.0)  # as the server
    return TestClient(app, base_url="http://127.0.0.1:7860", follow_redirects=False)


SPENDING = [("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
            ("POST", "/gradio_api/call/complete"), ("POST", "/gradio_api/queue/join"),
            ("GET", "/gradio_api/queue/data"), ("POST", "/api/shares"), ("GET", "/config"),
            ("GET", "/gradio_api/info"), ("GET", "/metrics")]  # fmt: skip
OPEN = [("GET", "/healthz"), ("GET", "/s/AbCdEfGhIjKlMnOp"), ("GET", "/login")]


@pytest.mark.parametrize("method, path", SPENDING)
def test_with_keys_every_route_that_spends_needs_a_key(method, path):
    client = _app(api_keys=KEYS)
    refused = client.request(method, path)
    assert refused.status_code == 401, refused.text
    assert "reached" not in refused.text and "Bearer" in refused.text
    wrong = client.request(method, path, headers={"Authorization": "Bearer key-three"})
    assert wrong.status_code == 401
    ok = client.request(method, path, headers={"Authorization": "Bearer key-two"})
    assert ok.status_code == 200 and ok.text == f"reached {path}"


def test_v1_refusals_have_openai_s_shape():
    body = _app(api_keys=KEYS).post("/v1/completions").json()
    assert body["error"]["code"] == "unauthorized" and body["error"]["param"] == "authorization"


@pytest.mark.parametrize("method, path", OPEN)
def test_health_share_pages_and_the_login_form_stay_open(method, path):
    r = _app(api_keys=KEYS).request(method, path)
    assert r.status_code == 200


def test_without_keys_nothing_changes():
    client = _app()
    for method, path in SPENDING + OPEN:
        assert client.request(method, path).status_code == 200, path


def test_a_person_opening_the_page_logs_in_once_and_then_uses_the_page():
    client = _app(api_keys=KEYS)
    page = client.get("/?share=abc", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F%3Fshare%3Dabc"
    form = client.get(page.headers["location"])
    assert 'name="key"' in form.text and "<script" not in form.text
    bad = client.post("/login?next=%2F", data={"key": "nope"})
    assert bad.status_code == 401 and "not valid" in bad.text and COOKIE not in bad.cookies
    good = client.post("/login?next=%2F%3Fshare%3Dabc", data={"key": "key-one"})
    assert good.status_code == 303 and good.headers["location"] == "/?share=abc"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    # The page's own requests carry the cookie: the queue and the API answer.
    assert client.post("/gradio_api/queue/join").text == "reached /gradio_api/queue/join"
    assert client.get("/").status_code == 200
    client.get("/logout")
    assert client.post("/gradio_api/queue/join").status_code == 401


def test_a_forged_or_expired_cookie_is_refused():
    guard = AccessGuard(None, api_keys=KEYS)
    good = guard.issue_cookie(now=1000.0)
    assert guard.cookie_valid(good, now=1001.0)
    assert not guard.cookie_valid(good, now=1000.0 + 8 * 24 * 3600)  # a week on
    expires, _, sig = good.partition(".")
    assert not guard.cookie_valid(f"{int(expires) + 10**6}.{sig}", now=1001.0)  # longer life
    assert not guard.cookie_valid("", now=0) and not guard.cookie_valid("x.y", now=0)
    # Another key set (a removed key) ends every session.
    assert not AccessGuard(None, api_keys=("key-one",)).cookie_valid(good, now=1001.0)


def test_login_never_redirects_off_site():
    client = _app(api_keys=KEYS)
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        r = client.post("/login", params={"next": target}, data={"key": "key-one"})
        assert r.headers["location"] == "/", target


def test_login_from_another_site_is_refused_and_guessing_is_slowed():
    client = _app(api_keys=KEYS)
    evil = client.post("/login", data={"key": "key-one"}, headers={"Origin": "https://evil.ex"})
    assert evil.status_code == 403  # no login CSRF
    codes = [client.post("/login", data={"key": f"guess-{i}"}).status_code for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    assert "Too many login attempts" in client.post("/login", data={"key": "x"}).text


def test_a_metrics_token_guards_metrics_alone():
    client = _app(metrics_token="scrape-me")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
    assert client.post("/v1/completions").status_code == 200  # no keys: the rest stays open
    keyed = _app(api_keys=KEYS, metrics_token="scrape-me")
    assert keyed.get("/metrics", headers={"Authorization": "Bearer key-one"}).status_code == 401
