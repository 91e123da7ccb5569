"""The three modes (app/services/playground.py) over a FakeEngine: the text, the marked part,
the status line and the refusals a user sees."""

import re
from dataclasses import replace

import pytest

from app.ratelimit import RateLimited
from app.services.playground import Playground
from model.engine import CancelToken, ContextLength, GenerationParams, Infill
from model.engines.pool import EnginePool
from model.errors import PlaygroundError
from model.prompts.templates import ASSISTANT_STOPS, TaPrompt, Turn
from model.registry import Registry
from tests.fakes import APP_DEFAULTS, FakeEngine, fake_playground, fake_pool

STATUS = r"(\d+) tokens in \d+\.\d s \(\d+\.\d tokens/s\) · prompt (\d+) tokens · (.+)"


def run(outputs) -> list:
    return list(outputs)


def complete(engine, prompt="def f(n):\n", **params):
    pg = fake_playground(engine)
    return run(pg.complete(prompt, GenerationParams(**params), CancelToken()))


# -- completion ------------------------------------------------------------------------------


def test_completion_streams_the_prompt_then_what_the_model_wrote():
    fake = FakeEngine("    return n\n")
    outs = complete(fake)
    assert [o.text for o in outs[:2]] == ["def f(n):\n ", "def f(n):\n  "]
    assert {o.status for o in outs[:-1]} == {"Generating…"}
    final = outs[-1]
    assert final.text == "def f(n):\n    return n\n"
    assert final.text[slice(*final.generated_span)] == "    return n\n"
    generated, prompt, why = re.fullmatch(STATUS, final.status).groups()
    assert (generated, prompt, why) == ("13", "10", "end of text · fake-coder")
    assert fake.requests[0].prompt == "def f(n):\n"  # the code as written is the model prompt


@pytest.mark.parametrize(
    "reply, params, generated, why",
    [
        ("    return n\n", {}, "    return n\n", "end of text"),
        ("    return n\n\ndef g", {"stop": ("\n\n",)}, "    return n", "stop sequence"),
        ("    return n\n", {"max_new_tokens": 6}, "    re", "max_new_tokens reached"),
    ],
)
def test_the_status_says_why_the_generation_ended(reply, params, generated, why):
    final = complete(FakeEngine(reply), **params)[-1]
    assert final.generated == generated and final.text == "def f(n):\n" + generated
    assert re.fullmatch(STATUS, final.status).group(3) == f"{why} · fake-coder"


def test_stop_keeps_what_was_written_and_says_who_stopped_it():
    pg = fake_playground(FakeEngine("    return n\n"))
    cancel = CancelToken()
    outputs = pg.complete("def f(n):\n", GenerationParams(), cancel)
    next(outputs)
    cancel.cancel()
    final = run(outputs)[-1]
    assert final.done.reason == "cancelled" and final.text == "def f(n):\n "
    assert final.status.endswith("· stopped by you · fake-coder")


def test_waiting_in_the_queue_is_shown_with_the_position():
    outs = complete(FakeEngine("x", queued=(2, 1)))
    assert [o.status for o in outs[:2]] == [
        "Waiting for a free slot: position 2 in the queue…",
        "Waiting for a free slot: position 1 in the queue…",
    ]
    assert outs[0].text == "def f(n):\n"


@pytest.mark.parametrize(
    "error, kind, message",
    [
        ("Out of memory: lower max_new_tokens.", "oom", "Out of memory: lower max_new_tokens."),
        ("", "engine", "Generation failed."),  # an error that carries no words
    ],
)
def test_an_engine_error_reaches_the_user_as_its_message(error, kind, message):
    fake = FakeEngine("    return n\n", error=error, error_kind=kind, error_after=3)
    with pytest.raises(PlaygroundError) as err:
        complete(fake)
    assert err.value.message == message and err.value.kind == kind


