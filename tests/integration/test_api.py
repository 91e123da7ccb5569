"""The real app on a free port, driven through the named API endpoints with gradio_client."""

import pytest
from gradio_client.exceptions import AppError

GREEDY = {"max_new_tokens": 16, "temperature": 0, "repetition_penalty": 1.0}


def _stream(client, api_name, **kwargs):
    job = client.submit(api_name=api_name, **kwargs)
    partials = list(job)
    return partials, job.result()


def test_named_endpoints_are_published(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/complete", "/fill", "/assist"} <= names


def test_complete_streams_partials_and_returns_prompt_plus_continuation(client):
    prompt = "def fibonacci(n):\n"
    partials, final = _stream(client, "/complete", prompt=prompt, **GREEDY)
    assert final.startswith(prompt) and len(final) > len(prompt)
    assert len(partials) >= 2
    assert all(final.startswith(p) for p in partials)  # each partial grows the same text


def test_greedy_same_prompt_gives_same_text_twice(client):
    a = client.predict(prompt="import os\n", api_name="/complete", **GREEDY)
    b = client.predict(prompt="import os\n", api_name="/complete", **GREEDY)
    assert a == b


def test_fill_returns_prefix_middle_suffix(client):
    code = "def add(a, b):\n    <FILL_HERE>\n\n\nprint(add(1, 2))\n"
    partials, final = _stream(client, "/fill", prompt=code, **GREEDY)
    prefix, suffix = code.split("<FILL_HERE>")
    assert final.startswith(prefix) and final.endswith(suffix)
    assert "<fim_" not in final and "<|endoftext|>" not in final
    assert partials


def test_assist_returns_a_reply_without_stop_markers(client):
    partials, final = _stream(client, "/assist", message="How do I reverse a list?", **GREEDY)
    assert isinstance(final, str) and all(isinstance(p, str) for p in partials)
    for marker in ("Human:", "Assistant:", "-----"):
        assert marker not in final


@pytest.mark.parametrize(
    "api_name,kwargs,needle",
    [
        ("/complete", {"prompt": "   "}, "`prompt` is empty"),
        (
            "/complete",
            {"prompt": "x", "temperature": 3.0},
            "`temperature` must be in [0, 1]; got 3",
        ),
        ("/complete", {"prompt": "x", "max_new_tokens": 100_000}, "[1, 8192]; got 100000"),
        ("/complete", {"prompt": "a\x00b"}, "NUL byte"),
        (
            "/complete",
            {"prompt": "x", "temperature": "nan"},
            "`temperature` must be a finite number",
        ),
        ("/complete", {"prompt": "x", "stop": [str(i) for i in range(33)]}, "at most 32"),
        ("/fill", {"prompt": "def f():\n    pass\n"}, "exactly one <FILL_HERE> marker"),
        ("/fill", {"prompt": "<FILL_HERE> and <FILL_HERE>"}, "found 2"),
        ("/assist", {"message": ""}, "`message` is empty"),
        ("/assist", {"message": "hi", "top_p": 0}, "`top_p` must be in (0, 1]; got 0"),
    ],
)
def test_bad_input_gets_a_clear_message_per_endpoint(client, api_name, kwargs, needle):
    with pytest.raises(AppError) as err:
        client.predict(api_name=api_name, **kwargs)
    assert needle in str(err.value)


def test_prompt_over_the_context_names_both_numbers(client, engine):
    n = engine.info.context_length
    with pytest.raises(AppError) as err:
        client.predict(prompt="x = 1\n" * n, max_new_tokens=10, api_name="/complete")
    msg = str(err.value)
    assert f"must be <= {n}" in msg and "10 `max_new_tokens`" in msg


def test_oversized_prompt_is_refused_with_the_limit(client):
    with pytest.raises(AppError) as err:
        client.predict(prompt="x" * 131_073, api_name="/complete")
    assert "131,073 bytes; the limit is 131,072 bytes" in str(err.value)


def test_healthz_and_metrics(live_app, client):
    import re
    import urllib.request

    client.predict(prompt="def f(", api_name="/complete", **GREEDY)  # the model is loaded
    with urllib.request.urlopen(live_app.url + "healthz", timeout=10) as r:
        assert r.status == 200 and b'"ok"' in r.read()
    with urllib.request.urlopen(live_app.url + "metrics", timeout=10) as r:
        text = r.read().decode()
    tokens = re.search(r"^playground_generated_tokens_total (\S+)$", text, re.M)
    assert tokens and float(tokens.group(1)) > 0
    for name in (
        "playground_queue_depth",
        "playground_active_requests",
        "playground_time_to_first_token_seconds_bucket",
        "playground_worker_restarts",
    ):
        assert name in text


def test_gradio_monitoring_is_not_exposed(live_app, client):
    """Ops data is /metrics only. Gradio's monitoring summary, on by default, listed the app's
    functions with their latencies to anyone, and rebuilt it with pandas after every request."""
    import urllib.error
    import urllib.request

    client.predict(prompt="def f(", api_name="/complete", **GREEDY)
    for path in ("monitoring/summary", "monitoring"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(live_app.url + path, timeout=10)
        assert err.value.code == 403, path
