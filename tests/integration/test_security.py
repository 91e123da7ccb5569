"""What a hostile client tries, against the real app: each test failed before its fix."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_client import Client

from app.web.downloads import Downloads

COMPLETE_ARGS = 8  # prompt, model, max_new_tokens, temperature, top_p, rep, seed, stop


def _call(base: str, api: str, data: list, **kw) -> tuple[int, str, str]:
    """One named-API call over plain HTTP: (status of the POST, SSE event name, its data)."""
    r = httpx.post(f"{base}gradio_api/call/{api}", json={"data": data}, **kw)
    if r.status_code != 200:
        return r.status_code, "", r.text
    events = httpx.get(f"{base}gradio_api/call/{api}/{r.json()['event_id']}", timeout=60).text
    blocks = [b for b in events.strip().split("\n\n") if b.startswith("event:")]
    name, _, payload = blocks[-1].partition("\ndata: ")
    return 200, name.removeprefix("event: "), payload


def _complete(prompt: str, max_new_tokens: int = 4) -> list:
    data = [None] * COMPLETE_ARGS
    data[0], data[2], data[3] = prompt, max_new_tokens, 0
    return data


# -- 1. no file outside the data folder, whatever the session id --------------------------


def _generate_fn_index(base: str) -> int:
    """The UI's completion Generate event: the one whose outputs include a download button."""
    config = httpx.get(f"{base}config").json()
    downloads = {c["id"] for c in config["components"] if c.get("type") == "downloadbutton"}
    return next(i for i, d in enumerate(config["dependencies"]) if downloads & set(d["outputs"]))


@pytest.mark.parametrize("style", ["absolute", "traversal", "empty"])
def test_a_session_id_that_is_a_path_is_refused(live_app, tmp_path, style):
    marker = tmp_path / f"probe-{uuid.uuid4().hex[:8]}"
    session = {
        "absolute": str(marker),
        "traversal": "../" * 12 + str(marker).lstrip("/"),
        "empty": "",
    }[style]
    body = {"data": ["def f(x):\n", "", False, 4, 0, 0.9, 1.0, "", ""], "event_data": None,
            "fn_index": _generate_fn_index(live_app.url), "session_hash": session}  # fmt: skip
    r = httpx.post(f"{live_app.url}gradio_api/queue/join", json=body)
    assert r.status_code == 400 and "`session_hash` must be 1 to 128" in r.json()["detail"]
    assert not marker.exists()


def test_a_value_a_page_control_refuses_is_named_with_the_control(live_app):
    """Gradio's own checks of the page's controls say "Value -1 is less than minimum value 1.";
    the refusal adds which control it was."""
    base, session = live_app.url, f"s{uuid.uuid4().hex}"
    body = {"data": ["def f(x):\n", "", False, -1, 0, 0.9, 1.0, "", ""], "event_data": None,
            "fn_index": _generate_fn_index(base), "session_hash": session}  # fmt: skip
    assert httpx.post(f"{base}gradio_api/queue/join", json=body).status_code == 200
    with httpx.stream(
        "GET", f"{base}gradio_api/queue/data", params={"session_hash": session}, timeout=60
    ) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data:")]
    done = [e for e in events if e.get("msg") == "process_completed"][-1]
    assert not done["success"]
    assert done["output"]["error"] == "`Max new tokens`: Value -1 is less than minimum value 1."


def test_downloads_are_written_under_the_data_folder_in_server_named_folders(live_app):
    base, session = live_app.url, f"s{uuid.uuid4().hex}"
    body = {"data": ["def f(x):\n", "", False, 4, 0, 0.9, 1.0, "", ""], "event_data": None,
            "fn_index": _generate_fn_index(base), "session_hash": session}  # fmt: skip
    assert httpx.post(f"{base}gradio_api/queue/join", json=body).status_code == 200
    with httpx.stream(
        "GET", f"{base}gradio_api/queue/data", params={"session_hash": session}, timeout=60
    ) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data:")]
    finished = [e for e in events if e.get("msg") == "process_completed"]
    assert finished and finished[-1]["success"], events[-1]
    assert finished[-1]["output"]["data"][3]["orig_name"] == "completion.py"
    downloads = Path(live_app.data_dir, "downloads").resolve()
    written = list(downloads.rglob("completion.py"))
    assert written and all(p.resolve().is_relative_to(downloads) for p in written)
    assert not any(session in str(p) for p in written)  # the folder is named by the server


def test_old_downloads_are_removed(tmp_path):
    store = Downloads(tmp_path / "dl", keep_seconds=100)
    old = Path(store.save("completion.py", "print(1)\n"))
    stamp = time.time() - 200
    os.utime(old.parent, (stamp, stamp))
    fresh = Path(store.save("fim.py", "print(2)\n"))  # too soon after the last sweep: kept
    assert old.exists()
    assert store.sweep(now=time.time() + 61) == 1
    assert not old.exists() and fresh.read_text() == "print(2)\n"
    assert old.parent.parent == fresh.parent.parent == (tmp_path / "dl").resolve()


