"""Shares over real HTTP: a uvicorn server on a loopback port, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from urllib.parse import urlsplit

import httpx
import pytest

from app.shares.store import Limits, Store
from tests import share_helpers
from tests.markup import XSS, Page, assert_inert
from tests.share_helpers import LiveServer, share_app

db_url = share_helpers.db_url  # fixtures shared with the other share tests
store = share_helpers.store

CODE = "def greet(name):\n    return f'hello {name} & <friends>'\n"


@pytest.fixture
def live(store):
    with LiveServer(share_app(store)) as server:
        yield server


@pytest.fixture
def http(live):
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def post_share(http, **body) -> httpx.Response:
    return http.post("/api/shares", json={"mode": "completion", "prompt": "", **body})


def test_round_trip_share_then_read_the_page(http, live):
    r = post_share(
        http,
        prompt="def greet(name):",
        output=CODE,
        parameters={"temperature": 0.2},
        model="bigcode/tiny_starcoder_py",
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["url"] == f"{live.url}/s/{body['id']}" and body["created"] is True
    assert body["delete_url"].startswith(f"{live.url}/s/{body['id']}/delete?token=")

    page = http.get(urlsplit(body["url"]).path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    parsed = Page(page.text)
    assert "return f'hello {name} & <friends>'" in parsed.all_text
    assert "&amp; &lt;friends&gt;" in page.text  # escaped in the markup
    assert "bigcode/tiny_starcoder_py" in parsed.all_text
    assert f"/?share={body['id']}" in [a.get("href") for t, a in parsed.tags if t == "a"]
    assert parsed.meta["og:url"] == body["url"]
    assert http.head(urlsplit(body["url"]).path).status_code == 200


@pytest.mark.parametrize("payload", XSS)
def test_xss_payloads_come_back_as_text(http, payload):
    r = post_share(http, prompt=payload, output=payload + "\n", model=payload)
    page = http.get(f"/s/{r.json()['id']}")
    assert page.status_code == 200
    assert payload not in page.text  # never raw in the markup
    parsed = Page(page.text)
    assert_inert(parsed)
    assert payload in parsed.all_text


def test_same_content_twice_gives_two_links_each_with_its_own_delete_link(http):
    # The same id back would hand anyone who shares the same text someone else's link.
    first = post_share(http, output=CODE, parameters={"top_p": 0.9})
    second = post_share(http, output=CODE, parameters={"top_p": 0.9})
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["delete_url"] and second.json()["delete_url"] != first.json()["delete_url"]


def test_delete_with_wrong_token_is_refused_and_right_token_deletes(http):
    made = post_share(http, output=CODE).json()
    path = f"/s/{made['id']}"
    good = urlsplit(made["delete_url"])
    token = dict(p.split("=", 1) for p in good.query.split("&"))["token"]

    assert http.get(f"{path}/delete", params={"token": "wrong"}).status_code == 403
    refused = http.post(f"{path}/delete", data={"token": "wrong"})
    assert refused.status_code == 403 and "not valid" in refused.text
    assert http.get(path).status_code == 200

    confirm = http.get(f"{good.path}?{good.query}")
    assert confirm.status_code == 200 and confirm.headers["referrer-policy"] == "no-referrer"
    assert ("input", {"type": "hidden", "name": "token", "value": token}) in Page(confirm.text).tags
    done = http.post(f"{path}/delete", data={"token": token})
    assert done.status_code == 200 and "deleted" in done.text
    gone = http.get(path)
    assert gone.status_code == 404 and "Share not found" in gone.text
    assert http.post(f"{path}/delete", data={"token": token}).status_code == 404


@pytest.mark.parametrize("path", ["/s/AAAAAAAAAAAAAAAA", "/s/nope", "/s/%3Cimg%20src%3Dx%3E"])
def test_missing_id_gives_a_friendly_404(http, path):
    r = http.get(path)
    assert r.status_code == 404 and "Share not found" in r.text
    assert "<img src=x>" not in r.text


@pytest.mark.parametrize(
    "body, status, field, words",
    [
        ({"mode": "chat", "prompt": "", "output": "x"}, 400, "mode", ["`mode`", "'chat'"]),
        ({"mode": "completion", "output": "x"}, 400, "prompt", ["`prompt` is required"]),
        ({"mode": "completion", "prompt": "", "output": 5}, 400, "output", ["string", "int"]),
        ({"mode": "completion", "prompt": "", "output": "x", "temp": 1}, 400, "temp", ["temp"]),
        (
            {"mode": "completion", "prompt": "p" * 2000, "output": "x"},
            400,
            "prompt",
            ["1,024 bytes", "2,000 bytes"],
        ),
        ([1, 2], 400, "body", ["JSON object", "list"]),
    ],
)
def test_bad_requests_get_400_with_a_clear_message(tmp_path, body, status, field, words):
    st = Store(
        f"sqlite:///{tmp_path / 'p.db'}", writes_per_window=30, limits=Limits(max_prompt_bytes=1024)
    )
    with LiveServer(share_app(st)) as server:
        r = httpx.post(f"{server.url}/api/shares", json=body)
        as_json = {"Content-Type": "application/json"}
        bad_json = httpx.post(f"{server.url}/api/shares", content=b"{not json", headers=as_json)
        huge = httpx.post(f"{server.url}/api/shares", content=b" " * 3_000_000, headers=as_json)
    st.close()
    assert r.status_code == status and r.json()["field"] == field
    for word in words:
        assert word in r.json()["error"]
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]
    assert huge.status_code == 413 and huge.json()["field"] == "body"


def test_only_json_bodies_create_shares(tmp_path):
    """A cross-site form or text/plain POST needs no CORS preflight: it must not create a share."""
    st = Store(f"sqlite:///{tmp_path / 'p.db'}", writes_per_window=30)
    body = json.dumps({"mode": "completion", "prompt": "", "output": "x = 1"})
    with LiveServer(share_app(st)) as server:
        plain = httpx.post(
            f"{server.url}/api/shares", content=body, headers={"Content-Type": "text/plain"}
        )
        form = httpx.post(f"{server.url}/api/shares", data={"mode": "completion"})
        ok = httpx.post(
            f"{server.url}/api/shares",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    with st.engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT COUNT(*) FROM shares").scalar()
    st.close()
    assert plain.status_code == 415 and plain.json()["field"] == "content-type"
    assert "application/json" in plain.json()["error"] and "'text/plain'" in plain.json()["error"]
    assert form.status_code == 415
    assert ok.status_code == 201 and count == 1


@pytest.mark.parametrize("depth", [17, 100_000])
def test_deeply_nested_parameters_are_refused_with_the_limit(tmp_path, depth):
    st = Store(f"sqlite:///{tmp_path / 'p.db'}", writes_per_window=30)
    nested = '{"a":' * depth + "1" + "}" * depth
    body = '{"mode": "completion", "prompt": "", "output": "x", "parameters": ' + nested + "}"
    with LiveServer(share_app(st)) as server:
        r = httpx.post(
            f"{server.url}/api/shares", content=body, headers={"Content-Type": "application/json"}
        )
    st.close()
    assert r.status_code == 400, r.text
    assert "16 levels" in r.json()["error"] and r.json()["field"] in ("parameters", "body")


def test_write_rate_limit_answers_429_with_retry_after(db_url):
    st = Store(db_url, writes_per_window=2, window_s=60)
    with LiveServer(share_app(st)) as server, httpx.Client(base_url=server.url) as http:
        codes = [post_share(http, output=f"x = {i}").status_code for i in range(3)]
        last = post_share(http, output="x = 4")
    st.close()
    assert codes == [201, 201, 429]
    assert last.status_code == 429 and 1 <= int(last.headers["retry-after"]) <= 60
    assert "2 per 60 s" in last.json()["error"]


def test_200_concurrent_share_writes_all_succeed_and_read_back(live):
    # 200 threads, one connection each, released together by a barrier: truly concurrent writes.
    # (httpx's async pool is quadratic at this width and would measure itself, not the server.)
    port = urlsplit(live.url).port
    outs = [f"def f{i}():\n    return {i} * '<x>'\n" for i in range(200)]
    barrier = threading.Barrier(len(outs))

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            data = json.dumps(body).encode() if body else None
            headers = {"Content-Type": "application/json"} if body else {}
            barrier.wait()
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def share(out: str):
        return call("POST", "/api/shares", {"mode": "completion", "prompt": "", "output": out})

    with ThreadPoolExecutor(len(outs)) as pool:
        posts = list(pool.map(share, outs))
        assert [status for status, _ in posts] == [201] * 200, posts[:3]
        ids = [json.loads(text)["id"] for _, text in posts]
        assert len(set(ids)) == 200
        barrier.reset()
        pages = list(pool.map(lambda i: call("GET", f"/s/{i}"), ids))
    for out, (status, text) in zip(outs, pages, strict=True):
        assert status == 200
        assert out in Page(text).all_text