@pytest.mark.parametrize("tokenizes", [True, False])  # False: a remote engine's estimate
def test_a_prompt_too_long_for_the_context_is_refused_naming_both_numbers(tokenizes):
    fake = FakeEngine("x", context_length=64, tokenizes=tokenizes)
    with pytest.raises(PlaygroundError) as err:
        complete(fake, prompt="x" * 60, max_new_tokens=10)
    assert err.value.field == "prompt"
    assert err.value.message == (
        "`prompt` tokens + `max_new_tokens` must be <= 64 (the model's context). "
        "Given: 60 `prompt` tokens and 10 `max_new_tokens`."
    )
    assert fake.requests == []  # refused before the model was asked
    assert complete(fake, prompt="x" * 54, max_new_tokens=10)[-1].done.reason == "eos"


def test_a_context_lowered_by_a_setting_names_the_setting():
    fake = FakeEngine("x", context_length=ContextLength(64, "KV_CACHE_MB=1"))
    with pytest.raises(PlaygroundError, match=r"<= 64 \(the model's context, limited by "):
        complete(fake, prompt="x" * 60, max_new_tokens=10)


def test_rate_limit_counts_generations_per_client_and_not_refused_ones():
    pg = fake_playground(FakeEngine("ok"), rate_limit_per_min=2)
    params = GenerationParams()
    with pytest.raises(PlaygroundError, match="is empty"):
        run(pg.complete("   ", params, CancelToken(), client="10.0.0.1"))  # costs no budget
    for _ in range(2):
        run(pg.complete("a", params, CancelToken(), client="10.0.0.1"))
    with pytest.raises(RateLimited) as err:
        run(pg.complete("a", params, CancelToken(), client="10.0.0.1"))
    assert err.value.kind == "rate_limit"
    assert err.value.message.startswith(
        "Too many generations: the limit is 2 per 60 s per client. Try again in "
    )
    assert run(pg.complete("a", params, CancelToken(), client="10.0.0.2"))[-1].text == "aok"


# -- fill-in-the-middle ----------------------------------------------------------------------

CODE = "def add(a, b):\n    <FILL_HERE>\n\nprint(add(1, 2))\n"
PREFIX, SUFFIX = CODE.split("<FILL_HERE>")


def fill(engine, code=CODE, **params):
    pg = fake_playground(engine)
    return run(pg.fill(code, GenerationParams(**params), CancelToken()))


def test_fill_shows_prefix_middle_suffix_with_the_middle_marked():
    # The model writes the middle, then starts re-writing the suffix: the fill ends there.
    fake = FakeEngine("return a + b\n\nprint(add(1, 2))\n<|endoftext|>")
    final = fill(fake)[-1]
    assert final.text == PREFIX + "return a + b" + SUFFIX
    assert final.text[slice(*final.generated_span)] == "return a + b"
    assert re.fullmatch(STATUS, final.status).group(3) == "stop sequence · fake-coder"
    assert fake.requests[0].prompt == f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"


def test_a_gap_inside_a_line_is_filled_with_one_line():
    final = fill(FakeEngine("sum\nprint(total)"), code="total = <FILL_HERE>(xs)\n")[-1]
    assert final.text == "total = sum(xs)\n" and final.generated == "sum"


def test_the_end_of_text_token_ends_a_fill_and_is_not_shown():
    final = fill(FakeEngine("return a + b<|endoftext|>garbage"))[-1]
    assert final.generated == "return a + b"


@pytest.mark.parametrize("code, found", [("no marker", 0), ("a<FILL_HERE>b<FILL_HERE>", 2)])
def test_a_missing_or_repeated_marker_is_the_users_to_fix(code, found):
    fake = FakeEngine("x")
    with pytest.raises(PlaygroundError) as err:
        fill(fake, code=code)
    assert err.value.field == "prompt"
    assert f"exactly one <FILL_HERE> marker for fill-in-the-middle; found {found}." in str(
        err.value
    )
    assert fake.requests == []


