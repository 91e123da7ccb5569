"""Load benchmark: aggregate tokens/s and time-to-first-token at 1, 4, 8, 16 concurrent streams.

Both engines are driven through the app's own API, side by side in one run: plain HTTP + SSE on
Gradio's /gradio_api/call/complete from one asyncio loop (and, with --gradio-client, one
gradio_client session per stream as a second load generator):
  worker  WorkerEngine: our worker process with transformers' continuous batching
  peer    RemoteEngine -> `transformers serve --continuous-batching` on loopback

    python -m bench.load [--model DIR] [--streams 1,4,8,16] [--max-new-tokens 64]
                         [--requests 32] [--rounds 3] [--out FILE]

Tokens are counted exactly by the engines (the app's Prometheus counter), not re-tokenized.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_model() -> str:
    from model.registry import TINY_STARCODER_DIR as embedded

    if (embedded / "config.json").exists():
        return str(embedded)
    from tests.random_model import build_random_model

    out = Path(tempfile.mkdtemp(prefix="bench-random-model-"))
    log.warning("tiny-starcoder checkpoint missing: benchmarking a random GPTBigCode")
    return str(build_random_model(out))


@contextlib.contextmanager
def app_process(engine_spec: str, model: str, max_batch: int):
    """The real app (build_app) in its own process, as browsers would see it: the load
    generator's client threads must not share a GIL with the server. Yields (url, token reader).
    """
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "bench.load", "--serve-app", engine_spec, "--model", model,
        "--max-batch", str(max_batch), "--port", str(port), "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    logf = Path(tempfile.mkdtemp(prefix="bench-app-")) / "app.log"
    with open(logf, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(proc, url, logf)
        _wait_http(proc, f"http://127.0.0.1:{metrics_port}/", logf)

        def tokens() -> float:
            import httpx

            text = httpx.get(f"http://127.0.0.1:{metrics_port}/", timeout=10).text
            for line in text.splitlines():
                if line.startswith("playground_generated_tokens_total "):
                    return float(line.split()[1])
            return 0.0

        yield url, tokens
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_http(proc, url: str, logf: Path, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up; see {logf}")
        time.sleep(0.3)


def serve_app_main(args) -> int:
    """Child mode: build the engine and the app, serve until terminated."""
    from prometheus_client import start_http_server

    from app.metrics import EngineMetrics
    from app.server import build_app, serve
    from app.settings import Settings
    from model.pool import EnginePool

    if args.serve_app == "worker":
        from model.worker import WorkerConfig, WorkerEngine

        config = WorkerConfig(args.model, device="cpu", max_batch=args.max_batch)
        engine = WorkerEngine(config, max_queue=4 * args.max_batch).start()
    else:
        from model.remote import RemoteEngine

        engine = RemoteEngine(args.serve_app, tokenizer=args.model)
    metrics = EngineMetrics()
    data = tempfile.mkdtemp(prefix="bench-data-")
    settings = Settings.load(
        ["--data-dir", data, "--port", str(args.port), "--log-level", "WARNING",
         "--max-batch", str(args.max_batch), "--max-queue", str(4 * args.max_batch)],
        env={},
    )  # fmt: skip
    # The app lets max_batch + max_queue generations into the engine, which batches them.
    built = build_app(settings, EnginePool.single(metrics.wrap(engine), data_dir=data))
    start_http_server(args.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    try:
        serve(built.fastapi, settings)
    finally:
        engine.close()
    return 0


def run_level(
    url: str, tokens_now, streams: int, per_stream: int, max_new: int, client: str = "http",
    temperature: float = 0.0,
) -> dict:  # fmt: skip
    """One concurrency level against the app's /complete; `client` picks the load generator."""
    cpu_before = _process_cpu()
    if client == "http":
        row = _run_http_level(url, tokens_now, streams, per_stream, max_new, temperature)
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
    import asyncio
    import json

    import httpx

    template = _complete_args(url, max_new, temperature)
    ttfts: list[float] = []
    errors: list[str] = []

    async def one_stream(c: httpx.AsyncClient, i: int) -> None:
        for j in range(per_stream):
            prompt = PROMPTS[(i + j) % len(PROMPTS)]
            start, first = time.perf_counter(), None
            try:
                r = await c.post("gradio_api/call/complete", json={"data": [prompt, *template[1:]]})
                r.raise_for_status()
                event = None
                path = f"gradio_api/call/complete/{r.json()['event_id']}"
                async with c.stream("GET", path) as sse:
                    async for line in sse.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "error":
                            raise RuntimeError(line[5:].strip())
                        elif line.startswith("data:") and first is None:
                            data = json.loads(line[5:])
                            if data and isinstance(data[0], str) and len(data[0]) > len(prompt):
                                first = time.perf_counter() - start
            except Exception as exc:  # recorded, reported, and the level goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if first is not None:
                ttfts.append(first)

    async def level() -> float:
        limits = httpx.Limits(max_connections=4 * streams + 4)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:
            start = time.perf_counter()
            await asyncio.gather(*(one_stream(c, i) for i in range(streams)))
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


