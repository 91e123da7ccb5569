"""Worker memory: resident memory of each embedded model's worker process, and where it goes.

Starts the real worker the way the app does (app/server.py, build_engines), one model at a time,
and reads the worker's RSS from /proc right after start (idle) and after one request, beside the
weights and KV cache bytes the worker reports (ModelInfo). Linux only (/proc).

    python bench/memory.py [--models tiny-starcoder smollm2-135m-instruct] [--max-batch 8]
                           [--kv-cache-mb MB | --old-kv-sizing] [--data-dir DIR]
                           [--dtype auto|float32|bfloat16]

--old-kv-sizing allocates what the worker did before KV_CACHE_MB existed: `max_batch` full
contexts (for SmolLM2 8 x 8192 tokens, 3.0 GB). SmolLM2 is converted from its GGUF on first use
into DATA_DIR/models (about 30 s, once).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import Settings  # noqa: E402
from model.engine import CancelToken, GenerationParams, GenerationRequest  # noqa: E402
from model.engines.loading import DTYPES  # noqa: E402
from model.engines.worker import WorkerConfig, WorkerEngine  # noqa: E402
from model.paths import default_data_dir  # noqa: E402
from model.registry import SMOLLM2, TINY_STARCODER, Registry  # noqa: E402

MIB = 2**20
PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


def rss(pid: int) -> dict[str, int]:
    """VmRSS (all resident), RssAnon (heap, tensors), RssFile (mapped files) and VmHWM (peak)."""
    keys = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        rows = (line.split(":", 1) for line in f)
        return {k: int(v.split()[0]) * 1024 for k, v in rows if k in keys}


def measure(model_id: str, args) -> dict:
    spec = Registry.build(args.data_dir).get(model_id)
    # As build_engines: packaged models are resolved (converted) inside the worker.
    model = spec.id if spec.source == "package" else spec.location
    kv_mb = 10**9 if args.old_kv_sizing else args.kv_cache_mb  # clamped to max_batch contexts
    config = WorkerConfig(
        model,
        device="cpu",
        max_batch=args.max_batch,
        data_dir=args.data_dir,
        kv_cache_mb=kv_mb,
        log_level="WARNING",
        dtype=args.dtype,
    )
    start = time.perf_counter()
    engine = WorkerEngine(config, max_queue=args.max_batch).start()
    try:
        started = time.perf_counter() - start
        time.sleep(1)  # let the worker settle (its router thread, the pipe)
        idle = rss(engine.worker_pid)
        params = GenerationParams(max_new_tokens=64, temperature=0)
        events = list(engine.stream(GenerationRequest(PROMPT, params), CancelToken()))
        assert events[-1].reason in ("length", "eos"), events[-1]
        after = rss(engine.worker_pid)
        info = engine.info
        return dict(
            model=f"{model_id} ({info.dtype})",
            sizing=_sizing(args),
            start_s=started,
            idle=idle,
            after=after,
            weights=info.weight_bytes,
            kv=info.kv_cache_bytes,
            context=int(info.context_length),
            limited_by=getattr(info.context_length, "limited_by", None),
        )
    finally:
        engine.close()


def _sizing(args) -> str:
    if args.old_kv_sizing:
        return "old: max_batch full contexts"
    return f"KV_CACHE_MB={args.kv_cache_mb:g}" if args.kv_cache_mb else "default KV budget"


def _mb(n: int) -> str:
    return f"{n / MIB:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/memory.py", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=[TINY_STARCODER, SMOLLM2])
    app = Settings.load([], env={})
    p.add_argument("--max-batch", type=int, default=app.max_batch, help="default: the app's")
    sizing = p.add_mutually_exclusive_group()
    sizing.add_argument("--kv-cache-mb", type=float, default=None)
    sizing.add_argument("--old-kv-sizing", action="store_true")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="the app's DTYPE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not Path("/proc/self/status").exists():
        print("bench/memory.py reads /proc: Linux only", file=sys.stderr)
        return 1
    print(
        "| model | KV sizing | start s | RSS idle MiB (anon + file) | RSS after 1 request MiB "
        "| weights MiB | KV cache MiB | per-request limit |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for model_id in args.models:
        r = measure(model_id, args)
        idle, after = r["idle"], r["after"]
        limit = f"{r['context']:,}" + (f" ({r['limited_by']})" if r["limited_by"] else "")
        print(
            f"| {r['model']} | {r['sizing']} | {r['start_s']:.1f} | {_mb(idle['VmRSS'])} "
            f"({_mb(idle['RssAnon'])} + {_mb(idle['RssFile'])}) | {_mb(after['VmRSS'])} "
            f"| {_mb(r['weights'])} | {_mb(r['kv'])} | {limit} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