def test_a_model_without_fim_tokens_that_cannot_rerank_is_refused_by_name():
    with pytest.raises(PlaygroundError) as err:
        fill(FakeEngine("x", special_tokens=frozenset()))
    assert err.value.field == "model" and err.value.kind == "unsupported"
    assert "`fake-coder` has no fill-in-the-middle tokens" in err.value.message


def test_a_model_without_fim_tokens_fills_one_line_by_reranking():
    fake = FakeEngine("return a + b", special_tokens=frozenset(), fills_by_rerank=True)
    outs = fill(fake)
    assert fake.requests[0].infill == Infill(PREFIX, SUFFIX, 8)
    assert outs[-1].text == PREFIX + "return a + b" + SUFFIX
    assert outs[-1].notice.startswith("one line, the likeliest of 8 candidates")
    # In words about the line, not a rate: its tokens are those of all 8 candidates and of
    # scoring them, and "1.2 tokens/s" for one line made the tool look broken.
    status = outs[-1].status
    assert re.fullmatch(
        r"picked the likeliest of 8 lines, \d+\.\d s · fake-coder · no FIM "
        r"tokens: temperature, top-p and penalty do not apply",
        status,
    ), status
    assert "tokens/s" not in status


# -- assistant -------------------------------------------------------------------------------

HISTORY = [Turn("hi", "Hello! How can I help?")]


def assist(engine, message="How do I reverse a list?", history=HISTORY, **params):
    pg = fake_playground(engine)
    return run(pg.assist(message, history, GenerationParams(**params), CancelToken()))


def test_the_assistant_reply_is_cut_at_the_next_turn_and_trimmed():
    fake = FakeEngine("  Use `xs[::-1]`.\n\nHuman: and a tuple?")
    outs = assist(fake)
    assert outs[0].text == ""  # the leading spaces are not shown while streaming either
    final = outs[-1]
    assert final.text == final.generated == "Use `xs[::-1]`."
    assert re.fullmatch(STATUS, final.status).group(3) == "stop sequence · fake-coder"
    request = fake.requests[0]
    assert set(ASSISTANT_STOPS) <= set(request.params.stop)
    # BigCode's ta-prompt, then this conversation, then the assistant's turn opened
    assert request.prompt.startswith(TaPrompt.load().preamble)
    assert request.prompt.endswith(
        "Human: hi\n\nAssistant: Hello! How can I help?\n\n"
        "Human: How do I reverse a list?\n\nAssistant:"
    )


def test_a_chat_model_gets_its_own_template_and_the_reply_is_still_cleaned():
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fake = FakeEngine(" Sure.\nHuman: more", chat_template=template, has_chat_template=True)
    final = assist(fake)[-1]
    assert final.text == "Sure."
    assert fake.requests[0].prompt == (
        "<|user|>hi\n<|assistant|>Hello! How can I help?\n"
        "<|user|>How do I reverse a list?\n<|assistant|>"
    )
    assert not set(ASSISTANT_STOPS) & set(fake.requests[0].params.stop)


def test_a_long_conversation_drops_the_examples_and_says_so():
    final = assist(FakeEngine("Sure.", context_length=700))[-1]
    examples = len(TaPrompt.load().dialogues)
    assert final.notice == (
        f"The conversation outgrew the model's context, so {examples} example dialogue(s) "
        "were left out of the prompt."
    )
    assert final.status.endswith(final.notice)


def test_max_new_tokens_beyond_the_context_are_refused_naming_the_limit():
    with pytest.raises(PlaygroundError) as err:
        assist(FakeEngine("x", context_length=256), max_new_tokens=300)
    assert err.value.field == "message"
    assert err.value.message == (
        "`message` tokens + `max_new_tokens` must be <= 256 (the model's context). "
        "Given: 24 `message` tokens and 300 `max_new_tokens`."  # the message alone
    )


