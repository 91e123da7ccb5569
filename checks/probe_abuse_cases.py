"""The probe's `abuse` group: the holes the second hostile probe found (issue 22), each with the
expectation next to it. Cases that need an app configured otherwise than the probe's target
(API_KEYS, a trusted proxy header, a token budget, a short BODY_TIMEOUT_S) are checked by
tests/integration/test_access_app.py against such an app."""

from __future__ import annotations

import json
import socket
import time

from checks.probe_checks import Case
from checks.probe_client import Probe

SHARE = {"mode": "completion", "prompt": "", "output": "x = 1\n"}


def abuse_cases(p: Probe) -> None:
    def share(name, headers, refuse=False, fld=None):
        return p.request(
            "/api/shares",
            name,
            "POST",
            "api/shares",
            json=SHARE,
            headers=headers,
            expect_refusal=refuse,
            field_=fld,
        )

    # A Host with userinfo is not an allowed host: the link stays relative (no evil.example).
    case, resp = share("Host with userinfo", {"host": "localhost:1@evil.example"})
    if resp is not None and "evil.example" in resp.text:
        case.failures.append("link: a share link names evil.example")
    # DNS rebinding: Host and Origin agree on a name this server does not answer to: 403.
    share(
        "Host and Origin both evil.example (rebinding)",
        {"host": "evil.example", "origin": "http://evil.example"},
        refuse=True,
        fld="host",
    )
    # A result stream for an id nobody was given: a clean 404, not 200 and a dropped line.
    p.request(
        "/gradio_api/call/<api>/<id>",
        "GET an unknown event id",
        "GET",
        "gradio_api/call/complete/0123456789abcdef",
        expect_refusal=True,
    )
    # Fields /v1 would have ignored are refused by name.
    chat = {"model": "tiny-starcoder", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    for field, value in (
        ("response_format", {"type": "json_object"}),
        ("tool_choice", "auto"),
        ("function_call", "auto"),
    ):
        p.request(
            "/v1/chat/completions",
            f"{field} {value!r:.30}",
            "POST",
            "v1/chat/completions",
            json={**chat, field: value},
            expect_refusal=True,
            field_=field,
        )
    # A scored prompt past the context or MAX_SCORED_TOKENS: refused, naming the prompt.
    p.request(
        "/v1/completions",
        "echo + logprobs on 8,000 tokens",
        "POST",
        "v1/completions",
        json={
            "model": "tiny-starcoder",
            "prompt": "x = 1\n" * 1600,
            "max_tokens": 1,
            "echo": True,
            "logprobs": 1,
        },
        expect_refusal=True,
        field_="prompt",
    )
    dropped_upload(p)
    gone_client(p)


def dropped_upload(p: Probe) -> None:
    """A client that drops its body mid-upload: nothing logged but one line (the test reads
    the log), and the server answers the next request."""
    case = Case("/gradio_api/call/<api>", "client drops its body mid-upload x 20")
    start = time.monotonic()
    for _ in range(20):
        with socket.create_connection((p.host, p.port), timeout=5) as s:
            s.sendall(
                b"POST /gradio_api/call/complete HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                b'{"data": ["x'
            )
    case.status = p.http.get("healthz", timeout=10).status_code
    case.body = "healthz after the drops"
    case.elapsed_s = time.monotonic() - start
    case.allow_503 = True
    p.record(case)


def gone_client(p: Probe, n: int = 8) -> None:
    """A non-streamed `n` request whose client goes: every choice must stop (and none wait)."""
    case = Case("/v1/completions", f"non-streamed n {n}, client gone after 1 s")
    body = json.dumps(
        {
            "model": "tiny-starcoder",
            "prompt": "def f(x):\n",
            "max_tokens": 400,
            "n": n,
            "temperature": 0.8,
        }
    ).encode()
    start, before = time.monotonic(), busy(p)
    with socket.create_connection((p.host, p.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/json\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        time.sleep(1.0)
    left = busy(p)
    deadline = time.monotonic() + 15
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = busy(p)
    case.status, case.elapsed_s = 200, time.monotonic() - start
    case.body = f"requests generating or waiting: {before:g} before, {left:g} after the client went"
    if left:
        case.failures.append(f"held: {left:g} requests still generating 15 s after the client")
    p.record(case)


def busy(p: Probe) -> float:
    """Requests generating or queued, from /metrics (0 if the probe cannot read them)."""
    r = p.http.get("metrics", timeout=10)
    if r.status_code != 200:
        return 0.0
    return sum(
        float(line.split()[1])
        for line in r.text.splitlines()
        if line.startswith(("playground_active_requests ", "playground_queue_depth "))
    )
