"""Keys, budgets and the holes of the second hostile probe (issue 22), against the real app:
an app with API_KEYS, METRICS_TOKEN, a trusted proxy header, a small token budget and a cap on
scored prompts. Each test failed before its fix."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from gradio_client import Client

from tests.integration.test_browser import browser  # noqa: F401 - the shared Chromium fixture

KEY, METRICS = "k-" + uuid.uuid4().hex, "m-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}
BUDGET = 1200  # tiny-starcoder: a context of 512


@pytest.fixture(scope="module")
def guarded(attribution_index, tmp_path_factory):
    from tests.conftest import _serve

    argv = ["--model", "tiny-starcoder", "--api-keys", f"other-key,{KEY}",
            "--metrics-token", METRICS, "--trusted-proxy-header", "x-real-ip",
            "--rate-limit", "0", "--token-budget", str(BUDGET), "--max-scored-tokens", "64",
            "--body-timeout", "2", "--stop-loops", "off"]  # fmt: skip
    yield from _serve(argv, attribution_index, tmp_path_factory)


def _share_body() -> dict:
    return {"mode": "completion", "prompt": "", "output": f"x = {uuid.uuid4().hex}"}


def _routes(base: str) -> list[tuple[str, str, dict]]:
    """Every route that can spend model time or write, as a client would call it."""
    complete = {"data": ["def f(x):\n", None, 2, 0, None, None, None, None]}
    v1 = {"model": "tiny-starcoder", "prompt": "x", "max_tokens": 2, "temperature": 0}
    chat = {"model": "tiny-starcoder", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    return [("POST", "v1/completions", {"json": v1}),
            ("POST", "v1/chat/completions", {"json": chat}), ("GET", "v1/models", {}),
            ("POST", "gradio_api/call/complete", {"json": complete}),
            ("POST", "gradio_api/call/assist", {"json": {"data": ["hi", None, None, 2, 0,
                                                                    None, None, None, None]}}),
            ("POST", "gradio_api/call/search", {"json": {"data": ["json", None, None, None, 1,
                                                                  False]}}),
            ("POST", "gradio_api/queue/join", {"json": {"data": [], "fn_index": 0,
                                                       "session_hash": "abc"}}),  # 400 past it
            ("POST", "api/shares", {"json": _share_body()}), ("GET", "config", {}),
            ("GET", "gradio_api/info", {})]  # fmt: skip


def test_every_route_that_spends_or_writes_needs_a_key(guarded):
    base = guarded.url
    for method, path, kw in _routes(base):
        refused = httpx.request(method, base + path, timeout=30, **kw)
        assert refused.status_code == 401, (path, refused.status_code, refused.text[:200])
        wrong = httpx.request(
            method, base + path, timeout=30, headers={"Authorization": "Bearer nope"}, **kw
        )
        assert wrong.status_code == 401, path
        ok = httpx.request(method, base + path, timeout=30, headers=AUTH, **kw)
        expected = (400,) if path.endswith("queue/join") else (200, 201)  # data for no event
        assert ok.status_code in expected, (path, ok.status_code, ok.text[:300])
    # Open to all: health checks and share pages (a link is read, not computed).
    sid = httpx.post(base + "api/shares", json=_share_body(), headers=AUTH).json()["id"]
    assert httpx.get(base + "healthz", timeout=30).status_code in (200, 503)
    assert httpx.get(f"{base}s/{sid}").status_code == 200


def test_metrics_take_their_own_token(guarded):
    assert httpx.get(guarded.url + "metrics").status_code == 401
    assert httpx.get(guarded.url + "metrics", headers=AUTH).status_code == 401
    r = httpx.get(guarded.url + "metrics", headers={"Authorization": f"Bearer {METRICS}"})
    assert r.status_code == 200 and "playground_queue_depth" in r.text


def test_clients_with_a_key_work_as_before(guarded):
    text = Client(guarded.url, verbose=False, headers=AUTH).predict(
        prompt="def add(a, b):\n", max_new_tokens=4, temperature=0, api_name="/complete"
    )
    assert text.startswith("def add(a, b):\n") and len(text) > len("def add(a, b):\n")
    with pytest.raises(Exception):  # noqa: B017 - gradio_client cannot even read the API
        Client(guarded.url, verbose=False).predict(prompt="x", api_name="/complete")
    oai = openai.OpenAI(base_url=guarded.url + "v1", api_key=KEY, max_retries=0)
    assert oai.completions.create(model="tiny-starcoder", prompt="x", max_tokens=2).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.url + "v1", api_key="no", max_retries=0).models.list()


def test_a_person_logs_in_once_and_the_page_and_its_queue_work(guarded):
    with httpx.Client(base_url=guarded.url, timeout=30) as session:
        page = session.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert session.post("/login", data={"key": "guess"}).status_code == 401
        logged = session.post("/login?next=%2F", data={"key": KEY})
        assert logged.status_code == 303 and "playground_session" in session.cookies
        assert session.get("/", headers={"Accept": "text/html"}).status_code == 200
        config = session.get("/config")
        assert config.status_code == 200 and config.json()["components"]
        posted = session.post(
            "/gradio_api/call/complete",
            json={"data": ["def f(x):\n", None, 2, 0, None, None, None, None]},
        )
        assert posted.status_code == 200, posted.text
        events = session.get(f"/gradio_api/call/complete/{posted.json()['event_id']}").text
        assert "event: complete" in events


def test_links_ignore_a_host_with_userinfo_and_rebinding_is_refused(guarded):
    base = guarded.url
    forged = httpx.post(
        base + "api/shares",
        json=_share_body(),
        headers={**AUTH, "Host": "localhost:1@evil.example"},
    )
    assert forged.status_code == 201, forged.text
    assert "evil.example" not in forged.text and forged.json()["url"].startswith("/s/")
    # DNS rebinding: a page on evil.example whose name now points here is "same origin".
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    r = httpx.post(base + "api/shares", json=_share_body(), headers={**AUTH, **rebound})
    assert r.status_code == 403 and "ALLOWED_HOSTS" in r.json()["error"]
    port = urlsplit(base).port
    same = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
    assert (
        httpx.post(base + "api/shares", json=_share_body(), headers={**AUTH, **same}).status_code
        == 201
    )


def test_only_the_trusted_proxy_header_names_the_client(guarded):
    """With TRUSTED_PROXY_HEADER=x-real-ip, X-Forwarded-For (which uvicorn used to apply from
    loopback) changes nothing, and each x-real-ip address has a budget of its own. A 300-token
    prompt costs its 300 tokens whatever it writes: the fifth overdraws 1,200."""
    body = {"model": "tiny-starcoder", "prompt": "x = 1\n" * 60, "max_tokens": 8,
            "temperature": 0}  # fmt: skip
    one = {**AUTH, "x-real-ip": "203.0.113.7"}
    codes = [
        httpx.post(
            guarded.url + "v1/completions",
            json=body,
            timeout=120,
            headers={**one, "x-forwarded-for": f"198.51.100.{i}"},
        ).status_code
        for i in range(5)
    ]
    assert codes[:3] == [200] * 3 and codes[4] == 429, codes
    other = {**AUTH, "x-real-ip": "203.0.113.8"}
    fresh = httpx.post(guarded.url + "v1/completions", json=body, headers=other, timeout=120)
    assert fresh.status_code == 200, fresh.text


def test_the_token_budget_says_budget_cost_and_when_it_refills(guarded):
    me = {**AUTH, "x-real-ip": "203.0.113.20"}
    big = {"model": "tiny-starcoder", "prompt": "def f(x):\n", "max_tokens": 400,
           "temperature": 0, "n": 16}  # fmt: skip
    r = httpx.post(guarded.url + "v1/completions", json=big, headers=me, timeout=120)
    assert r.status_code == 429, r.text
    message = r.json()["error"]["message"]
    assert f"{BUDGET:,} per 60 s per client" in message and "406 model tokens" in message
    assert "Enough is back in" in message and int(r.headers["retry-after"]) >= 1


def test_a_scored_prompt_is_capped(guarded):
    me = {**AUTH, "x-real-ip": "203.0.113.30"}
    body = {"model": "tiny-starcoder", "prompt": "x = 1\n" * 100, "max_tokens": 1,
            "echo": True, "logprobs": 1}  # fmt: skip
    r = httpx.post(guarded.url + "v1/completions", json=body, headers=me, timeout=60)
    assert r.status_code == 413, r.text
    assert "MAX_SCORED_TOKENS" in r.json()["error"]["message"] and "<= 64" in r.text
    short = {**body, "prompt": "x = 1\n" * 5}
    ok = httpx.post(guarded.url + "v1/completions", json=short, headers=me, timeout=60)
    assert ok.status_code == 200 and ok.json()["choices"][0]["logprobs"]["tokens"]


@pytest.mark.parametrize(
    "field, value", [("response_format", {"type": "json_object"}), ("tool_choice", "auto")]
)
def test_fields_we_would_ignore_are_refused_by_name(guarded, field, value):
    body = {"model": "tiny-starcoder", "max_tokens": 2, field: value,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    r = httpx.post(guarded.url + "v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def _active(base: str) -> float:
    text = httpx.get(base + "metrics", headers={"Authorization": f"Bearer {METRICS}"}).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("playground_active_requests", "playground_queue_depth"))
    }
    return sum(values.values())


def test_a_non_streamed_request_stops_when_its_client_goes(guarded, caplog):
    # 4 x (6 + 290) tokens fit the budget of 1,200; ignore_eos: each runs its whole length.
    caplog.set_level(logging.INFO, logger="app.web.openai_responses")
    body = {"model": "tiny-starcoder", "prompt": "def f(x):\n", "max_tokens": 290, "n": 4,
            "temperature": 0.8, "ignore_eos": True}  # fmt: skip
    host, port = urlsplit(guarded.url).hostname, urlsplit(guarded.url).port
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nx-real-ip: 203.0.113.40\r\n".encode()
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    deadline = time.monotonic() + 30
    while _active(guarded.url) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _active(guarded.url) >= 2  # the choices are generating
    sock.close()  # the client goes away before its answer
    deadline = time.monotonic() + 15
    while _active(guarded.url) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _active(guarded.url) == 0  # all four stopped, none left waiting
    assert "went away before its answer; 4 choices stopped" in caplog.text  # not finished


def test_a_trickled_body_is_refused_and_a_dropped_upload_is_one_line(guarded, caplog):
    host, port = urlsplit(guarded.url).hostname, urlsplit(guarded.url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/shares HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        start = time.monotonic()
        reply = ""
        while "}" not in reply.partition("\r\n\r\n")[2] and time.monotonic() - start < 10:
            chunk = sock.recv(4096).decode()  # the head and the body may come apart
            if not chunk:
                break
            reply += chunk
    assert reply.startswith("HTTP/1.1 408") and "BODY_TIMEOUT_S" in reply
    assert time.monotonic() - start < 10
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /gradio_api/call/complete HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"da'
        )
    time.sleep(0.5)
    traced = [r for r in caplog.records if r.exc_info]
    assert not traced, [r.getMessage()[:200] for r in traced]


def test_an_unknown_call_id_is_a_clean_404(guarded):
    r = httpx.get(guarded.url + "gradio_api/call/complete/" + uuid.uuid4().hex, headers=AUTH)
    assert r.status_code == 404 and "POST to the API first" in r.text


@pytest.mark.browser
def test_in_a_browser_a_key_at_login_opens_the_page_and_it_generates(guarded, browser):  # noqa: F811
    page = browser.new_page()
    try:
        page.set_default_timeout(30_000)
        page.goto(guarded.url)
        assert "/login" in page.url and page.locator("#key").is_visible()
        page.fill("#key", "wrong")
        page.click("button[type=submit]")
        assert "not valid" in page.inner_text("body")
        page.fill("#key", KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#completion-prompt textarea")  # the playground itself
        page.fill("#completion-prompt textarea", "def add(a, b):\n")
        page.click("#completion-run")
        page.wait_for_function(
            "() => document.querySelector('#completion-status').innerText.includes('tokens/s')"
        )
        assert page.inner_text("#completion-output").startswith("def add(a, b):")
    finally:
        page.close()
