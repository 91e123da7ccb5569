"""Engine overhead, measured side by side in one run (not a test):

1. tokens/s of the app's generation path (Playground.complete -> LocalEngine.stream) divided by
   bare `model.generate` on the same model, prompt and settings (goal >= 0.97);
2. time-to-first-token overhead of the app path over bare generate (goal <= 10 ms);
3. cold start of `python app.py` to the first page served (goal <= 10 s).

    python bench/engine.py [--model PATH] [--runs 7] [--new-tokens 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n"


def in_thread(fn, *args):
    """Run fn in a fresh thread, as the engine does: OpenMP threads are placed differently in
    the main thread, which made main-thread generate() 17x slower on a loaded 2-core machine."""
    result = []
    t = threading.Thread(target=lambda: result.append(fn(*args)))
    t.start()
    t.join()
    return result[0]


def bare_generate(engine, params, max_new_tokens: int) -> tuple[float, int, float]:
    """(seconds, new tokens, seconds to first token) of model.generate with the same settings."""
    import torch

    from model.engine import GenerationRequest
    from model.tokens.token_stream import prepare

    enc = engine.tokenizer(PROMPT, return_tensors="pt")
    request = GenerationRequest(PROMPT, params)
    eos_ids = prepare(engine.tokenizer, engine.info, engine.base_eos_ids(), request).eos_ids
    kwargs = engine.generate_kwargs(request, eos_ids)  # same kwargs the engine uses
    kwargs["max_new_tokens"] = max_new_tokens
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = engine.model.generate(**enc, **kwargs)
        total = time.perf_counter() - t0
        t1 = time.perf_counter()
        engine.model.generate(**enc, **{**kwargs, "max_new_tokens": 1})
        ttft = time.perf_counter() - t1
    return total, out.shape[1] - enc["input_ids"].shape[1], ttft


def app_path(playground, params) -> tuple[float, int, float]:
    from model.engine import CancelToken

    t0 = time.perf_counter()
    first = None
    last = None
    for out in playground.complete(PROMPT, params, CancelToken()):
        if first is None and out.generated:
            first = time.perf_counter() - t0
        last = out
    total = time.perf_counter() - t0
    return total, last.done.generated_tokens, first or total


def cold_start(model: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--model", model],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        while time.perf_counter() - t0 < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("app did not start within 120 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    from app.services.playground import Playground
    from app.settings import Settings
    from model.engine import GenerationParams
    from model.engines.local import LocalEngine
    from model.engines.pool import EnginePool
    from model.prompts.templates import TaPrompt
    from model.registry import TINY_STARCODER_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(TINY_STARCODER_DIR))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    engine = LocalEngine.load(args.model, device=args.device)
    app = Settings.load([], env={})  # the app's defaults for what this run does not set
    playground = Playground(
        EnginePool.single(engine, app.data_dir), TaPrompt.load(), fim_candidates=app.fim_candidates
    )
    # Greedy, no eos cut-off differences: both paths decode exactly the same tokens.
    params = GenerationParams(max_new_tokens=args.new_tokens, temperature=0, repetition_penalty=1.2)
    in_thread(bare_generate, engine, params, args.new_tokens)  # warm-up
    app_path(playground, params)
    rates_bare, rates_app, ttft_bare, ttft_app = [], [], [], []
    for _ in range(args.runs):  # interleaved, so drift on a shared machine hits both alike
        s, n, f = in_thread(bare_generate, engine, params, args.new_tokens)
        rates_bare.append(n / s)
        ttft_bare.append(f)
        s, n, f = app_path(playground, params)
        rates_app.append(n / s)
        ttft_app.append(f)
    rb, ra = statistics.median(rates_bare), statistics.median(rates_app)
    tb, ta = statistics.median(ttft_bare), statistics.median(ttft_app)
    cold = statistics.median(cold_start(args.model) for _ in range(3))
    info = engine.info
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{info.device}/{info.dtype}, torch threads {__import__('torch').get_num_threads()}"
    )
    print(f"model: {info.model_id} ({info.architecture}), {args.new_tokens} new tokens, greedy")
    print(f"bare generate: {rb:.1f} tokens/s   app path: {ra:.1f} tokens/s   ratio {ra / rb:.3f}")
    print(
        f"TTFT bare {tb * 1000:.1f} ms   app {ta * 1000:.1f} ms   overhead {(ta - tb) * 1000:.1f} ms"
    )
    print(f"cold start python app.py -> first page: {cold:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
