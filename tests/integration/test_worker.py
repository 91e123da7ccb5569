"""Integration: the real worker process with a real model (tiny-starcoder, or a random stand-in)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest, Queued
from model.engines import hugepages, kernel
from model.engines.loading import choose_placement
from model.engines.threads import available_cores
from model.engines.worker import WorkerConfig, WorkerEngine
from model.errors import PlaygroundError

PROMPTS = ["def foo(x):", "import json\n", "class A:", "return self", "for i in", "while True:"]
GREEDY = GenerationParams(max_new_tokens=24, temperature=0, repetition_penalty=1.2)
MAX_BATCH = 4
MAX_QUEUE = 4


@pytest.fixture(scope="module")
def worker(model_dir):
    eng = WorkerEngine(
        WorkerConfig(model_dir, device="cpu", max_batch=MAX_BATCH),
        max_queue=MAX_QUEUE,
        report_queue=True,
    ).start()
    yield eng
    eng.close()


def collect(engine, prompt, params=GREEDY, cancel=None):
    events = list(engine.stream(GenerationRequest(prompt, params), cancel or CancelToken()))
    assert isinstance(events[-1], Done)
    assert all(not isinstance(e, Done) for e in events[:-1])
    return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]


def run_concurrently(fn, args_list):
    results, errors = [None] * len(args_list), []

    def run(i, args):
        try:
            results[i] = fn(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def wait_idle(engine, timeout=10):
    deadline = time.monotonic() + timeout
    while engine.stats()["active"] or engine.stats()["queue_depth"]:
        assert time.monotonic() < deadline, engine.stats()
        time.sleep(0.02)


def test_concurrent_greedy_streams_equal_single_requests(worker, engine):
    # More streams than batch slots: some queue, all complete, each equals generate() alone.
    batched = run_concurrently(lambda p: collect(worker, p), [(p,) for p in PROMPTS])
    for prompt, (text, done) in zip(PROMPTS, batched, strict=True):
        alone, alone_done = collect(engine, prompt)
        assert text == alone, prompt
        assert done.reason == alone_done.reason
        assert done.generated_tokens == alone_done.generated_tokens
        assert done.prompt_tokens == alone_done.prompt_tokens
    assert worker.count_tokens(PROMPTS[0]) == engine.count_tokens(PROMPTS[0])


def test_sampled_and_seeded_requests(worker):
    sampled = GenerationParams(max_new_tokens=12, temperature=0.8, top_p=0.9)
    seeded = GenerationParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=7)
    results = run_concurrently(
        lambda p: collect(worker, "def foo(x):", p), [(sampled,), (seeded,), (seeded,)]
    )
    assert all(done.reason in ("length", "eos") for _, done in results)
    # Seeded requests run one at a time, so the seed pins the output.
    assert results[1][0] == results[2][0]


def test_healed_prompts_batch_and_equal_generate(worker, engine):
    """A completion prompt ending in indentation is token-healed (tiny-starcoder merges
    "\n" + spaces): in the batch, beside other requests, it gives generate()'s healed text,
    and a sampled healed request still streams."""
    from model.engines.batching import batchable

    healed = GenerationParams(max_new_tokens=16, temperature=0, repetition_penalty=1.2, heal=True)
    prompt = "def f(x):\n    "
    assert batchable(GenerationRequest(prompt, healed))
    sampled = GenerationParams(max_new_tokens=16, temperature=0.8, top_p=0.9, heal=True)
    results = run_concurrently(
        lambda p, params: collect(worker, p, params),
        [(prompt, healed), ("class A:", GREEDY), (prompt, sampled), ("import json\n", GREEDY)],
    )
    alone, alone_done = collect(engine, prompt, healed)
    assert results[0][0] == alone and results[0][1].prompt_tokens == alone_done.prompt_tokens
    assert alone_done.prompt_tokens < engine.count_tokens(prompt)  # healing did back off
    assert results[2][1].reason in ("length", "eos") and results[2][1].generated_tokens > 0


def test_stop_sequence_cuts_batched_output(worker):
    params = GenerationParams(max_new_tokens=24, temperature=0, repetition_penalty=1.0)
    full, _ = collect(worker, "class A:", params)
    assert len(full) > 6
    stop = full[3:6]
    cut, done = collect(
        worker, "class A:", GenerationParams(**{**params.__dict__, "stop": (stop,)})
    )
    assert done.reason == "stop"
    assert cut == full[: full.index(stop)]


def test_stop_button_cancels_within_a_step(worker):
    cancel = CancelToken()
    params = GenerationParams(max_new_tokens=200, temperature=0, repetition_penalty=1.0)
    events = []
    for event in worker.stream(GenerationRequest("class A:", params), cancel):
        events.append(event)
        if isinstance(event, Delta) and not cancel.cancelled:
            cancel.cancel()
            stopped_at = time.monotonic()
    assert events[-1].reason == "cancelled"
    assert time.monotonic() - stopped_at < 2
    assert events[-1].generated_tokens < 200
    wait_idle(worker)


def test_disconnect_frees_the_slot(worker):
    params = GenerationParams(max_new_tokens=200, temperature=0, repetition_penalty=1.0)
    streams = [worker.stream(GenerationRequest(p, params), CancelToken()) for p in PROMPTS[:4]]
    for s in streams:
        assert isinstance(next(s), Delta | Queued)
    for s in streams:
        s.close()  # what Gradio does when the browser goes away
    wait_idle(worker)
    # A full batch still runs to completion afterwards: nothing leaked in the worker.
    short = GenerationParams(max_new_tokens=8, temperature=0)
    results = run_concurrently(lambda p: collect(worker, p, short), [(p,) for p in PROMPTS[:4]])
    assert all(done.reason in ("length", "eos") for _, done in results)


def test_full_queue_says_busy_and_positions_are_shown(worker):
    params = GenerationParams(max_new_tokens=200, temperature=0, repetition_penalty=1.0)
    streams, firsts = [], []
    try:
        for prompt in PROMPTS[:2] * 4:  # 4 batch slots + 4 queue places
            s = worker.stream(GenerationRequest(prompt, params), CancelToken())
            streams.append(s)
            firsts.append(next(s))
        assert [f.position for f in firsts if isinstance(f, Queued)] == [1, 2, 3, 4]
        with pytest.raises(PlaygroundError) as err:
            next(worker.stream(GenerationRequest("x", params), CancelToken()))
        assert err.value.kind == "busy"
        assert "busy" in err.value.message and "try again" in err.value.message
    finally:
        for s in streams:
            s.close()
    wait_idle(worker)


def test_request_past_the_context_is_refused_alone(worker):
    too_long = GenerationParams(max_new_tokens=worker.info.context_length, temperature=0)
    short = GenerationParams(max_new_tokens=8, temperature=0)
    (_, bad), (_, good) = run_concurrently(
        lambda p: collect(worker, "class A:", p), [(too_long,), (short,)]
    )
    assert bad.reason == "error" and bad.error_kind == "validation"
    assert "must be <=" in bad.error
    assert good.reason in ("length", "eos")


def test_a_seeded_request_past_the_context_gets_the_same_refusal_as_the_batch(worker):
    """A seeded request runs alone, outside the batch: it used to reach the forward and come
    back as "Generation failed inside the model"."""
    ctx = worker.info.context_length
    _, batched = collect(worker, "class A:", GenerationParams(max_new_tokens=ctx))
    _, alone = collect(worker, "class A:", GenerationParams(max_new_tokens=ctx, seed=3))
    assert alone.reason == "error" and alone.error_kind == "validation"
    assert alone.error == batched.error
    assert alone.error.startswith(f"`prompt` tokens + `max_new_tokens` must be <= {ctx}")


def test_unloadable_model_is_a_clear_start_error(tmp_path):
    with pytest.raises(PlaygroundError) as err:
        missing = WorkerConfig(str(tmp_path / "missing"), device="cpu", max_batch=MAX_BATCH)
        WorkerEngine(missing, max_queue=MAX_QUEUE).start()
    assert err.value.kind == "config" and "missing" in err.value.message


def test_killed_worker_fails_in_flight_then_restarts(worker):
    params = GenerationParams(max_new_tokens=200, temperature=0, repetition_penalty=1.0)
    stream = worker.stream(GenerationRequest("class A:", params), CancelToken())
    assert isinstance(next(stream), Delta)
    os.kill(worker.worker_pid, signal.SIGKILL)
    rest = list(stream)
    assert rest[-1].reason == "error" and rest[-1].error_kind == "engine"
    assert "restarting" in rest[-1].error
    _, done = collect(worker, "def foo(x):", GenerationParams(max_new_tokens=8, temperature=0))
    assert done.reason in ("length", "eos")
    assert worker.stats()["restarts"] == 1
    assert worker.health() == (True, "ok")


def test_a_call_right_after_a_worker_death_waits_for_the_new_worker(worker):
    """Token counts and pings that arrived just after a death waited their whole timeout on the
    dead worker (30 s for SmolLM2's token counts), though a new one served seconds later."""
    pid = worker.worker_pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker._worker is not None and worker._worker.ready.is_set():
        assert time.monotonic() < deadline, "the death was never noticed"
        time.sleep(0.01)
    # Before: this waited the full 60 s on the dead worker, then said "not ready yet".
    assert worker._call("ping", None, timeout=60) is True
    assert worker.worker_pid != pid


def test_device_error_fails_in_flight_then_restarts(model_dir, tmp_path, monkeypatch):
    """A CUDA error kills the batching loop (transformers stops it and fails its requests).
    Uses a FAKE CUDA error: no GPU runs here (tests/faults.py's FaultyWorkerEngine)."""
    from tests.faults import FAULT_FILE_ENV, FaultyWorkerEngine

    fault = tmp_path / "fault"
    fault.write_text("20")  # the 20th forward: prefill and some decode steps of both streams
    monkeypatch.setenv(FAULT_FILE_ENV, str(fault))
    config = WorkerConfig(model_dir, device="cpu", max_batch=MAX_BATCH)
    eng = FaultyWorkerEngine(config, max_queue=MAX_QUEUE).start()
    try:
        first_pid = eng.worker_pid
        params = GenerationParams(max_new_tokens=200, temperature=0, repetition_penalty=1.0)
        results = run_concurrently(
            lambda p: collect(eng, p, params), [("class A:",), ("def foo(x):",)]
        )
        for _, done in results:
            assert done.reason == "error" and done.error_kind == "engine", done
            assert "Generation failed inside the model" in done.error
        assert not fault.exists()  # armed once: the next worker runs clean
        deadline = time.monotonic() + 30
        while eng.stats()["restarts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eng.stats()["restarts"] == 1
        text, done = collect(eng, "def foo(x):", GenerationParams(max_new_tokens=8, temperature=0))
        assert done.reason in ("length", "eos") and text
        assert eng.worker_pid != first_pid
        assert eng.health() == (True, "ok")
    finally:
        eng.close()


def test_web_process_never_imports_torch(model_dir):
    code = textwrap.dedent(
        f"""
        import sys
        from model.engine import CancelToken, GenerationParams, GenerationRequest
        from model.engines.worker import WorkerConfig, WorkerEngine
        config = WorkerConfig({model_dir!r}, device="cpu", max_batch=2)
        eng = WorkerEngine(config, max_queue=2).start()
        req = GenerationRequest("def f(", GenerationParams(max_new_tokens=4, temperature=0))
        events = list(eng.stream(req, CancelToken()))
        assert events[-1].reason in ("length", "eos"), events[-1]
        assert "torch" not in sys.modules, "web process imported torch"
        # Closing the engine ends in-flight streams with an error instead of leaving them hanging.
        long = GenerationRequest("def f(", GenerationParams(max_new_tokens=200, temperature=0))
        stream = eng.stream(long, CancelToken())
        next(stream)
        eng.close()
        assert list(stream)[-1].reason == "error"
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_metrics_and_healthz(worker):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from app.metrics import EngineMetrics, add_ops_routes

    metrics = EngineMetrics()
    engine = metrics.wrap(worker)
    metrics.watch(lambda: [engine])
    api = FastAPI()
    add_ops_routes(api, lambda: {"tiny": engine}, metrics)
    http = TestClient(api)
    # By default the worker computes with every core and the dtype the CPU is fast in.
    fp32 = choose_placement("cpu").dtype == "float32"
    runs_on = {
        "device": "cpu",
        "dtype": choose_placement("cpu").dtype,
        "threads": available_cores(),
        "threads_policy": "auto",  # re-sized to the cores other processes leave free
        # kernel.c for fp32 where it builds (x86-64 AVX2 + FMA, a C compiler), else oneDNN;
        # its 12 MB of weights on 2 MB pages where the system has them
        "linear": kernel.label() + (" on 2 MB pages" if hugepages.available() else "")
        if fp32 and kernel.library() is not None
        else "onednn",
        "layers": "transformers",  # layer.c computes Llama layers; this is GPTBigCode
    }
    health = {"status": "ok", "models": ["tiny"], "engines": {"tiny": runs_on}}
    assert http.get("/healthz").json() == health
    _, done = collect(engine, "class A:", GenerationParams(max_new_tokens=8, temperature=0))
    text = http.get("/metrics").text
    assert f"playground_generated_tokens_total {float(done.generated_tokens)}" in text
    assert "playground_time_to_first_token_seconds_count 1.0" in text
    assert 'playground_requests_total{reason="length"} 1.0' in text
    for name in ("queue_depth", "active_requests", "worker_restarts_total", "tokens_per_second"):
        assert f"playground_{name}" in text


def test_the_web_process_tokenizes_as_the_worker_does_and_the_worker_uses_those_ids(worker):
    text = "def add(a, b):\n    return a + b  # ünïcode, tabs\t and  spaces\n"
    ids = worker.tokenize(text)  # in the web process: the local tokenizer, no pipe trip
    assert ids == list(worker._call("tokenize", text, timeout=30))  # the worker's own
    # A request that carries ids is not tokenized again: the ids are what the model reads
    # (here they say something else than the text, which only the logs would show).
    other = worker.tokenize("class A:")
    request = GenerationRequest(text, GREEDY, prompt_ids=tuple(other))
    events = list(worker.stream(request, CancelToken()))
    from_ids = "".join(e.text for e in events if isinstance(e, Delta))
    assert events[-1].prompt_tokens == len(other)
    assert from_ids == collect(worker, "class A:")[0]


def test_a_fill_by_reranking_is_one_line_and_the_batch_goes_on_around_it(worker):
    from model.engine import Infill

    prefix, suffix = "def add(a, b):\n    ", "\n\n\nprint(add(1, 2))\n"
    params = GenerationParams(max_new_tokens=24)
    request = GenerationRequest(prefix, params, infill=Infill(prefix, suffix, candidates=4))

    def fill():
        return list(worker.stream(request, CancelToken()))

    # Two fills and two batched completions at once: the batch pauses for each fill.
    results = run_concurrently(
        lambda job: fill() if job == "fill" else collect(worker, job),
        [("fill",), (PROMPTS[0],), ("fill",), (PROMPTS[1],)],
    )
    first, second = ([e for e in r if not isinstance(e, Queued)] for r in (results[0], results[2]))
    assert first == second  # the same code gets the same fill
    *deltas, done = first
    middle = "".join(e.text for e in deltas)
    assert done.reason in ("stop", "length") and done.generated_tokens > 0
    assert middle.strip() and "\n" not in middle, middle
    for text, done in (results[1], results[3]):
        assert done.reason in ("length", "eos") and text
    assert results[1] == collect(worker, PROMPTS[0])  # batched output unchanged by the pauses


def test_a_prompt_of_ids_is_decoded_here_or_by_the_worker_for_a_hub_model(worker):
    """A Hub model has no tokenizer.json in the web process until it is downloaded: then the
    worker decodes, and refuses ids outside the vocabulary the same way."""
    ids = worker.tokenize("def add(a, b):\n    return a + b\n")
    here = worker.detokenize(ids)
    assert here == "def add(a, b):\n    return a + b\n"
    local, worker._tokenizer = worker._tokenizer, None  # as for a Hub model
    try:
        assert worker.detokenize(ids) == here
        with pytest.raises(
            PlaygroundError, match=r"token ids must be whole numbers in \[0, "
        ) as err:
            worker.detokenize([10**9])
        assert err.value.field == "prompt"
    finally:
        worker._tokenizer = local
    with pytest.raises(PlaygroundError, match=r"got 1000000000\.") as err:
        worker.detokenize([10**9])
    assert err.value.field == "prompt"
