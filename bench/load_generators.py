"""The load generators of bench/load.py: concurrency levels against the app's /complete (plain
HTTP + SSE from one asyncio loop, or gradio_client sessions) or on the Engine API itself, and
the interleaved rounds that pool them per level."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
import time

log = logging.getLogger("bench.load")

PROMPTS = [
    "def fibonacci(n):\n",
    "import os\n\ndef list_files(path):\n",
    "class Stack:\n    def __init__(self):\n",
    "def quicksort(items):\n",
    "# Parse a CSV file and return rows\n",
    "def is_prime(n: int) -> bool:\n",
    "from typing import List\n\ndef flatten(xs: List[list]):\n",
    "def read_json(path):\n",
]


def run_level(
    url: str,
    tokens_now,
    streams: int,
    per_stream: int,
    max_new: int,
    client: str = "http",
    temperature: float = 0.0,
) -> dict:
    """One concurrency level against the app's /complete; `client` picks the load generator."""
    cpu_before = _process_cpu()
    if client == "http":
        row = _run_http_level(url, tokens_now, streams, per_stream, max_new, temperature)
    elif client == "v1":
        row = _run_v1_level(url, tokens_now, streams, per_stream, max_new, temperature)
    else:
        row = _run_gradio_client_level(url, tokens_now, streams, per_stream, max_new)
    row["client_cores"] = (_process_cpu() - cpu_before) / row["wall_s"] if row["wall_s"] else 0
    return row


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _complete_args(url: str, max_new: int, temperature: float) -> list:
    """/complete's positional data, built from the app's own API description."""
    import httpx

    info = httpx.get(f"{url}gradio_api/info", timeout=30).json()
    params = info["named_endpoints"]["/complete"]["parameters"]
    given = {
        "max_new_tokens": max_new, "temperature": temperature, "top_p": 0.9,
        "repetition_penalty": 1.2,
    }  # fmt: skip
    return [given.get(p["parameter_name"], p.get("parameter_default")) for p in params]


def _run_http_level(
    url: str, tokens_now, streams: int, per_stream: int, max_new: int, temperature: float
) -> dict:
    """Plain HTTP + SSE on Gradio's API (POST /gradio_api/call/complete, then its event
    stream), from one asyncio loop: a load generator that takes ~0.1 core at 8 streams, where
    gradio_client's threads took ~0.66 of the same 2 cores the app and the model run on."""
    import json

    template = _complete_args(url, max_new, temperature)

    async def first_token(c, prompt: str, start: float) -> float | None:
        first = None
        r = await c.json("POST", "gradio_api/call/complete", {"data": [prompt, *template[1:]]})
        async for event, data in c.events("GET", f"gradio_api/call/complete/{r['event_id']}"):
            if event == "error":
                raise RuntimeError(data)
            if first is None and event in ("generating", "complete"):
                out = json.loads(data)
                if out and isinstance(out[0], str) and len(out[0]) > len(prompt):
                    first = time.perf_counter() - start
        return first

    return _drive(url, tokens_now, streams, per_stream, first_token)


def _run_v1_level(
    url: str, tokens_now, streams: int, per_stream: int, max_new: int, temperature: float
) -> dict:
    """The app's OpenAI-compatible POST /v1/completions, streamed, outside Gradio's queue."""
    import json

    body = {"max_tokens": max_new, "temperature": temperature, "top_p": 0.9,
            "repetition_penalty": 1.2, "stream": True}  # fmt: skip

    async def first_token(c, prompt: str, start: float) -> float | None:
        first = None
        async for _, data in c.events("POST", "v1/completions", {**body, "prompt": prompt}):
            if data == "[DONE]":
                continue
            out = json.loads(data)
            if "error" in out:
                raise RuntimeError(out["error"]["message"])
            if first is None and out["choices"][0]["text"]:
                first = time.perf_counter() - start
        return first

    return _drive(url, tokens_now, streams, per_stream, first_token)


def _drive(url, tokens_now, streams: int, per_stream: int, first_token) -> dict:
    """`streams` clients on one asyncio loop, each sending `per_stream` requests one after the
    other; `first_token(client, prompt, start)` runs one and returns its time to first text."""
    import asyncio

    from bench.http_client import Connection

    ttfts: list[float] = []
    errors: list[str] = []

    async def one_stream(i: int) -> None:
        c = Connection(url)
        for j in range(per_stream):
            prompt = PROMPTS[(i + j) % len(PROMPTS)]
            try:
                first = await first_token(c, prompt, time.perf_counter())
            except Exception as exc:  # recorded, reported, and the level goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if first is not None:
                ttfts.append(first)
        await c.close()

    async def level() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(one_stream(i) for i in range(streams)))
        return time.perf_counter() - start

    tokens_before = tokens_now()
    wall = asyncio.run(level())
    tokens = tokens_now() - tokens_before
    return _row(streams, streams * per_stream, tokens, wall, ttfts, errors)


def _row(streams, requests, tokens, wall, ttfts, errors) -> dict:
    return {
        "streams": streams,
        "requests": requests,
        "tokens": int(tokens),
        "wall_s": wall,
        "tok_s": tokens / wall if wall else 0.0,
        "ttft_p50": _pct(ttfts, 50),
        "ttft_p95": _pct(ttfts, 95),
        "ttfts": ttfts,
        "errors": errors,
    }


