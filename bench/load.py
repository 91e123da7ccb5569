"""Load benchmark: aggregate tokens/s and time-to-first-token at 1, 4, 8, 16 concurrent streams.

Both engines are driven through the app's own API, side by side in one run: plain HTTP + SSE on
Gradio's /gradio_api/call/complete and on the OpenAI-compatible /v1/completions from one asyncio
loop (and, with --gradio-client, one gradio_client session per stream), and, interleaved with
those, through the Engine API alone:
  worker  WorkerEngine: our worker process with transformers' continuous batching
  peer    RemoteEngine -> `transformers serve --continuous-batching` on loopback

    python -m bench.load [--model DIR] [--streams 1,4,8,16] [--max-new-tokens 64]
                         [--requests 32] [--rounds 3] [--out FILE]

Tokens are counted exactly by the engines (the app's Prometheus counter), not re-tokenized.
The load generators (levels, rounds) are bench/load_generators.py; here: the servers and the table.
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
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load_generators import bench_rounds, direct_path, web_path  # noqa: E402 - path set above

log = logging.getLogger("bench.load")


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
    from model.engines.pool import EnginePool

    if args.serve_app == "worker":
        from model.engines.worker import WorkerConfig, WorkerEngine

        config = WorkerConfig(args.model, device="cpu", max_batch=args.max_batch)
        engine = WorkerEngine(config, max_queue=4 * args.max_batch).start()
    else:
        from model.engines.remote import RemoteEngine

        engine = RemoteEngine(args.serve_app, tokenizer=args.model)
    metrics = EngineMetrics()
    data = tempfile.mkdtemp(prefix="bench-data-")
    settings = Settings.load(
        [
            "--data-dir",
            data,
            "--port",
            str(args.port),
            "--log-level",
            "WARNING",
            "--max-batch",
            str(args.max_batch),
            "--max-queue",
            str(4 * args.max_batch),
            "--rate-limit",
            "0",
            "--token-budget",
            "0",  # every stream is from 127.0.0.1
            "--stop-loops",
            "off",
        ],  # fixed lengths: a greedy run that loops goes on
        env={},
    )
    # The app lets max_batch + max_queue generations into the engine, which batches them.
    built = build_app(settings, EnginePool.single(metrics.wrap(engine), data_dir=data))
    start_http_server(args.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    try:
        serve(built.fastapi, settings)
    finally:
        engine.close()
    return 0


@contextlib.contextmanager
def direct_worker(model: str, max_batch: int):
    """A worker driven through the Engine API in this process, without the web stack."""
    from model.engines.worker import WorkerConfig, WorkerEngine

    config = WorkerConfig(model, device="cpu", max_batch=max_batch, log_level="WARNING")
    worker = WorkerEngine(config, max_queue=4 * max_batch).start()
    try:
        yield worker
    finally:
        worker.close()


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
        "(HTTP + SSE on Gradio's `/gradio_api/call/complete`, or `via /v1`: streamed "
        "`POST /v1/completions`; all streams on one asyncio loop, one keep-alive connection "
        "each; `via gradio_client` rows: one gradio_client session per stream instead); the "
        f"app runs in its own process; {args.max_new_tokens} new tokens, "
        "repetition_penalty 1.2, 8 code prompts.",
        f"- worker: WorkerEngine, max_batch={max(args.levels)} (continuous batching).",
        f"- peer: RemoteEngine -> `{serve_cmd}`.",
        "- `engine API only` rows: the same load on Engine.stream() of a second worker in the "
        "bench process, without Gradio/HTTP (what the engine alone sustains), run at each "
        "level right after the web paths in the same round. `sampled` rows use "
        "temperature 0.2 and top_p 0.9 (tiny-starcoder's defaults in the UI) instead of greedy.",
        "",
        "| engine | streams | requests | tokens | wall s | tokens/s | x single, median "
        "| x single, range | TTFT p50 s | TTFT p95 s | TTFT p50 over the engine's, ms "
        "| tokens/s over the engine's | load generator CPU cores | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cores = f"{r['client_cores']:.2f}" if "client_cores" in r else "—"
        ratios = r["ratios"] or [float("nan")]
        over = _spread(r.get("vs_ttft_ms"), "{:+.1f}")
        share = _spread(r.get("vs_tok_s"), "{:.2f}")
        lines.append(
            f"| {r['engine']} | {r['streams']} | {r['requests']} | {r['tokens']} | "
            f"{r['wall_s']:.1f} | {r['tok_s']:.1f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f}-{max(ratios):.2f} | {r['ttft_p50']:.3f} | "
            f"{r['ttft_p95']:.3f} | {over} | {share} | {cores} | {len(r['errors'])} |"
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
        "- `over the engine's`: the web path's TTFT p50 minus the engine-only path's, and its "
        "tokens/s over the engine-only path's, at the same level in the same round (median, "
        "with the range over the rounds). For /v1 the goal is <= 5 ms at 8 streams.",
        "- Levels last only a few seconds on a tiny model and the machine's speed drifts, "
        "which is why the levels run in turn and each ratio is taken within its round.",
        "- The peer's continuous batching drops `repetition_penalty` (transformers has no CB "
        "version of it) and fixes sampling settings at its first request; the worker honours "
        "both per request (model/engines/batching.py), so it does somewhat more work per token.",
    ]
    errors = [e for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Errors (first 5):", *[f"- {e}" for e in errors[:5]]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _spread(values: list[float] | None, fmt: str) -> str:
    if not values:
        return "—"
    median = fmt.format(statistics.median(values))
    return f"{median} ({fmt.format(min(values))} to {fmt.format(max(values))})"


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
    load = (args.levels, args.requests, args.rounds)
    max_new = args.max_new_tokens
    # The app (its own worker) and a second worker for the engine-only rows run side by side,
    # so each round measures every path at each level within a few seconds of the others.
    with (
        app_process("worker", model, max_batch) as (url, tokens),
        direct_worker(model, max_batch) as worker,
    ):
        paths = {
            "worker": web_path(url, tokens, max_new),
            "worker, via /v1": web_path(url, tokens, max_new, "v1"),
            "worker, engine API only": direct_path(worker, max_new),
            "worker, sampled": web_path(url, tokens, max_new, temperature=0.2),
            "worker, engine API only, sampled": direct_path(worker, max_new, temperature=0.2),
        }
        if args.gradio_client:
            paths["worker, via gradio_client"] = web_path(url, tokens, max_new, "gradio_client")
        baselines = {name: "worker, engine API only" for name in paths if "engine" not in name}
        baselines["worker, sampled"] = "worker, engine API only, sampled"
        rows += bench_rounds(paths, *load, baselines=baselines)
    serve_cmd = "(skipped)"
    if not args.skip_peer:
        from model.engines.remote import RemoteEngine

        context = _context_length(model)
        with transformers_serve(model, max_batch, context) as (engine_url, serve_cmd):
            remote = RemoteEngine(engine_url, tokenizer=model)
            with (
                app_process(engine_url, model, max_batch) as (url, tokens),
                contextlib.closing(remote),
            ):
                paths = {
                    "peer": web_path(url, tokens, max_new),
                    "peer, engine API only": direct_path(remote, max_new),
                }
                rows += bench_rounds(paths, *load, baselines={"peer": "peer, engine API only"})
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
