"""RemoteEngine against a real `transformers serve` on loopback serving the same model offline.

vLLM and TGI cannot run here; their documented error shapes (429, vLLM's context-length 400,
`[DONE]` and `stop_reason`) are replayed by a small stdlib server instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest
from model.engines.remote import RemoteEngine
from model.errors import PlaygroundError
from model.prompts.families import detect_fim_template
from model.prompts.templates import fim_prompt
from tests.fakes_vllm import send_json

GREEDY = GenerationParams(max_new_tokens=16, temperature=0)  # repetition_penalty 1.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_url(model_dir, tmp_path_factory):
    exe = shutil.which("transformers")
    if exe is None:
        pytest.fail("the `transformers` CLI is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [exe, "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def remote(serve_url, model_dir):
    eng = RemoteEngine(serve_url, tokenizer=model_dir)
    yield eng
    eng.close()


def collect(engine, prompt, params=GREEDY, cancel=None):
    events = list(engine.stream(GenerationRequest(prompt, params), cancel or CancelToken()))
    assert isinstance(events[-1], Done)
    return "".join(e.text for e in events if isinstance(e, Delta)), events


def test_streams_greedy_like_the_local_engine(remote, engine):
    text, events = collect(remote, "class A:")
    assert len([e for e in events if isinstance(e, Delta)]) > 1  # streamed, not one blob
    done = events[-1]
    assert done.reason in ("length", "eos") and done.generated_tokens > 1
    # Same greedy continuation, so repetition_penalty reached the server (generation_config).
    local, _ = collect(engine, "class A:")
    assert text == local
    assert remote.flavor == "transformers"  # learnt from the server's 422
    assert remote.info.context_length == engine.info.context_length
    assert remote.count_tokens("class A:") == engine.count_tokens("class A:")


def test_seeded_sampling_reaches_the_server(remote):
    params = GenerationParams(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=3)
    a, _ = collect(remote, "def foo(x):", params)
    b, _ = collect(remote, "def foo(x):", params)
    assert a == b


def test_stop_sequence(remote):
    params = GenerationParams(max_new_tokens=24, temperature=0)
    full, _ = collect(remote, "class A:", params)
    assert len(full) > 6
    stop = full[3:6]
    cut, events = collect(
        remote, "class A:", GenerationParams(max_new_tokens=24, temperature=0, stop=(stop,))
    )
    assert events[-1].reason == "stop"
    assert cut == full[: full.index(stop)]


def test_fim_sends_the_formatted_prompt(remote, engine):
    template = detect_fim_template(remote.info.special_tokens)
    assert template is not None
    prompt, _, _ = fim_prompt("def add(a, b):\n    <FILL_HERE>\n", template, remote.info.model_id)
    params = GenerationParams(max_new_tokens=12, temperature=0, stop=template.stop_tokens)
    middle, events = collect(remote, prompt, params)
    local, _ = collect(engine, prompt, params)
    assert middle == local
    assert events[-1].reason in ("eos", "length", "stop")


def test_context_overflow_is_a_clear_error(remote, serve_url, model_dir):
    long_prompt = "def foo(x): return x\n" * 200
    with pytest.raises(PlaygroundError) as err:
        collect(remote, long_prompt)
    assert err.value.kind == "validation" and "must be <=" in err.value.message
    # Without our own check (unknown context), the server's failure is mapped too.
    blind = RemoteEngine(serve_url, tokenizer=model_dir, context_length=10**6)
    try:
        _, events = collect(blind, long_prompt)
        assert events[-1].reason == "error" and events[-1].error_kind == "validation"
        assert "`max_new_tokens` must fit the model server's context" in events[-1].error
    finally:
        blind.close()


def test_cancel_closes_the_stream(remote):
    cancel = CancelToken()
    events = []
    params = GenerationParams(max_new_tokens=120, temperature=0, repetition_penalty=1.0)
    for event in remote.stream(GenerationRequest("class A:", params), cancel):
        events.append(event)
        if isinstance(event, Delta):
            cancel.cancel()
    assert events[-1].reason == "cancelled"
    assert remote.health() == (True, "ok")


def test_server_down(model_dir):
    down = RemoteEngine(f"http://127.0.0.1:{free_port()}", model="m", tokenizer=model_dir)
    _, events = collect(down, "class A:", GenerationParams(max_new_tokens=4))
    assert events[-1].reason == "error" and events[-1].error_kind == "engine"
    assert "not reachable" in events[-1].error
    assert down.health()[0] is False


# -- vLLM / TGI response shapes ------------------------------------------------------------


class _Canned(BaseHTTPRequestHandler):
    replies: ClassVar[dict] = {}
    bodies: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        status, payload = self.replies[body["prompt"]]
        if status == 200:
            self.send_response(status)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for chunk in payload:
                self.wfile.write(f"data: {chunk}\n\n".encode())
            return
        send_json(self, status, payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def vllm_like(model_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    eng = RemoteEngine(
        f"http://127.0.0.1:{server.server_address[1]}", model="m", tokenizer=model_dir
    )
    yield eng
    eng.close()
    server.shutdown()


def test_vllm_shapes_and_errors(vllm_like):
    overflow = (
        "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens."
    )

    def chunk(text, finish=None, stop_reason=None):
        choice = {"text": text, "finish_reason": finish, "stop_reason": stop_reason}
        return json.dumps({"choices": [choice]})

    _Canned.replies = {
        "ok": (200, [chunk("a"), chunk("b"), chunk("", "stop", "Human:"), "[DONE]"]),
        "busy": (429, {"object": "error", "message": "rate limited"}),
        "unavailable": (503, {"detail": "overloaded"}),
        "long": (400, {"object": "error", "message": overflow}),
        "bad": (422, {"detail": "top_p must be in (0, 1]"}),
    }
    text, events = collect(vllm_like, "ok", GenerationParams(max_new_tokens=4, stop=("Human:",)))
    assert text == "ab" and events[-1].reason == "stop"
    sent = _Canned.bodies[-1]
    assert sent["stop"] == ["Human:"] and sent["repetition_penalty"] == 1.2
    assert vllm_like.flavor == "auto"  # no 422 "Unexpected fields": stays OpenAI + extras
    for prompt, kind in [("busy", "busy"), ("unavailable", "busy"), ("long", "validation")]:
        with pytest.raises(PlaygroundError) as err:
            collect(vllm_like, prompt, GenerationParams(max_new_tokens=4))
        assert err.value.kind == kind, prompt
    assert "must be <=" in err.value.message
    with pytest.raises(PlaygroundError) as err:
        collect(vllm_like, "bad", GenerationParams(max_new_tokens=4))
    assert err.value.kind == "validation" and "top_p must be" in err.value.message


def test_healthz_is_503_when_the_server_is_down(model_dir):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from app.metrics import EngineMetrics, add_ops_routes

    down = RemoteEngine(f"http://127.0.0.1:{free_port()}", model="m", tokenizer=model_dir)
    metrics = EngineMetrics()
    api = FastAPI()
    add_ops_routes(api, lambda: {"m": metrics.wrap(down)}, metrics)
    reply = TestClient(api).get("/healthz")
    assert reply.status_code == 503 and reply.json()["status"] == "unavailable"
    assert reply.json()["detail"].startswith("m: ")


def test_concurrent_first_requests_all_learn_the_dialect(serve_url, model_dir):
    fresh = RemoteEngine(serve_url, tokenizer=model_dir)
    results, errors = [], []

    def run():
        try:
            results.append(collect(fresh, "def f(x):", GenerationParams(max_new_tokens=4))[1][-1])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    fresh.close()
    assert not errors and all(d.reason in ("length", "eos") for d in results)