def test_a_message_too_long_for_what_is_left_is_refused_with_both_numbers():
    fake = FakeEngine("x", context_length=1000)
    with pytest.raises(PlaygroundError) as err:
        assist(fake, message="x" * 900, history=[], max_new_tokens=200)
    assert err.value.field == "message"
    found = re.fullmatch(
        r"`message` tokens \+ `max_new_tokens` must be <= 1000 \(the model's context\)\. "
        r"Given: (\d+) `message` tokens and 200 `max_new_tokens`\.",
        err.value.message,
    )  # the one overflow message, as every mode and engine says it
    assert int(found.group(1)) > 900  # the message, plus the preamble that is never dropped
    assert fake.requests == []


def test_a_chat_prompt_is_tokenized_once_and_its_ids_travel_with_the_request():
    """The fitted prompt's last count is of the prompt sent: its ids are reused, not made again."""
    fake = FakeEngine("Use a set.")
    calls = []
    real = fake.tokenize
    fake.tokenize = lambda text: calls.append(text) or real(text)
    assist(fake, message="How do I dedupe a list?")
    sent = fake.requests[0]
    assert sent.prompt_ids == tuple(ord(c) for c in sent.prompt)
    assert calls.count(sent.prompt) == 1


def test_the_prompt_is_tokenized_once_and_its_ids_travel_with_the_request():
    fake = FakeEngine("    return n\n")
    complete(fake)
    assert fake.requests[0].prompt_ids == tuple(ord(c) for c in "def f(n):\n")
    remote = FakeEngine("    return n\n", tokenizes=False)  # no tokenizer here: the engine counts
    complete(remote)
    assert remote.requests[0].prompt_ids is None


def test_a_prompt_of_token_ids_is_used_as_sent_and_shown_as_its_text():
    fake = FakeEngine("    return n\n")
    ids = [ord(c) for c in "def f(n):\n"]
    outs = complete(fake, prompt=ids)
    assert fake.requests[0].prompt_ids == tuple(ids)
    assert outs[-1].text == "def f(n):\n    return n\n" and outs[-1].prefix == "def f(n):\n"
    with pytest.raises(PlaygroundError, match="must be code points") as err:
        complete(FakeEngine("x"), prompt=[-1])
    assert err.value.field == "prompt"
    with pytest.raises(PlaygroundError, match="needs the model's tokenizer here") as err:
        complete(FakeEngine("x", tokenizes=False), prompt=ids)
    assert err.value.kind == "unsupported"
    with pytest.raises(PlaygroundError, match=r"Given: 10 `prompt` tokens and 1000"):
        complete(FakeEngine("x", context_length=512), prompt=ids, max_new_tokens=1000)
    for neither in (None, 5):  # not a list of ids: refused as text is, by name
        with pytest.raises(PlaygroundError) as err:
            complete(FakeEngine("x"), prompt=neither)
        assert err.value.field == "prompt"


@pytest.mark.parametrize(
    "engine, where",
    [
        (FakeEngine("x", logprobs=False), "a model on a remote server (ENGINE_URL)"),
        (
            FakeEngine("x", logprobs=True, special_tokens=frozenset(), fills_by_rerank=True),
            "a fill by reranking",
        ),
    ],
)
def test_logprobs_are_refused_by_name_where_they_cannot_be_reported(engine, where):
    pg = fake_playground(engine)
    params = GenerationParams(logprobs=2)
    run_it = pg.fill if "rerank" in where else pg.complete
    code = "def f():\n    <FILL_HERE>\n" if "rerank" in where else "def f():\n"
    with pytest.raises(PlaygroundError) as err:
        run(run_it(code, params, CancelToken()))
    assert err.value.field == "logprobs" and err.value.kind == "unsupported"
    assert f"`logprobs` cannot be reported for {where}" in err.value.message
    assert engine.requests == []


