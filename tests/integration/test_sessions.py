"""One session, several generations at once: none is lost, a stopped one says so."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from gradio_client import Client

from app.parameters import parse_params

GREEDY = {"max_new_tokens": 24, "temperature": 0, "repetition_penalty": 1.0}


def test_eight_concurrent_api_calls_from_one_client_all_return_their_text(live_app):
    client = Client(live_app.url, verbose=False)
    prompts = [f"def f{i}(x):\n" for i in range(8)]
    jobs = [client.submit(prompt=p, api_name="/complete", **GREEDY) for p in prompts]
    results = [job.result(timeout=120) for job in jobs]
    for prompt, text in zip(prompts, results, strict=True):
        assert text.startswith(prompt) and len(text) > len(prompt), (prompt, text)


def _request(session: str):
    return SimpleNamespace(
        session_hash=session, client=SimpleNamespace(host="127.0.0.1"), headers={}, request=None
    )


def test_a_chat_does_not_stop_the_completion_running_in_another_tab(live_app):
    generate = live_app.handlers.generate
    request = _request("one-browser-tab")
    params = parse_params(max_new_tokens=48, temperature=0, repetition_penalty=1.0)
    completion = generate.complete("import os\n", params, request, tab="completion")
    first = next(completion)  # the completion is running ...
    chat = list(
        generate.assist("How do I sort a list?", [], params, request, tab="assistant")
    )  # fmt: skip  ... when a chat starts
    rest = [first, *completion]
    assert rest[-1].done.reason != "cancelled" and rest[-1].generated
    assert chat[-1].done.reason != "cancelled"


def test_stop_and_supersede_are_said_in_the_status(live_app):
    generate = live_app.handlers.generate
    request = _request("stopper")
    params = parse_params(max_new_tokens=400, temperature=0, repetition_penalty=1.0)
    run = generate.complete("# count\n1\n2\n", params, request, tab="completion")
    next(run)
    threading.Timer(0.2, generate.stop, (request, "completion")).start()
    final = list(run)[-1]
    assert final.done.reason == "cancelled" and "stopped by you" in final.status

    old = generate.fill("def f():\n    <FILL_HERE>\n", params, request, tab="fim")
    next(old)
    new = generate.fill("def g():\n    <FILL_HERE>\n", params, request, tab="fim")
    next(new)
    final = list(old)[-1]
    assert final.done.reason == "cancelled"
    assert "you started a new generation in this tab" in final.status
    new.close()
