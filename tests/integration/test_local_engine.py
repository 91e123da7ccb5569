"""The in-process engine on the real model: streaming, determinism, stops, cancel, errors."""

import threading

from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest

GREEDY = GenerationParams(max_new_tokens=24, temperature=0, repetition_penalty=1.0)


def _run(engine, prompt, params=GREEDY, cancel=None):
    events = list(engine.stream(GenerationRequest(prompt, params), cancel or CancelToken()))
    deltas = [e.text for e in events if isinstance(e, Delta)]
    done = events[-1]
    assert isinstance(done, Done) and all(isinstance(e, Delta) for e in events[:-1])
    return "".join(deltas), done, deltas


def _generate_threads():
    return [t for t in threading.enumerate() if t.name == "generate"]


def test_streams_token_deltas_and_reports_counts(engine):
    text, done, deltas = _run(engine, "def fibonacci(n):\n")
    assert done.reason in ("length", "eos")
    assert done.prompt_tokens == engine.count_tokens("def fibonacci(n):\n")
    assert 1 <= done.generated_tokens <= 24
    assert len(deltas) >= 2 and text


def test_greedy_is_deterministic_and_seed_fixes_sampling(engine):
    assert _run(engine, "import os\n")[0] == _run(engine, "import os\n")[0]
    sampled = GenerationParams(max_new_tokens=24, temperature=1.0, top_p=1.0, seed=1234)
    first = _run(engine, "import os\n", sampled)[0]
    assert _run(engine, "import os\n", sampled)[0] == first
    others = {
        _run(engine, "import os\n", GenerationParams(max_new_tokens=24, temperature=1.0, seed=s))[0]
        for s in (1, 2, 3)
    }
    assert len(others | {first}) > 1


def test_stop_sequence_cuts_the_output_before_it(engine):
    prompt = next(
        p for p in ("class A:\n", "def f(", "x = ", "import ") if len(_run(engine, p)[0]) > 6
    )
    full = _run(engine, prompt)[0]
    stop = full[3:6]
    expected = full[: full.index(stop)]
    params = GenerationParams(
        max_new_tokens=24, temperature=0, repetition_penalty=1.0, stop=(stop,)
    )
    text, done, _ = _run(engine, prompt, params)
    assert text == expected and done.reason == "stop"


def test_cancel_ends_within_a_token_and_leaves_no_thread(engine):
    cancel = CancelToken()
    params = GenerationParams(max_new_tokens=200, temperature=1.0, seed=5, repetition_penalty=1.0)
    stream = engine.stream(GenerationRequest("def f(", params), cancel)
    seen = 0
    for event in stream:
        if isinstance(event, Delta):
            seen += 1
            if seen == 3:
                cancel.cancel()
        else:
            done = event
    assert done.reason == "cancelled"
    assert done.generated_tokens <= seen + 2
    assert not _generate_threads()


def test_closing_the_stream_early_frees_the_model(engine):
    params = GenerationParams(max_new_tokens=200, temperature=1.0, seed=9)
    stream = engine.stream(GenerationRequest("def g(", params), CancelToken())
    next(stream)
    stream.close()  # what Gradio does when a client goes away
    assert not _generate_threads()
    assert _run(engine, "x = ")[1].reason in ("length", "eos")  # the model is free again


def test_an_exception_inside_generation_becomes_an_error_event(engine, monkeypatch):
    """A forward that fails mid-generation (a bug, a device error) ends the request with an
    error event, and the engine serves the next one."""
    calls = {"n": 0}
    forward = engine.model.forward

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the prompt and a token: inside the generation loop
            raise RuntimeError("index out of range in self")
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", failing_forward)
    _, done, _ = _run(engine, "x = [1, 2, 3", GenerationParams(max_new_tokens=50, temperature=0))
    assert done.reason == "error" and done.error_kind == "engine"
    assert "Generation failed inside the model" in done.error
    assert not _generate_threads()
    monkeypatch.undo()
    assert _run(engine, "y = ")[1].reason in ("length", "eos")


def test_a_request_past_the_context_is_refused_before_the_model_runs(engine):
    """Positions past the context used to fail inside generate(): the check comes first now,
    in the words of every other overflow."""
    n = engine.info.context_length
    prompt = "x = [" + ", ".join(str(i) for i in range(1, 2000))
    while engine.count_tokens(prompt) > n - 2:
        prompt = prompt[: int(len(prompt) * 0.95)]
    _, done, _ = _run(engine, prompt, GenerationParams(max_new_tokens=50, temperature=0))
    assert done.reason == "error" and done.error_kind == "validation"
    assert done.error.startswith(f"`prompt` tokens + `max_new_tokens` must be <= {n} ")


class _CancelAfter(CancelToken):
    """A Stop press that lands after `checks` looks at the flag: exactly mid-fill."""

    def __init__(self, checks: int):
        super().__init__()
        self.left = checks

    @property
    def cancelled(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_a_fill_by_reranking_stops_between_two_steps_when_cancelled(engine):
    from model.engine import Infill

    prefix, suffix = "def add(a, b):\n    ", "\n\n\nprint(add(1, 2))\n"
    request = GenerationRequest(
        prefix, GenerationParams(max_new_tokens=24), infill=Infill(prefix, suffix, candidates=4)
    )
    whole = list(engine.stream(request, CancelToken()))
    assert isinstance(whole[0], Delta) and whole[-1].generated_tokens >= 3  # steps to stop in
    cancel = _CancelAfter(2)
    events = list(engine.stream(request, cancel))
    assert [type(e) for e in events] == [Done] and events[0].reason == "cancelled"
    assert cancel.left < 0  # it looked, and stopped at once


def test_a_written_special_token_adds_nothing_to_the_names_a_typed_one_keeps_its_own(engine):
    """Log-probability token names add up to the text: the text skips special tokens (a
    `<fim_middle>` drawn at temperature 1 once showed in the names but not in the text)."""
    from model.tokens.logprobs import Namer

    namer = Namer(engine.tokenizer)
    special = engine.tokenizer.convert_tokens_to_ids("<fim_middle>")
    written = namer.entry((special, -1.5, (special,), (-1.5,)), str)
    assert written.token == "" and written.top == (("<fim_middle>", -1.5),)
    assert namer.entry((special, -1.5, (), ())).token == "<fim_middle>"  # in a scored prompt


def test_a_scored_prompt_comes_first_and_its_tokens_spell_the_prompt(engine):
    prompt = "def add(a, b):\n    return a + b\n"
    params = GenerationParams(max_new_tokens=2, temperature=0, logprobs=1, prompt_logprobs=True)
    events = list(engine.stream(GenerationRequest(prompt, params), CancelToken()))
    scored = events[0].prompt_logprobs
    assert isinstance(events[0], Delta) and events[0].text == "" and isinstance(events[-1], Done)
    assert "".join(t.token for t in scored) == prompt
    assert scored[0].logprob is None and all(t.logprob <= 0 and len(t.top) == 1 for t in scored[1:])
    # Chunked over a growing cache, the scores are the one-pass forward's.
    from model.tokens.logprobs import score_prompt

    ids = engine.tokenize(prompt)
    whole = score_prompt(engine.model, engine.namer, ids, 1, chunk=len(ids))
    pieces = score_prompt(engine.model, engine.namer, ids, 1, chunk=3)
    assert (
        max(abs(a.logprob - b.logprob) for a, b in zip(whole[1:], pieces[1:], strict=True)) < 1e-4
    )