def test_a_streamed_fill_never_shows_whitespace_that_the_final_fill_drops():
    # A middle that ends in blank lines before a suffix on its own line: the final text drops
    # them, so no frame may show them either (they would flicker in and out).
    pg = fake_playground(FakeEngine("return a + b\n\n"))
    code = "def add(a, b):\n    <FILL_HERE>\n\nprint(add(1, 2))\n"
    outs = run(pg.fill(code, GenerationParams(), CancelToken()))
    final = outs[-1].generated
    assert final == "return a + b"
    assert all(final.startswith(o.generated) for o in outs), [o.generated for o in outs]


@pytest.mark.parametrize("reply, stop", [("", []), ("\n```", ["\n```"]), ("  \n", [])])
def test_an_empty_answer_says_why_and_what_to_try(reply, stop):
    final = complete(FakeEngine(reply), prompt="class Stack:\n", stop=stop)[-1]
    assert final.generated.strip() == ""
    assert "the model ended before writing anything" in final.status
    assert "try a prompt that ends mid-line" in final.status
    written = complete(FakeEngine("    pass\n"), prompt="class Stack:\n")[-1]
    assert "before writing anything" not in written.status


@pytest.mark.parametrize("mode", ["completion", "fim", "assistant"])
def test_every_streamed_frame_is_the_start_of_the_final_text(mode):
    """What /v1 streams as deltas must add up to its plain answer: a chat reply ending in
    whitespace streamed it and then lost it in the final text."""
    reply = "    total = a + b   \n    return total \n\n  "
    pg = fake_playground(FakeEngine(reply))
    params = GenerationParams(max_new_tokens=100)
    runs = {
        "completion": lambda: pg.complete("def add(a, b):\n", params, CancelToken()),
        "fim": lambda: pg.fill("def add(a, b):\n<FILL_HERE>\nprint(add(1, 2))\n", params,
                               CancelToken()),
        "assistant": lambda: pg.assist("Add two numbers.", [], params, CancelToken()),
    }  # fmt: skip
    outs = list(runs[mode]())
    final = outs[-1].generated  # what the model wrote: /v1 streams its deltas
    for out in outs:
        assert final.startswith(out.generated), (out.generated, final)


# -- a fence before any code; Continue ------------------------------------------------------


def fenced_playground(engine) -> Playground:
    """A fake served as a chat-tuned model is: its completions end at a closing fence."""
    spec = replace(next(iter(fake_pool(engine).registry)), completion_stops=("\n```",))
    pool = EnginePool(Registry([spec], data_dir="data"), lambda _: engine)
    return Playground(pool, TaPrompt.load(), fim_candidates=APP_DEFAULTS.fim_candidates)


def test_a_fence_opened_before_any_code_is_asked_again_inside_one():
    # SmolLM2 after `class Stack:` and Enter opens a fence at once: the user got nothing.
    fake = FakeEngine(lambda p: "    pass\n```" if p.startswith("```\n") else "\n```python\nx")
    outs = run(
        fenced_playground(fake).complete("class Stack:\n", GenerationParams(), CancelToken())
    )
    final = outs[-1]
    assert final.text == "class Stack:\n    pass" and final.generated == "    pass"
    assert final.text[slice(*final.generated_span)] == "    pass"
    assert [r.prompt for r in fake.requests] == ["class Stack:\n", "```\nclass Stack:\n"]
    assert all(o.text.startswith("class Stack:\n") for o in outs)  # the fence is never shown
    assert len([o for o in outs if o.done]) == 1


