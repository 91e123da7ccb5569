"""The KV cache is sized to a memory budget (KV_CACHE_MB): requests are limited to what it holds,
refused with the limit named, and a cache that does not fit is a clear start error, never a
worker that dies and restarts on every request."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from transformers import GPTBigCodeConfig, LlamaConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching import cache as cb_cache

from app.settings import Settings
from app.validation import check_context
from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest
from model.engines.batching import BatchingServer
from model.engines.kv_budget import (
    DEFAULT_CAP_MIB,
    DEFAULT_SHARE,
    MIB,
    kv_bytes_per_token,
    plan_kv_cache,
)
from model.engines.worker import WorkerConfig, WorkerEngine
from model.errors import PlaygroundError
from tests.dtypes import TINY_AUTO_BYTES

GIB = 2**30
# SmolLM2-135M: 30 layers, 3 KV heads of 64, 8192 context, fp32 on CPU.
SMOLLM2 = LlamaConfig(
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    hidden_size=576,
    intermediate_size=1536,
    vocab_size=49152,
    max_position_embeddings=8192,
    bos_token_id=1,
    eos_token_id=2,
)
# StarCoder-15B: 40 layers, multi-query (one KV head of 128), bf16 on a GPU.
STARCODER = GPTBigCodeConfig(
    n_layer=40,
    n_head=48,
    n_embd=6144,
    multi_query=True,
    vocab_size=49152,
    n_positions=8192,
    bos_token_id=0,
    eos_token_id=0,
)
# tiny-starcoder: 4 layers, 1 KV head of 48, keys and values
TINY_BYTES_PER_TOKEN = 4 * 1 * 48 * 2 * TINY_AUTO_BYTES
# Five 32-token blocks: one spare per request leaves 128 tokens for prompt + max_new_tokens.
TINY_BUDGET_MB = 5 * 32 * TINY_BYTES_PER_TOKEN / MIB
GREEDY = GenerationParams(max_new_tokens=24, temperature=0, repetition_penalty=1.2)


def test_bytes_per_token_from_the_config():
    assert kv_bytes_per_token(SMOLLM2, 4) == 30 * 3 * 64 * 2 * 4 == 46_080
    assert kv_bytes_per_token(STARCODER, 2) == 40 * 1 * 128 * 2 * 2
    # What the 3.46 GB came from: 8 full contexts of SmolLM2 are 3.0 GB of cache alone.
    assert 8 * 8192 * kv_bytes_per_token(SMOLLM2, 4) > 3 * 10**9


def test_blocks_and_per_request_limit_from_mib():
    plan = plan_kv_cache(
        SMOLLM2, 4, max_batch=8, context_length=8192, kv_cache_mb=64, available=100 * GIB
    )
    assert plan.num_blocks == 64 * MIB // (32 * 46_080) == 45
    assert plan.cache_bytes <= 64 * MIB
    assert plan.context_length == 44 * 32  # one block is each request's spare
    assert plan.limited_by == "KV_CACHE_MB=64"
    # A budget above what max_batch full contexts need allocates only what they need.
    big = plan_kv_cache(
        SMOLLM2, 4, max_batch=2, context_length=8192, kv_cache_mb=10**6, available=GIB
    )
    assert big.num_blocks == 2 * (8192 // 32 + 1) and big.context_length == 8192
    assert big.limited_by is None
    with pytest.raises(PlaygroundError) as err:
        plan_kv_cache(
            SMOLLM2, 4, max_batch=8, context_length=8192, kv_cache_mb=1, available=100 * GIB
        )
    assert "KV_CACHE_MB=1" in err.value.message and err.value.kind == "config"


@pytest.mark.parametrize(
    ("config", "dtype"), [(SMOLLM2, torch.float32), (STARCODER, torch.bfloat16)]
)
@pytest.mark.parametrize("available", [GIB, 2 * GIB, 7 * GIB, 64 * GIB])
def test_default_budget_stays_within_budget_and_what_transformers_allows(config, dtype, available):
    plan = plan_kv_cache(
        config,
        dtype.itemsize,
        max_batch=8,
        context_length=8192,
        kv_cache_mb=None,
        available=available,
    )
    one_context = (8192 // 32 + 1) * 32 * plan.bytes_per_token
    assert plan.cache_bytes <= DEFAULT_SHARE * available
    assert plan.cache_bytes <= max(DEFAULT_CAP_MIB * MIB, one_context)
    assert plan.context_length == min(8192, (plan.num_blocks - 1) * 32)
    if plan.context_length < 8192:
        assert "KV_CACHE_MB=" in plan.limited_by
    # transformers refuses a cache whose working set (cache, read-back K/V, masks, the batch's
    # activations) exceeds 0.6 of the available memory on CPU: the default never gets there.
    block = 32 * plan.bytes_per_token
    cb = ContinuousBatchingConfig(
        page_size=32,
        num_blocks=plan.num_blocks,
        max_batch_tokens=256,
        max_memory_percent=0.6,
        max_requests_per_batch=8,
        max_blocks_per_request=0,
    )
    handler = cb_cache.PagedAttentionMemoryHandler(
        config=config,
        cb_config=cb,
        dtype=dtype,
        bytes_per_sector=block,
        tokens_per_sector=32,
        bytes_per_block=block,
        attn_types=["full_attention"],
    )
    assert handler.compute_memory_footprint(256, plan.num_blocks) <= 0.6 * available


def collect(engine, prompt, params=GREEDY):
    events = list(engine.stream(GenerationRequest(prompt, params), CancelToken()))
    assert isinstance(events[-1], Done)
    return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]


@pytest.fixture(scope="module")
def small_cache_worker(model_dir):
    eng = WorkerEngine(
        WorkerConfig(model_dir, device="cpu", max_batch=2, kv_cache_mb=TINY_BUDGET_MB),
        max_queue=2,
    ).start()
    yield eng
    eng.close()


def test_tiny_budget_limits_refuses_with_the_limit_and_never_restarts(small_cache_worker, engine):
    worker = small_cache_worker
    assert worker.info.context_length == 128
    assert worker.info.context_length.limited_by == f"KV_CACHE_MB={TINY_BUDGET_MB:g}"
    assert worker.info.kv_cache_bytes >= 5 * 32 * TINY_BYTES_PER_TOKEN
    text, done = collect(worker, "def foo(x):")
    assert done.reason in ("length", "eos") and text == collect(engine, "def foo(x):")[0]

    # The app's validation (app/playground.py) refuses it with the limit and its reason...
    too_long = GenerationParams(max_new_tokens=200, temperature=0)
    with pytest.raises(PlaygroundError) as err:
        check_context("prompt", 4, too_long.max_new_tokens, worker.info.context_length)
    assert "must be <= 128" in err.value.message and "KV_CACHE_MB=" in err.value.message
    # ...and so does the worker, should a request get past the app.
    _, done = collect(worker, "def foo(x):", too_long)
    assert done.reason == "error" and done.error_kind == "validation"
    assert "must be <= 128" in done.error and "KV_CACHE_MB=" in done.error

    _, done = collect(worker, "class A:")
    assert done.reason in ("length", "eos")
    assert worker.stats()["restarts"] == 0
    assert worker.health() == (True, "ok")


def test_requests_that_fill_the_cache_together_wait_for_room(small_cache_worker, engine):
    """Each request reserves its blocks: the second waits for the first instead of evicting it
    halfway, and both give what they give alone."""
    params = GenerationParams(max_new_tokens=90, temperature=0, repetition_penalty=1.2)
    prompts = ["def foo(x):", "class A:"]
    results: dict[str, tuple] = {}
    threads = [
        threading.Thread(
            target=lambda p=p: results.__setitem__(p, collect(small_cache_worker, p, params))
        )
        for p in prompts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for prompt in prompts:
        text, done = results[prompt]
        alone, alone_done = collect(engine, prompt, params)
        assert done.reason == alone_done.reason and text == alone, prompt
    assert small_cache_worker.stats()["restarts"] == 0


def test_budget_below_one_request_is_a_clear_start_error(model_dir):
    eng = WorkerEngine(
        WorkerConfig(model_dir, device="cpu", max_batch=2, kv_cache_mb=0.01), max_queue=2
    )
    with pytest.raises(PlaygroundError) as err:
        eng.start()
    assert "KV_CACHE_MB=0.01" in err.value.message and "Raise KV_CACHE_MB" in err.value.message
    assert eng.stats()["restarts"] == 0


def test_cache_that_transformers_refuses_is_a_start_error_not_a_dead_loop(model_dir, monkeypatch):
    """The issue's MemoryError, raised where the cache is built: now at start, where the worker
    reports it, instead of in the batching loop, whose death restarted the worker for ever."""
    from model.engines.loading import load

    model, tokenizer, info = load(model_dir, device="cpu")
    # transformers' view of memory on the issue's VM, shrunk to 64 KB total.
    monkeypatch.setattr(
        cb_cache, "get_device_and_memory_breakdown", lambda: (torch.device("cpu"), 65536, 0, 0)
    )
    with pytest.raises(PlaygroundError) as err:
        BatchingServer(model, tokenizer, info, lambda events: None, max_batch=2, kv_cache_mb=1)
    assert "KV_CACHE_MB=1" in err.value.message and "does not fit" in err.value.message
    assert "more than available memory" in err.value.message


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_tiny_starcoder_worker_memory(model_dir):
    """Idle RSS of the default tiny-starcoder worker, most of it torch itself (~220 MB): 0.43 GB
    measured (bench/RESULTS.md, "Worker memory"); the bound leaves room for library drift."""
    app = Settings.load([], env={})  # the default worker: MAX_BATCH slots of KV cache
    config = WorkerConfig(model_dir, device="cpu", max_batch=app.max_batch)
    eng = WorkerEngine(config, max_queue=app.max_queue).start()
    try:
        collect(eng, "def foo(x):")
        with open(f"/proc/{eng.worker_pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        assert rss < 600 * MIB, f"worker RSS {rss / MIB:.0f} MiB"
        assert eng.info.kv_cache_bytes < 16 * MIB  # 8 full 512-token contexts: 6.7 MB
        # 3.2M parameters of TINY_AUTO_BYTES
        assert 2.5 * MIB * TINY_AUTO_BYTES < eng.info.weight_bytes < 5 * MIB * TINY_AUTO_BYTES
    finally:
        eng.close()