def test_gradio_s_copies_of_downloads_live_in_a_data_folder_and_are_swept(live_app, tmp_path):
    """Gradio copies every file it serves into its cache, /tmp/gradio by default, and never
    removes them: the app keeps that cache in the data folder and sweeps it with the downloads."""
    cache = Path(live_app.blocks.GRADIO_CACHE).resolve()
    assert cache.name == "gradio" and cache != (Path("/tmp") / "gradio").resolve()
    store = Downloads(tmp_path / "dl", keep_seconds=100)
    store.also_sweep.append(tmp_path / "gradio")
    copy = tmp_path / "gradio" / "0123abcd" / "completion.py"
    copy.parent.mkdir(parents=True)
    copy.write_text("print(1)\n")
    stamp = time.time() - 200
    os.utime(copy.parent, (stamp, stamp))
    assert store.sweep(now=time.time() + 61) == 1 and not copy.exists()


# -- 2. precise refusals, never a 500 -----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"repo": {"$ne": 1}}, "`repo` must be text; got dict"),
        ({"license": [1]}, "`license` must be text; got list"),
        ({"lang": 5}, "`lang` must be text; got int"),
        ({"page": 0}, "`page` must be a whole number from 1 to 1000; got '0'"),
        ({"page": 1.5}, "`page` must be a whole number from 1 to 1000; got '1.5'"),
    ],
)
def test_search_filters_of_the_wrong_type_get_a_precise_message(live_app, kwargs, needle):
    data = {"query": "json", "repo": None, "license": None, "lang": None, "page": 1,
            "exact": False, **kwargs}  # fmt: skip
    status, event, payload = _call(live_app.url, "search", list(data.values()))
    assert status == 200 and event == "error"
    assert needle in json.loads(payload)["error"]


def test_stop_given_as_an_object_is_refused(live_app):
    data = _complete("x = 1")
    data[7] = {"a": 1}
    _, event, payload = _call(live_app.url, "complete", data)
    assert event == "error" and "`stop` must be a list of strings; got dict" in payload


def test_a_seed_out_of_range_prints_both_numbers_exactly(live_app):
    data = _complete("x = 1")
    data[6] = 2**64
    _, event, payload = _call(live_app.url, "complete", data)
    assert event == "error"
    assert "[0, 9223372036854775807]; got 18446744073709551616" in payload


def test_expected_user_errors_log_one_line_without_a_traceback(live_app, caplog):
    with caplog.at_level(logging.INFO):
        _, event, _ = _call(live_app.url, "complete", _complete("   "))
    assert event == "error"
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.getMessage() for r in refused] == ["refused: field=prompt kind=validation"]
    assert not any(r.exc_info for r in caplog.records)


# -- 3. shares made through the API reopen ------------------------------------------------


@pytest.mark.parametrize(
    "parameters",
    [None, {"temperature": 0.2}, {"stop": "oops", "seed": "x", "max_new_tokens": -5, "x": [1]}],
)
def test_shares_made_through_the_api_reopen_in_the_playground(live_app, parameters):
    client = Client(live_app.url, verbose=False, download_files=False)
    url = client.predict(
        mode="completion",
        prompt="def f(",
        output="def f(x):\n    return x\n",
        parameters=parameters,
        api_name="/share",
    )
    share_id = url.rsplit("/", 1)[-1]
    form = live_app.handlers.shares.form(live_app.store.get(share_id))
    expected_temperature = (parameters or {}).get("temperature", 0.2)
    assert form["temperature"] == expected_temperature and form["stop"] in ("", "oops")
    assert form["max_new_tokens"] == 256 and form["seed"] == ""


# -- 4. links, origins, headers, closed routes, body size ---------------------------------


def test_share_links_never_come_from_a_foreign_host_header(live_app):
    body = {"mode": "completion", "prompt": "", "output": f"x = {uuid.uuid4().hex}"}
    r = httpx.post(f"{live_app.url}api/shares", json=body, headers={"Host": "evil.example"})
    assert r.status_code == 201
    assert "evil.example" not in r.json()["url"] and r.json()["url"].startswith("/s/")
    page = httpx.get(f"{live_app.url}s/{r.json()['id']}", headers={"Host": "evil.example"})
    assert page.status_code == 200 and "evil.example" not in page.text
    ok = httpx.post(f"{live_app.url}api/shares", json=body)
    assert ok.json()["url"].startswith(live_app.url.rstrip("/") + "/s/")


def test_cross_site_posts_are_refused(live_app):
    body = {"mode": "completion", "prompt": "", "output": f"y = {uuid.uuid4().hex}"}
    evil = {"Origin": "https://evil.example"}
    share = httpx.post(f"{live_app.url}api/shares", json=body, headers=evil)
    call = httpx.post(
        f"{live_app.url}gradio_api/call/complete", json={"data": _complete("x")}, headers=evil
    )
    assert share.status_code == call.status_code == 403
    assert "`Origin`" in share.json()["error"]
    same = {"Origin": live_app.url.rstrip("/")}
    assert httpx.post(f"{live_app.url}api/shares", json=body, headers=same).status_code == 201