def test_whitespace_before_the_fence_is_shown_at_once_and_the_second_try_goes_on_after_it():
    # A completion's first token is often a newline and an indent: it streams at once (holding
    # it cost every such completion a decode step). If the fence follows it, the second try
    # continues after what was shown, so the shown text is never taken back.
    fake = FakeEngine(lambda p: "    pass\n```" if p.startswith("```\n") else "\n\n```python")
    outs = run(
        fenced_playground(fake).complete("class Stack:\n", GenerationParams(), CancelToken())
    )
    assert [r.prompt for r in fake.requests] == ["class Stack:\n", "```\nclass Stack:\n\n"]
    assert outs[0].delta == "\n"  # the first piece, not held for what follows
    final = outs[-1]
    assert final.generated == "\n    pass" and final.text == "class Stack:\n\n    pass"
    assert all(final.generated.startswith(o.generated) for o in outs)
    assert "".join(o.delta for o in outs) == final.generated  # what /v1 streams adds up
    assert len([o for o in outs if o.done]) == 1


def test_the_two_tries_share_one_token_limit_and_one_usage():
    # The first try's newline was shown and its tokens spent: `max_tokens` bounds the whole
    # completion, and its usage counts both tries (the fake counts a character as a token).
    fake = FakeEngine(lambda p: "    pass\n```" if p.startswith("```\n") else "\n\n```python")
    params = GenerationParams(max_new_tokens=6)
    outs = run(fenced_playground(fake).complete("class Stack:\n", params, CancelToken()))
    assert [r.params.max_new_tokens for r in fake.requests] == [6, 5]
    final = outs[-1]
    assert final.generated == "\n    p" and final.done.reason == "length"
    assert final.done.generated_tokens == 6


def test_only_the_fence_stop_lets_a_first_newline_through_at_once():
    fake = FakeEngine("    pass")
    pg = fenced_playground(fake)
    run(pg.complete("def f():", GenerationParams(), CancelToken()))
    run(pg.complete("def f():", GenerationParams(stop=("\n\n",)), CancelToken()))
    run(pg.complete("class A:\n", GenerationParams(), CancelToken()))
    run(pg.fill("def f(<FILL_HERE>):", GenerationParams(), CancelToken()))
    # A caller's stop that begins with a newline keeps the OpenAI meaning: nothing before it.
    # After a prompt that ends a line, a first newline is a blank line: held as before.
    assert [r.params.show_first_newline for r in fake.requests] == [True, False, False, False]


def test_code_before_the_fence_is_kept_and_not_asked_again():
    fake = FakeEngine("    pass\n```\nmore")
    final = run(fenced_playground(fake).complete("class A:\n", GenerationParams(), CancelToken()))[
        -1
    ]
    assert final.generated == "    pass" and len(fake.requests) == 1
    plain = FakeEngine("\n```")  # a model without the fence stop: the empty answer is explained
    assert (
        "before writing anything" in complete(plain, prompt="class A:\n", stop=["\n```"])[-1].status
    )
    assert len(plain.requests) == 1


def test_an_answer_cut_off_says_continue_and_continue_writes_on_from_it():
    cut = assist(FakeEngine("Use sorted(xs)."), max_new_tokens=4)[-1]
    assert cut.text == "Use" and cut.cut_off
    assert "cut off at max_new_tokens: Continue writes more" in cut.status
    fake = FakeEngine(" sorted(xs).")
    pg = fake_playground(fake)
    outs = run(
        pg.assist("How do I sort?", HISTORY, GenerationParams(), CancelToken(), reply_so_far="Use")
    )
    final = outs[-1]
    assert final.text == "Use sorted(xs)." and not final.cut_off
    assert all(o.text.startswith("Use") for o in outs[1:])  # it grows in place
    # The model reads the cut-off answer as its own turn so far, and writes on from it.
    assert fake.requests[0].prompt.endswith("Human: How do I sort?\n\nAssistant: Use")


def test_continue_with_a_chat_template_appends_to_the_opened_turn():
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fake = FakeEngine(" more.", chat_template=template, has_chat_template=True)
    pg = fake_playground(fake)
    final = run(pg.assist("q", [], GenerationParams(), CancelToken(), reply_so_far="Some"))[-1]
    assert final.text == "Some more."
    assert fake.requests[0].prompt == "<|user|>q\n<|assistant|>Some"
