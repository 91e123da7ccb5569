"""DTYPE's choices on this CPU, side by side in one run (not a test): float32, bfloat16 and, where
it loads something else, auto (on a bf16 CPU over a checkpoint's codes: fp32 decoding on them,
prompts on bf16 copies where the CPU has AMX; model/engines/loading.py).

1. decode speed of bare `model.generate` (greedy, fixed length) and the time of a 256-token
   prompt in each, per torch thread count, in interleaved rounds (medians), against float32's;
   in the main thread, the one whose OpenMP team loading made (a fresh thread beside it adds
   a second team, and libgomp then sleeps between ops: it halved every arm's speed);
2. greedy outputs of the page's completion examples in each, against float32's, with the first
   differing token when they differ (what the choice changes for a user).

Whether the CPU computes bf16 natively (AMX, AVX512-BF16) is printed: without it torch converts
bf16 matmuls through fp32, and `DTYPE=auto` keeps fp32.

`--without-codes`: the model's 2-D weights nudged by a relative 1e-3 first (a copy in a
temporary folder), so that no block is exactly a checkpoint's 4-bit or 8-bit code and float32
reads 4 bytes a weight, as for any model trained in fp32 or bf16 (SmolLM2's fp32 otherwise runs
on its codes, 0.63 bytes a weight; model/engines/codes.py).

    python bench/dtype.py [--model DIR] [--rounds 5] [--new-tokens 64] [--threads 1,2]
                          [--without-codes]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.web.ui import COMPLETION_EXAMPLES  # noqa: E402
from model.engines import loading  # noqa: E402
from model.paths import default_data_dir  # noqa: E402
from model.registry import SMOLLM2  # noqa: E402

PROMPTS = [e[0] for e in COMPLETION_EXAMPLES]


def timed_generate(model, ids, new_tokens: int) -> float:
    """Seconds per generated token, greedy, length fixed (EOS ignored)."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(
            ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        return (time.perf_counter() - t0) / new_tokens


def timed_prompt(model, ids) -> float:
    """Seconds for one forward pass over a prompt (what a request's first token waits for)."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        model(ids)
        return time.perf_counter() - t0


def greedy_text(model, tokenizer, prompt: str, new_tokens: int) -> list[int]:
    import torch

    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return out[0, ids.shape[1] :].tolist()


def without_codes(folder: str, into: Path) -> str:
    """A copy of the model folder whose 2-D weights are no longer exactly codes (see above)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, into, dirs_exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for path in into.glob("*.safetensors"):
        tensors = load_file(path)
        for name, t in tensors.items():
            if t.dim() == 2 and t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype)
                tensors[name] = (t + t.abs().mean() * 1e-3 * noise).contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
    return str(into)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(default_data_dir() / "models" / SMOLLM2))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--without-codes", action="store_true", help="nudge the weights off codes")
    args = p.parse_args(argv)
    import tempfile

    import torch

    if args.without_codes:
        scratch = tempfile.TemporaryDirectory(prefix="dtype-bench-")
        args.model = without_codes(args.model, Path(scratch.name) / "model")
        print(f"the model's weights nudged off its codes, in {args.model}")

    flags = loading.cpu_flags()
    native = sorted(f for f in flags if f in loading.BF16_CPU_FLAGS)
    print(
        f"CPU bf16 flags: {native or 'none'} (torch capability "
        f"{torch.backends.cpu.get_cpu_capability()}); DTYPE=auto picks "
        f"{loading.choose_placement('cpu').dtype}, or float32 over a checkpoint's codes"
    )
    models, linear = {}, {}
    for dtype in ("float32", "auto", "bfloat16"):
        model, tokenizer, info = loading.load(args.model, device="cpu", dtype=dtype)
        found = (info.dtype, info.linear, info.layers)
        if found in linear.values():  # auto loaded what float32 or bfloat16 loads: no own arm
            continue
        models[dtype], linear[dtype] = model, found
        print(f"  {dtype}: {info.dtype}, linear {info.linear}, layers {info.layers}")
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    prompt = tokenizer("import os\n" * 200, return_tensors="pt")["input_ids"][:, :256]
    threads = [int(t) for t in args.threads.split(",")]
    per_token: dict[tuple[str, int], list[float]] = {}
    for model in models.values():  # warm-up, not counted
        timed_generate(model, ids, 8)
    for _ in range(args.rounds):  # interleaved: a busy moment hits every arm alike
        for n in threads:
            torch.set_num_threads(n)
            for dtype, model in models.items():
                s = timed_generate(model, ids, args.new_tokens)
                per_token.setdefault((dtype, n), []).append(s)
                s = timed_prompt(model, prompt)
                per_token.setdefault((dtype, n, "prompt"), []).append(s)
    print(
        f"\nbare generate, greedy, {args.new_tokens} tokens, and a {prompt.shape[1]}-token "
        f"prompt; medians of {args.rounds} rounds"
    )
    print(f"{'threads':>7} {'DTYPE':>9} {'tok/s':>7} {'x fp32':>7} {'prompt ms':>9} {'x fp32':>7}")
    for n in threads:
        base = statistics.median(per_token[("float32", n)])
        base_prompt = statistics.median(per_token[("float32", n, "prompt")])
        for dtype in models:
            step = statistics.median(per_token[(dtype, n)])
            took = statistics.median(per_token[(dtype, n, "prompt")])
            print(
                f"{n:>7} {dtype:>9} {1 / step:>7.1f} {base / step:>6.2f}x {took * 1e3:>9.0f} "
                f"{base_prompt / took:>6.2f}x"
            )
    torch.set_num_threads(max(threads))
    for other in [d for d in models if d != "float32"]:
        print(f"\ngreedy outputs of the page's completion examples, {other} against float32")
        for text in PROMPTS:
            a = greedy_text(models["float32"], tokenizer, text, args.new_tokens)
            b = greedy_text(models[other], tokenizer, text, args.new_tokens)
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            head = text.splitlines()[0][:40]
            if first is None and len(a) == len(b):
                print(f"  same ({len(a)} tokens): {head!r}")
            else:
                at = first if first is not None else min(len(a), len(b))
                print(
                    f"  differ from token {at} of {len(a)}: {head!r}\n"
                    f"    float32: {tokenizer.decode(a[at : at + 12])!r}\n"
                    f"    {other}: {tokenizer.decode(b[at : at + 12])!r}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