def bench_direct(name: str, engine, levels, total: int, max_new: int, rounds: int, temperature=0.0):
    def run(n: int, per_stream: int) -> dict:
        return run_direct_level(engine, n, per_stream, max_new, temperature)

    return bench_rounds(name, run, levels, total, rounds)


def bench_rounds(name: str, run, levels, total: int, rounds: int) -> list:
    """`rounds` passes over all levels, interleaved (1, 4, 8, 16, 1, 4, ...), pooled per level.

    The ratio to one stream is taken within each round, against that round's own 1-stream
    level, so drift on the shared machine (its speed wanders by ~10-20 % over minutes) lands
    on both sides of each ratio; the rows report its median and range over the rounds.
    """
    # Warm-up at the sizes measured: a short one left the first (1-stream) level ~20 % slow,
    # which flattered every ratio to it.
    run(max(levels), 1)
    run(1, 2)
    runs: dict[int, list[dict]] = {n: [] for n in levels}
    for r in range(rounds):
        for n in levels:
            # n streams get n/2 times the requests, so every level lasts about as long as the
            # single stream's: a 2 s level at 8 streams let the VM's jitter set the ratio.
            row = run(n, max(2, total * max(1, n // 2) // n))
            runs[n].append(row)
            log.info(
                "%s round %d streams=%d tok/s=%.1f ttft p50=%.3f p95=%.3f errors=%d",
                name, r + 1, n, row["tok_s"], row["ttft_p50"], row["ttft_p95"],
                len(row["errors"]),
            )  # fmt: skip
    base = runs[min(levels)]
    rows = []
    for n in levels:
        rs = runs[n]
        row = _row(
            n, sum(x["requests"] for x in rs), sum(x["tokens"] for x in rs),
            sum(x["wall_s"] for x in rs), [t for x in rs for t in x["ttfts"]],
            [e for x in rs for e in x["errors"]],
        )  # fmt: skip
        ratios = [x["tok_s"] / b["tok_s"] for x, b in zip(rs, base, strict=True) if b["tok_s"]]
        row.update(engine=name, rounds=len(rs), ratios=ratios)
        if all("client_cores" in x for x in rs):
            row["client_cores"] = sum(x["client_cores"] * x["wall_s"] for x in rs) / row["wall_s"]
        rows.append(row)
    return rows


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def bench_levels(
    name: str, url: str, tokens_now, levels, total: int, max_new: int, rounds: int,
    client: str = "http", temperature: float = 0.0,
) -> list:  # fmt: skip
    def run(n: int, per_stream: int) -> dict:
        return run_level(url, tokens_now, n, per_stream, max_new, client, temperature)

    label = name if client == "http" else f"{name}, via gradio_client"
    return bench_rounds(label, run, levels, total, rounds)


@contextlib.contextmanager
def transformers_serve(model: str, max_batch: int, context: int):
    exe = shutil.which("transformers")
    port = free_port()
    blocks = max_batch * (context // 32 + 1)
    cmd = [
        exe, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
        "--continuous-batching", "--cb-block-size", "32", "--cb-num-blocks", str(blocks),
        "--cb-max-batch-tokens", "256",
    ]  # fmt: skip
    logf = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.log"
    with open(logf, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve failed; see {logf}")
            time.sleep(0.3)
        yield url, " ".join(cmd[1:])
    finally:
        proc.terminate()
        proc.wait(10)


def write_results(path: Path, rows: list[dict], args, model: str, serve_cmd: str) -> None:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        "# Load benchmark: worker queue vs transformers serve",
        "",
        f"`python -m bench.load` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"- Machine: {os.cpu_count()} CPU cores ({cpu}), no GPU; shared with other jobs.",
        f"- Model: `{model}`.",
        f"- Load: {args.requests} greedy /complete requests at 1 stream and n/2 times as many "
        "at n streams, per round, "
        f"{args.rounds} rounds over the levels in turn, through the app's API "
        "(HTTP + SSE on Gradio's `/gradio_api/call/complete`, all streams on one asyncio "
        "loop; `via gradio_client` rows: one gradio_client session per stream instead); the "
        f"app runs in its own process; {args.max_new_tokens} new tokens, "
        "repetition_penalty 1.2, 8 code prompts.",
        f"- worker: WorkerEngine, max_batch={max(args.levels)} (continuous batching).",
        f"- peer: RemoteEngine -> `{serve_cmd}`.",
        "- `engine API only` rows: the same load on Engine.stream() in the bench process, "
        "without Gradio/HTTP (diagnostic: what the engine alone sustains). `sampled` rows use "
        "temperature 0.2 and top_p 0.9 (tiny-starcoder's defaults in the UI) instead of greedy.",
        "",
        "| engine | streams | requests | tokens | wall s | tokens/s | x single, median "
        "| x single, range | TTFT p50 s | TTFT p95 s | load generator CPU cores | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cores = f"{r['client_cores']:.2f}" if "client_cores" in r else "—"
        ratios = r["ratios"] or [float("nan")]
        lines.append(
            f"| {r['engine']} | {r['streams']} | {r['requests']} | {r['tokens']} | "
            f"{r['wall_s']:.1f} | {r['tok_s']:.1f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f}-{max(ratios):.2f} | {r['ttft_p50']:.3f} | "
            f"{r['ttft_p95']:.3f} | {cores} | {len(r['errors'])} |"
        )
    lines += [
        "",
        "How to read it:",
        "- `x single` is aggregate tokens/s over the same engine's 1-stream rate in the same "
        "round; the median and range are over the rounds. The goal is >= 4x at 8 streams.",
        "- The app rows pay for the web stack: Gradio's queue and one SSE message per 50 ms "
        "frame per stream, on the same 2 cores as the model, and so does the load generator "
        "(its CPU is in its own column). The `engine API only` rows show what the engines "
        "themselves sustain; the gap between the two is the web stack's share.",
        "- Levels last only a few seconds on a tiny model and the machine's speed drifts, "
        "which is why the levels run in turn and each ratio is taken within its round.",
        "- The peer's continuous batching drops `repetition_penalty` (transformers has no CB "
        "version of it) and fixes sampling settings at its first request; the worker honours "
        "both per request (model/batching.py), so it does somewhat more work per token.",
    ]
    errors = [e for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Errors (first 5):", *[f"- {e}" for e in errors[:5]]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: tiny-starcoder)")
    p.add_argument("--streams", default="1,4,8,16", help="concurrency levels")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--requests",
        type=int,
        default=32,
        help="requests at 1 stream per round; n streams run n/2 times as many",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved passes over the levels")
    p.add_argument(
        "--gradio-client",
        action="store_true",
        help="also drive the worker's app with gradio_client (one session per stream)",
    )
    p.add_argument("--skip-peer", action="store_true", help="only the worker engine")
    p.add_argument("--out", default=None, help="write a Markdown table here")
    # internal: the app server child
    p.add_argument("--serve-app", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-batch", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "ContinuousBatchingLogger", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.serve_app:
        return serve_app_main(args)

    args.levels = [int(x) for x in args.streams.split(",")]
    model = args.model or default_model()
    max_batch = max(args.levels)
    rows = []
    load = (args.levels, args.requests, args.max_new_tokens, args.rounds)
    with app_process("worker", model, max_batch) as (url, tokens):
        rows += bench_levels("worker", url, tokens, *load)
        rows += bench_levels("worker, sampled", url, tokens, *load, temperature=0.2)
        if args.gradio_client:
            rows += bench_levels("worker", url, tokens, *load, client="gradio_client")
    from model.worker import WorkerConfig, WorkerEngine

    config = WorkerConfig(model, device="cpu", max_batch=max_batch, log_level="WARNING")
    worker = WorkerEngine(config, max_queue=4 * max_batch).start()
    try:
        rows += bench_direct("worker, engine API only", worker, *load)
        rows += bench_direct("worker, engine API only, sampled", worker, *load, temperature=0.2)
    finally:
        worker.close()
    serve_cmd = "(skipped)"
    if not args.skip_peer:
        from model.remote import RemoteEngine

        context = _context_length(model)
        with transformers_serve(model, max_batch, context) as (engine_url, serve_cmd):
            with app_process(engine_url, model, max_batch) as (url, tokens):
                rows += bench_levels("peer", url, tokens, *load)
            remote = RemoteEngine(engine_url, tokenizer=model)
            try:
                rows += bench_direct("peer, engine API only", remote, *load)
            finally:
                remote.close()
    if args.out:
        write_results(Path(args.out), rows, args, model, serve_cmd)
    for r in rows:
        log.info("%s", {k: v for k, v in r.items() if k not in ("errors", "ttfts")})
    return 0


def _context_length(model: str) -> int:
    import json

    config = json.loads((Path(model) / "config.json").read_text())
    return int(config.get("n_positions") or config.get("max_position_embeddings") or 2048)


if __name__ == "__main__":
    sys.exit(main())