def _run_gradio_client_level(url, tokens_now, streams, per_stream, max_new) -> dict:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(streams)]
    ttfts: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)

    def one_stream(i: int) -> None:
        client = clients[i]
        barrier.wait()
        for j in range(per_stream):
            prompt = PROMPTS[(i + j) % len(PROMPTS)]
            start = time.perf_counter()
            first = None
            try:
                job = client.submit(
                    prompt=prompt,
                    max_new_tokens=max_new,
                    temperature=0,
                    repetition_penalty=1.2,
                    api_name="/complete",
                )
                for out in job:
                    if first is None and isinstance(out, str) and len(out) > len(prompt):
                        first = time.perf_counter() - start
                job.result()
            except Exception as exc:  # recorded, reported, and the level goes on
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if first is not None:
                with lock:
                    ttfts.append(first)

    threads = [threading.Thread(target=one_stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    tokens_before = tokens_now()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = tokens_now() - tokens_before
    for c in clients:
        with contextlib.suppress(Exception):
            c.close()
    return _row(streams, streams * per_stream, tokens, wall, ttfts, errors)


def run_direct_level(
    engine, streams: int, per_stream: int, max_new: int, temperature: float = 0.0
) -> dict:
    """The same load on the Engine API itself, without the web stack (diagnostic)."""
    from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest

    params = GenerationParams(
        max_new_tokens=max_new, temperature=temperature, top_p=0.9, repetition_penalty=1.2
    )
    ttfts, errors, tokens = [], [], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)

    def one_stream(i: int) -> None:
        barrier.wait()
        for j in range(per_stream):
            request = GenerationRequest(PROMPTS[(i + j) % len(PROMPTS)], params)
            start, first = time.perf_counter(), None
            for event in engine.stream(request, CancelToken()):
                if first is None and isinstance(event, Delta):
                    first = time.perf_counter() - start
                if isinstance(event, Done):
                    with lock:
                        tokens[0] += event.generated_tokens
                        if event.reason == "error":
                            errors.append(event.error)
                        elif first is not None:
                            ttfts.append(first)

    threads = [threading.Thread(target=one_stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return _row(streams, streams * per_stream, tokens[0], wall, ttfts, errors)


def direct_path(engine, max_new: int, temperature=0.0):
    """A load run on the Engine API itself: run(streams, per_stream) -> row."""

    def run(n: int, per_stream: int) -> dict:
        return run_direct_level(engine, n, per_stream, max_new, temperature)

    return run


def bench_rounds(paths: dict, levels, total: int, rounds: int, baselines=None) -> list:
    """`rounds` passes over the levels (1, 8, 1, 8, ...), and at each level every path in turn
    (the web API, then the engine alone, ...), pooled per path and level.

    Ratios are taken within each round, so drift on the shared machine (its speed wanders by
    ~10-20 % over minutes) lands on both sides of each: a path's n streams over its own one
    stream in the same round, and (`vs_ttft_ms`, `vs_tok_s`) a path against its baseline
    (`baselines`: path name -> the engine-only path's name) at the same level and round.
    """
    baselines = baselines or {}
    # Warm-up at the sizes measured: a short one left the first (1-stream) level ~20 % slow,
    # which flattered every ratio to it.
    for run in paths.values():
        run(max(levels), 1)
        run(1, 2)
    runs: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in levels} for name in paths}
    for r in range(rounds):
        for n in levels:
            # n streams get n/2 times the requests, so every level lasts about as long as the
            # single stream's: a 2 s level at 8 streams let the VM's jitter set the ratio.
            per_stream = max(2, total * max(1, n // 2) // n)
            for name, run in paths.items():
                row = run(n, per_stream)
                runs[name][n].append(row)
                log.info(
                    "%s round %d streams=%d tok/s=%.1f ttft p50=%.3f p95=%.3f errors=%d",
                    name,
                    r + 1,
                    n,
                    row["tok_s"],
                    row["ttft_p50"],
                    row["ttft_p95"],
                    len(row["errors"]),
                )
    rows = []
    for name in paths:
        base = runs[name][min(levels)]
        for n in levels:
            rs = runs[name][n]
            row = _row(
                n,
                sum(x["requests"] for x in rs),
                sum(x["tokens"] for x in rs),
                sum(x["wall_s"] for x in rs),
                [t for x in rs for t in x["ttfts"]],
                [e for x in rs for e in x["errors"]],
            )
            ratios = [x["tok_s"] / b["tok_s"] for x, b in zip(rs, base, strict=True) if b["tok_s"]]
            row.update(engine=name, rounds=len(rs), ratios=ratios)
            if name in baselines:
                pairs = list(zip(rs, runs[baselines[name]][n], strict=True))
                row["vs_ttft_ms"] = [1000 * (x["ttft_p50"] - e["ttft_p50"]) for x, e in pairs]
                row["vs_tok_s"] = [x["tok_s"] / e["tok_s"] for x, e in pairs if e["tok_s"]]
            if all("client_cores" in x for x in rs):
                row["client_cores"] = (
                    sum(x["client_cores"] * x["wall_s"] for x in rs) / row["wall_s"]
                )
            rows.append(row)
    return rows


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def web_path(url: str, tokens_now, max_new: int, client: str = "http", temperature=0.0):
    """A load run through the app's web API (`client`: http, v1 or gradio_client)."""

    def run(n: int, per_stream: int) -> dict:
        return run_level(url, tokens_now, n, per_stream, max_new, client, temperature)

    return run