@pytest.mark.parametrize("path", ["", "healthz", "gradio_api/info", "config"])
def test_every_page_is_served_with_security_headers(live_app, path):
    r = httpx.get(f"{live_app.url}{path}")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def test_share_pages_keep_their_stricter_policy(live_app):
    body = {"mode": "completion", "prompt": "", "output": f"z = {uuid.uuid4().hex}"}
    sid = httpx.post(f"{live_app.url}api/shares", json=body).json()["id"]
    csp = httpx.get(f"{live_app.url}s/{sid}").headers["content-security-policy"]
    assert csp.startswith("default-src 'none'") and "script-src" not in csp


@pytest.mark.parametrize(
    "method, path", [("GET", "gradio_api/dev/reload"), ("POST", "gradio_api/upload")]
)
def test_development_and_upload_routes_are_closed(live_app, method, path):
    files = {"files": ("a.txt", b"x" * 1000)} if method == "POST" else None
    r = httpx.request(method, f"{live_app.url}{path}", files=files, timeout=5)
    assert r.status_code == 404


def test_oversized_bodies_are_refused_before_they_are_read(live_app):
    # Announce 100 MiB and send none of it: the answer must come without waiting for the body.
    host, port = urlsplit(live_app.url).hostname, urlsplit(live_app.url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /gradio_api/call/complete HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{"
        )
        reply = ""
        while "}" not in reply.partition("\r\n\r\n")[2] and len(reply) < 65536:
            chunk = sock.recv(4096).decode()
            if not chunk:
                break
            reply += chunk
    assert reply.startswith("HTTP/1.1 413") and "at most" in reply

    def chunks():
        for _ in range(64):
            yield b"y" * 2**20

    r = httpx.post(
        f"{live_app.url}api/shares", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["field"] == "body"


# -- 5. limits bind a client however many sessions it opens; a full queue says "busy" -------


def test_a_full_queue_says_busy_and_what_to_do(strict_app):
    """One generation runs, none may wait: the third of three at once meets a full queue."""
    results: list = [None] * 3

    def run(i: int) -> None:
        results[i] = _call(strict_app.url, "complete", _complete(f"# {i}\n", 400))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(120)
    busy = [r for r in results if "busy" in r[2]]
    assert busy, results
    assert all("Queue is full" not in r[2] for r in results)
    assert any("try again in a minute" in r[2] for r in busy)


def test_rate_limits_bind_each_address_across_fresh_sessions(strict_app):
    refused = []
    for i in range(8):  # each call is a new Gradio session
        _, event, payload = _call(strict_app.url, "complete", _complete(f"x = {i}"))
        if event == "error":
            refused.append(json.loads(payload)["error"])
    assert len(refused) >= 4 and all("Too many generations" in m for m in refused), refused
    fresh = Client(strict_app.url, verbose=False)
    with pytest.raises(Exception, match="Too many generations"):
        fresh.predict(prompt="y = 1", max_new_tokens=2, api_name="/complete")

    codes = []
    for i in range(4):
        body = {"mode": "completion", "prompt": "", "output": f"s = {i} {uuid.uuid4().hex}"}
        codes.append(httpx.post(f"{strict_app.url}api/shares", json=body).status_code)
    assert codes[:2] == [201, 201] and codes[2:] == [429, 429]
    with pytest.raises(Exception, match="Too many shares"):
        Client(strict_app.url, verbose=False).predict(
            mode="completion", prompt="", output="t = 1", api_name="/share"
        )


def test_one_set_of_limits_for_generation_and_sharing(live_app):
    """A 240 KB prompt used to generate and then fail to share (1 MB vs 128 KiB limits)."""
    limits = live_app.handlers.generate.playground.limits
    assert limits is live_app.store.limits
    prompt = "x" * limits.max_prompt_bytes  # the largest prompt generation accepts ...
    body = {"mode": "completion", "prompt": prompt, "output": prompt + "\ny = 1\n"}
    r = httpx.post(f"{live_app.url}api/shares", json=body, timeout=30)
    assert r.status_code == 201, r.text  # ... is shareable with what the model added
    _, event, payload = _call(live_app.url, "complete", _complete(prompt + "x"))
    assert event == "error" and f"the limit is {limits.max_prompt_bytes:,} bytes" in payload


def test_a_forwarded_for_header_from_loopback_changes_no_address(strict_app):
    """Without TRUSTED_PROXY_HEADER the socket peer is the client: uvicorn's default rewrote it
    from X-Forwarded-For for any loopback peer, so 36 of 36 spoofed requests passed a limit of
    30 (a limit of 4 here)."""
    refused = 0
    for i in range(8):
        _, event, payload = _call(
            strict_app.url,
            "complete",
            _complete(f"z = {i}"),
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        refused += event == "error" and "Too many generations" in payload
    assert refused >= 4
