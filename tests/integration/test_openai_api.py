"""The OpenAI-compatible /v1 routes, driven by the real `openai` client and by the playground's
own RemoteEngine (one playground as another's ENGINE_URL), against the real app."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest
from model.errors import PlaygroundError
from tests.dtypes import TINY_AUTO_DTYPE
from tests.integration.test_attribution_flow import _reproducing_prompt, indexed_docs  # noqa: F401 (fixture)

GREEDY = {"temperature": 0, "extra_body": {"repetition_penalty": 1.0}}


@pytest.fixture(scope="module")
def oai(live_app):
    return openai.OpenAI(base_url=live_app.url + "v1", api_key="unused", max_retries=0)


def test_models_lists_the_registry(oai, live_app):
    ids = {m.id for m in oai.models.list()}
    assert ids == set(live_app.handlers.registry.ids)


def test_completion_and_its_stream_agree(oai):
    kwargs = {"model": "tiny-starcoder", "prompt": "def fibonacci(n):\n", "max_tokens": 24}
    whole = oai.completions.create(**kwargs, **GREEDY)
    assert whole.choices[0].text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens > 0 and whole.model == "tiny-starcoder"
    chunks = list(oai.completions.create(**kwargs, stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    echoed = oai.completions.create(**kwargs, echo=True, **GREEDY)
    assert echoed.choices[0].text == kwargs["prompt"] + whole.choices[0].text


def test_suffix_fills_in_the_middle(oai):
    prefix, suffix = "def add(a, b):\n    ", "\n\n\nprint(add(1, 2))\n"
    out = oai.completions.create(
        model="tiny-starcoder", prompt=prefix, suffix=suffix, max_tokens=16, **GREEDY
    )
    middle = out.choices[0].text
    assert middle and "<fim_" not in middle and "<|endoftext|>" not in middle


def test_chat_answers_and_streams(oai):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "How do I reverse a list in Python?"}]  # fmt: skip
    reply = oai.chat.completions.create(
        model="tiny-starcoder", messages=messages, max_tokens=24, **GREEDY
    )
    assert reply.choices[0].message.role == "assistant"
    text = reply.choices[0].message.content
    assert "Human:" not in text and "-----" not in text
    chunks = list(
        oai.chat.completions.create(
            model="tiny-starcoder", messages=messages, max_tokens=24, stream=True, **GREEDY
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed.strip() == text.strip()


# Greedy, tiny-starcoder counts on from here to max_tokens (480 tokens: 1.2 s alone), so no
# early end hides a generation left running.
COUNTING = "numbers = [1, 2, 3, 4, 5, 6, 7, 8,"

# What Continue's `provider: openai` sends for tab autocomplete against a custom apiBase: the
# model's FIM template as a raw prompt, with every stop of that template and its own.
CONTINUE_STOPS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>",
                  "</fim_middle>", "</code>", "\n\n", "\r\n\r\n", "/src/", "#- coding: utf-8",
                  "```"]  # fmt: skip


def test_an_editors_autocomplete_request_is_served(live_app):
    body = {"model": "tiny-starcoder", "max_tokens": 64, "temperature": 0.01, "stream": True,
            "stop": CONTINUE_STOPS, "prompt": "<fim_prefix>def add(a, b):\n    <fim_suffix>\n\n"
            "print(add(1, 2))\n<fim_middle>"}  # fmt: skip
    with httpx.stream("POST", live_app.url + "v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(c["choices"][0]["text"] for c in map(json.loads, (x[6:] for x in lines[:-1])))
    assert text and not any(stop in text for stop in CONTINUE_STOPS)


def test_chat_takes_text_parts_the_newer_token_limit_and_the_developer_role(oai):
    messages = [{"role": "developer", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "text", "text": "How do I reverse "},
                                             {"type": "text", "text": "a list in Python?"}]}]  # fmt: skip
    reply = oai.chat.completions.create(
        model="tiny-starcoder", messages=messages, max_completion_tokens=3, **GREEDY
    )
    assert reply.usage.completion_tokens <= 3 and reply.choices[0].finish_reason == "length"
    same = oai.chat.completions.create(
        model="tiny-starcoder",
        max_tokens=3,
        **GREEDY,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "How do I reverse a list in Python?"},
        ],
    )
    assert same.choices[0].message.content == reply.choices[0].message.content
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model="tiny-starcoder",
            max_tokens=3,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}
            ],
        )
    assert "`messages[0].content[1]` must be a text part; got 'image_url'" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"temperature": 3}, openai.BadRequestError, "`temperature` must be in [0, 1]; got 3"),
        (
            {"max_tokens": 100_000},
            openai.BadRequestError,
            "`max_tokens` must be in [1, 8192]; got 100000",
        ),
        ({"model": "gpt-4"}, openai.NotFoundError, "The model `gpt-4` does not exist here"),
        ({"prompt": "x" * 200_000}, openai.BadRequestError, "the limit is 131,072 bytes"),
        ({"logprobs": 6}, openai.BadRequestError, "`logprobs` must be in [0, 5]; got 6"),
        (
            {"frequency_penalty": 0.5},
            openai.BadRequestError,
            "`frequency_penalty` is not supported",
        ),
        ({"stop": [str(i) for i in range(33)]}, openai.BadRequestError, "at most 32 sequences"),
        (
            {"logprobs": 2, "echo": True, "suffix": "\n"},
            openai.BadRequestError,
            "`echo` with `logprobs` scores a prompt, not a fill",
        ),
    ],
)
def test_bad_requests_get_openai_errors_with_precise_messages(oai, kwargs, error, needle):
    request = {"model": "tiny-starcoder", "prompt": "x = 1", "max_tokens": 4, **kwargs}
    with pytest.raises(error) as err:
        oai.completions.create(**request)
    assert needle in err.value.body["message"]
    assert err.value.body["param"] in (
        "temperature",
        "max_tokens",
        "model",
        "prompt",
        "logprobs",
        "echo",
        "frequency_penalty",
        "stop",
    )


def test_completion_logprobs_add_up_to_the_text_and_rank_the_greedy_pick_first(oai):
    kwargs = {"model": "tiny-starcoder", "prompt": "def fibonacci(n):", "max_tokens": 12}
    whole = oai.completions.create(**kwargs, logprobs=3, **GREEDY)
    choice = whole.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and 0 < len(lp.tokens) <= 12
    assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value <= 0 and len(top) == 3
        # Greedy: the chosen token is the likeliest one, with the same log-probability.
        assert abs(max(top.values()) - value) < 1e-4 and top.get(token, value) == value
    streamed = list(oai.completions.create(**kwargs, logprobs=3, stream=True, **GREEDY))
    tokens = [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    values = [
        v for c in streamed if c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs
    ]
    assert tokens == lp.tokens
    assert max(abs(a - b) for a, b in zip(values, lp.token_logprobs, strict=True)) < 1e-4
    # A sampled request (batched with its own temperature) reports the drawn tokens too.
    sampled = oai.completions.create(**kwargs, logprobs=0, temperature=1.0)
    assert "".join(sampled.choices[0].logprobs.tokens) == sampled.choices[0].text
    assert all(not top for top in sampled.choices[0].logprobs.top_logprobs)
    plain = oai.completions.create(**kwargs, **GREEDY)
    assert plain.choices[0].logprobs is None and plain.choices[0].text == choice.text


def test_a_healed_first_token_reads_the_same_among_its_alternatives(oai):
    """A prompt ending in a newline is healed: the model re-writes the backed-off whitespace,
    and the output shows only what follows it. The chosen token and its alternatives are named
    alike (a healed token came back as "" while its alternatives said " ")."""
    kwargs = {"model": "tiny-starcoder", "prompt": "def fibonacci(n):\n", "max_tokens": 6}
    choice = oai.completions.create(**kwargs, logprobs=3, **GREEDY).choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert token in top and abs(top[token] - value) < 1e-4  # greedy: it is the likeliest


def test_echo_with_logprobs_scores_the_prompt_as_generation_scored_those_tokens(oai):
    """What evaluation harnesses ask (lm-eval's loglikelihood: echo, logprobs, max_tokens 1):
    text written greedily and then sent back as a prompt gets the same log-probabilities."""
    prompt = "def fibonacci(n):"
    wrote = oai.completions.create(
        model="tiny-starcoder", prompt=prompt, max_tokens=8, logprobs=1, **GREEDY
    ).choices[0]
    scored = oai.completions.create(
        model="tiny-starcoder",
        prompt=prompt + wrote.text,
        max_tokens=1,
        logprobs=2,
        echo=True,
        **GREEDY,
    ).choices[0]
    lp = scored.logprobs
    assert scored.text.startswith(prompt + wrote.text)
    assert "".join(lp.tokens) == scored.text
    assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing before it
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and all(
        len(t) == 2 for t in lp.top_logprobs[1:]
    )
    # The written tokens' scores, found again among the prompt's (the last 4, clear of where
    # the prompt and the text meet, which may tokenize differently).
    n = len(wrote.logprobs.tokens)
    assert lp.tokens[-1 - 4 : -1] == wrote.logprobs.tokens[n - 4 :]
    again, first = lp.token_logprobs[-1 - 4 : -1], wrote.logprobs.token_logprobs[n - 4 :]
    # the same sums, in another batch: fp32's rounding, or bf16's (DTYPE=auto on an AMX CPU)
    tolerance = 1e-3 if TINY_AUTO_DTYPE == "float32" else 1e-2
    assert max(abs(a - b) for a, b in zip(again, first, strict=True)) < tolerance
    streamed = list(
        oai.completions.create(
            model="tiny-starcoder",
            prompt=prompt + wrote.text,
            max_tokens=1,
            logprobs=2,
            echo=True,
            stream=True,
            **GREEDY,
        )
    )
    tokens = [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert tokens == lp.tokens
    assert streamed[0].choices[0].text == prompt + wrote.text  # the echo, scored, comes first


def test_a_prompt_of_token_ids_completes_as_its_text_does(oai, engine):
    text = "def fibonacci(n):"
    ids = engine.tokenize(text)
    kwargs = {"model": "tiny-starcoder", "max_tokens": 12, **GREEDY}
    by_text = oai.completions.create(prompt=text, **kwargs).choices[0].text
    by_ids = oai.completions.create(prompt=ids, echo=True, **kwargs).choices[0]
    assert by_ids.text == text + by_text  # the echo is the ids' text
    scored = oai.completions.create(prompt=[ids], echo=True, logprobs=0, **kwargs).choices[0]
    assert "".join(scored.logprobs.tokens[: len(ids)]) == text  # the prompt's, scored
    assert scored.logprobs.token_logprobs[0] is None and scored.text == by_ids.text
    last = len(engine.tokenizer) - 1
    for bad, needle in [
        ([10**9], f"`prompt` token ids must be whole numbers in [0, {last}]; got 1000000000"),
        ([1, "x"], "a list of token ids, or a non-empty list of those; got a list of other"),
        (None, "a list of token ids, or a non-empty list of those; got NoneType"),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            oai.completions.create(prompt=bad, **kwargs)
        assert needle in err.value.body["message"] and err.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(prompt=ids, suffix="\n", **kwargs)
    assert "`suffix` takes text, with a `prompt` of text" in err.value.body["message"]


def test_a_harness_loglikelihood_request_matches_the_models_own_forward(oai, engine):
    """lm-evaluation-harness's request, byte for byte: context + continuation as token ids,
    echo, logprobs 1, max_tokens 1; it sums token_logprobs[len(context):-1]."""
    import torch

    context, continuation = "def add(a, b):\n    return a", " + b"
    ctx, ids = engine.tokenize(context), engine.tokenize(context + continuation)
    assert ids[: len(ctx)] == ctx
    out = (
        oai.completions.create(
            model="tiny-starcoder",
            prompt=ids,
            temperature=0,
            max_tokens=1,
            logprobs=1,
            seed=1234,
            echo=True,
        )
        .choices[0]
        .logprobs
    )
    assert len(out.token_logprobs) == len(ids) + 1  # the prompt's, and the one token written
    with torch.inference_mode():
        rows = engine.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    want = sum(rows[i - 1, ids[i]].item() for i in range(len(ctx), len(ids)))
    assert abs(sum(out.token_logprobs[len(ctx) : -1]) - want) < 1e-4


def test_every_token_written_has_an_entry_the_end_token_too(oai):
    ended = 0
    for seed in range(8):
        choice = oai.completions.create(
            model="tiny-starcoder",
            prompt="x = ",
            max_tokens=40,
            temperature=1.0,
            logprobs=0,
            seed=seed,
        )
        lp, written = choice.choices[0].logprobs, choice.usage.completion_tokens
        assert len(lp.tokens) == written and "".join(lp.tokens) == choice.choices[0].text
        ended += choice.choices[0].finish_reason == "stop"  # no stops sent: the end token
    assert ended, "no sample ended by the end token: pick other seeds"


def test_several_prompts_and_n_give_one_choice_each_in_order(oai, live_app):
    kwargs = {"model": "tiny-starcoder", "max_tokens": 10, **GREEDY}
    prompts = ["def fibonacci(n):\n", "import os\n"]
    alone = [oai.completions.create(prompt=p, **kwargs) for p in prompts]
    both = oai.completions.create(prompt=prompts, n=2, **kwargs)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    want = [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert [c.text for c in both.choices] == want
    assert both.usage.completion_tokens == 2 * sum(a.usage.completion_tokens for a in alone)
    streamed = list(oai.completions.create(prompt=prompts, stream=True, **kwargs))
    texts = {0: "", 1: ""}
    for c in streamed:
        texts[c.choices[0].index] += c.choices[0].text
    assert [texts[0], texts[1]] == [a.choices[0].text for a in alone]
    with_usage = [c for c in streamed if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0].usage.total_tokens == sum(
        a.usage.total_tokens for a in alone
    )  # once, for all choices, on the last to finish
    chat = oai.chat.completions.create(
        model="tiny-starcoder",
        n=2,
        max_tokens=6,
        temperature=1.0,
        messages=[{"role": "user", "content": "Sort a list?"}],
    )
    assert [c.index for c in chat.choices] == [0, 1] and all(
        c.message.content for c in chat.choices
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"n": 17}, "`n` must be a whole number in [1, 16]; got 17"),
        ({"prompt": ["x = 1"] * 9, "n": 2}, "at most 16 choices; got 18 (9 prompts x `n` 2)"),
        ({"n": 2, "extra_body": {"attribution": True}}, "`attribution` is for one choice"),
        ({"prompt": [COUNTING, "y" * 200_000]}, "the limit is 131,072 bytes"),
    ],
)
def test_choices_are_bounded_and_one_refusal_refuses_the_request(oai, live_app, kwargs, needle):
    import time

    _, engine = live_app.handlers.generate.playground.engines.choose("tiny-starcoder", "completion")
    request = {"model": "tiny-starcoder", "prompt": "x = 1", "max_tokens": 480, **GREEDY, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(**request)
    assert needle in err.value.body["message"]
    deadline = time.monotonic() + 0.5  # a choice that had started is stopped with the refusal
    while engine.stats()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.stats()["active"] == 0


def test_chat_logprobs_come_in_chats_shape(oai):
    messages = [{"role": "user", "content": "How do I reverse a list in Python?"}]
    reply = oai.chat.completions.create(
        model="tiny-starcoder",
        messages=messages,
        max_tokens=8,
        logprobs=True,
        top_logprobs=2,
        **GREEDY,
    )
    content = reply.choices[0].logprobs.content
    assert 0 < len(content) <= 8
    for item in content:
        assert item.logprob <= 0 and bytes(item.bytes).decode("utf-8", "replace") == item.token
        assert len(item.top_logprobs) == 2 and item.top_logprobs[0].logprob >= item.logprob - 1e-4
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model="tiny-starcoder", messages=messages, max_tokens=4, logprobs=True, top_logprobs=9
        )
    assert "`top_logprobs` must be a whole number in [0, 5]; got 9" in err.value.body["message"]


def test_api_keys_are_required_when_configured(attribution_index, tmp_path_factory):
    from tests.conftest import _serve

    serve = _serve(
        ["--model", "tiny-starcoder", "--api-keys", "k1,k2"], attribution_index, tmp_path_factory
    )
    app = next(serve)
    try:
        url = app.url + "v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=url, api_key="k2", max_retries=0)
        assert {m.id for m in ok.models.list()}
        # The page and its Gradio API need a key too (tests/integration/test_access_app.py).
        assert httpx.get(app.url).status_code == 401
    finally:
        serve.close()


def test_another_playground_can_use_this_one_as_its_engine(live_app):
    """A second playground's RemoteEngine (ENGINE_URL) streams from our own /v1."""
    from model.engines.remote import RemoteEngine

    engine = RemoteEngine(
        live_app.url.rstrip("/"),
        model="tiny-starcoder",
        tokenizer=str(live_app.handlers.registry.get("tiny-starcoder").location),
    )
    try:
        params = GenerationParams(max_new_tokens=12, temperature=0, repetition_penalty=1.0)
        events = list(engine.stream(GenerationRequest("def f(x):\n", params), CancelToken()))
        text = "".join(e.text for e in events if isinstance(e, Delta))
        assert text and isinstance(events[-1], Done) and events[-1].reason in ("length", "eos")
        # Its health check is one our /v1 takes: a whitespace prompt made it unhealthy for ever.
        assert engine.health() == (True, "ok")
        # min_tokens and ignore_eos travel to the server (vLLM's names): the length is fixed.
        fixed = GenerationParams(
            max_new_tokens=24, temperature=0, repetition_penalty=1.0, min_tokens=24, ignore_eos=True
        )
        sent = engine._body(GenerationRequest("x", fixed), (), (), stream=False)
        assert sent["min_tokens"] == 24 and sent["ignore_eos"] is True
        events = list(engine.stream(GenerationRequest("def f(x):\n", fixed), CancelToken()))
        assert events[-1].generated_tokens == 24, events[-1]
    finally:
        engine.close()


def test_attribution_is_attached_when_asked(oai, engine, indexed_docs):  # noqa: F811
    prompt, doc = _reproducing_prompt(engine, indexed_docs)  # makes the model copy a file
    request = {"model": "tiny-starcoder", "prompt": prompt, "max_tokens": 6, "temperature": 0}
    plain = oai.completions.create(**request, extra_body={"repetition_penalty": 1.0})
    assert "attribution" not in (plain.model_extra or {})
    asked = oai.completions.create(
        **request, extra_body={"repetition_penalty": 1.0, "attribution": True}
    )
    spans = asked.model_extra["attribution"]
    assert spans and any(doc.path == src["path"] for span in spans for src in span["sources"])
    assert asked.choices[0].text == plain.choices[0].text


def test_fim_through_a_remote_model_without_fim_tokens_is_refused_clearly(live_app):
    """A playground whose ENGINE_URL serves a model without FIM tokens (SmolLM2 here) cannot
    rerank over HTTP: FIM says so and names what can, instead of sending a wrong prompt."""
    from model.engines.remote import RemoteEngine
    from tests.fakes import playground_over

    engine = RemoteEngine(live_app.url.rstrip("/"), model="smollm2-135m-instruct")
    try:
        playground = playground_over(engine)
        params = GenerationParams(max_new_tokens=8)
        with pytest.raises(PlaygroundError) as err:
            list(playground.fill("def f():\n    <FILL_HERE>\n", params, CancelToken()))
        assert err.value.field == "model" and err.value.kind == "unsupported"
        assert "no fill-in-the-middle tokens" in err.value.message
        assert "remote server (ENGINE_URL)" in err.value.message
    finally:
        engine.close()


def test_a_client_that_goes_away_mid_stream_frees_its_slot_at_once(live_app):
    """An editor cancels a completion by closing the connection: the model must stop writing
    for it, not run on to max_tokens in a slot others wait for."""
    import time

    _, engine = live_app.handlers.generate.playground.engines.choose("tiny-starcoder", "completion")
    body = {"model": "tiny-starcoder", "prompt": COUNTING,
            "max_tokens": 480, "stream": True, **GREEDY["extra_body"], "temperature": 0}  # fmt: skip
    with httpx.stream("POST", live_app.url + "v1/completions", json=body, timeout=60) as r:
        chunks = r.iter_lines()
        assert next(line for line in chunks if line.startswith("data: "))
        assert engine.stats()["active"] == 1
    deadline = time.monotonic() + 0.5  # measured: 20 ms
    while engine.stats()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.stats()["active"] == 0, "the closed stream's generation still holds its slot"


def test_one_model_can_be_retrieved_as_sdk_helpers_ask(live_app):
    oai = openai.OpenAI(base_url=live_app.url + "v1", api_key="unused", max_retries=0)
    model = oai.models.retrieve("tiny-starcoder")
    assert model.id == "tiny-starcoder" and model.model_extra["max_model_len"] == 512
    with pytest.raises(openai.NotFoundError) as err:
        oai.models.retrieve("gpt-5")
    assert "does not exist here" in err.value.body["message"] and "tiny-starcoder" in str(err.value)
