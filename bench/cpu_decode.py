"""Where a CPU decode step's time goes, side by side in one run (not a test):

1. `linear`: SmolLM2's weight shapes through `F.linear` on the plain and the transposed
   (column-major) weight, through oneDNN's packed inner product, and through kernel.c on its
   packed layout (model/engines/packing.py, kernel.py; where it builds), at 1, 8, 64 and 256
   rows, per torch thread count, with the rate each reads the weights at. Many copies of each
   weight, so that nothing stays in the cache, as in a model.
2. `threads`: one SmolLM2 decode step (1 row, the model as the worker loads it) at 1 and 2
   threads, computed in the main thread and in a second Python thread whose process already
   has an OpenMP team of 2 (model/engines/threads.py: two teams make libgomp sleep between
   ops), in interleaved rounds.
3. `layers`: SmolLM2 (as the worker loads it) with layer.c computing its decoder layers
   (model/engines/fused.py) against transformers' own layers on the same packed weights, in
   interleaved rounds: a decode step of 1 and of 8 rows over a 200-token prompt's cache (a
   fill's shape), and continuous batching (the worker's batch, in process) at 1 and 8 streams.
   The batch computes beside the main thread's OpenMP team here (the worker has one team), so
   its tok/s are below the served path's (bench/peers.py); the ratio is the measure.
4. `tiles`: kernel.c's AVX2 tiles against its AVX-512 ones (kernel512.c; where the CPU has
   AVX-512F) over a whole SmolLM2 step's linears (30 layers of 7 projections, each its own
   matrix, and the tied output layer), as the checkpoint's codes (Q4_1 projections, Q8_0
   output layer, as model/engines/codes.py finds them) and as fp32, at 1-32 rows (a decode
   step of that many streams), in interleaved rounds.

5. `bf16`: kernel.c's bf16 arithmetic (DTYPE=bfloat16 on a CPU with AVX512-BF16) against its
   exact fp32 over the same step's matrices, at 1-8 rows: the codes as they are, and the
   matrices as fp32 against bf16 weights (a model without codes).

6. `pages`: a SmolLM2 step's 211 kernel.c calls (the model as the worker loads it, its packed
   weights on 2 MB pages where the system has them: model/engines/hugepages.py) against the
   same calls over a copy of those weights on 4 KB pages, in interleaved rounds, at 1-16 rows;
   each also "cold", right after 64 MB of other writes (as after another process ran).

    python bench/cpu_decode.py [linear|threads|layers|tiles|bf16|pages|both] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.paths import default_data_dir  # noqa: E402
from model.registry import SMOLLM2  # noqa: E402

# SmolLM2-135M: attention q/o, k/v, MLP gate/up, down; the tied output layer
SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]


def timed(fn, n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def linear(threads: list[int], rounds: int) -> None:
    import torch
    import torch.nn.functional as F

    from model.engines import kernel

    lib = kernel.library()
    print(
        "| weight | rows | threads | plain ms | column-major ms | oneDNN ms | kernel.c ms "
        "| oneDNN GB/s | kernel.c GB/s | oneDNN / kernel.c |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for out_f, in_f in SHAPES:
        copies = 1 if out_f > 10_000 else 30
        plain = [torch.randn(out_f, in_f) for _ in range(copies)]
        column = [w.t().contiguous().t() for w in plain]
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in plain]
        ours = [kernel.linear(lib, kernel.pack(w), None, in_f, out_f) for w in plain] if lib else []
        for rows in (1, 8, 64, 256):
            x = torch.randn(rows, in_f)
            for n in threads:
                torch.set_num_threads(n)
                arms = {
                    "plain": lambda x=x, ws=plain: [F.linear(x, w) for w in ws],
                    "column": lambda x=x, ws=column: [F.linear(x, w) for w in ws],
                    "packed": lambda x=x, ws=packed: [
                        torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "") for p in ws
                    ],
                }
                if ours:
                    arms["kernel"] = lambda x=x, fs=ours: [f(x) for f in fs]
                ms = {k: [] for k in arms}
                for _ in range(rounds):  # interleaved
                    for k, fn in arms.items():
                        ms[k].append(timed(fn, 5) / copies)
                m = {k: statistics.median(v) for k, v in ms.items()}
                k = m.get("kernel", float("nan"))
                gb = out_f * in_f * 4 / 1e6  # MB per call / ms = GB/s
                print(
                    f"| {out_f} x {in_f} | {rows} | {n} | {m['plain']:.3f} | {m['column']:.3f} "
                    f"| {m['packed']:.3f} | {k:.3f} | {gb / m['packed']:.1f} | {gb / k:.1f} "
                    f"| {m['packed'] / k:.2f} |"
                )


def threads_step(rounds: int) -> None:
    import torch

    from model.engines.loading import load
    from model.smollm2 import ensure_converted

    folder = ensure_converted(default_data_dir() / "models" / SMOLLM2)
    torch.set_num_threads(2)  # the load runs a team of 2 in this (the main) thread
    model, tokenizer, _ = load(str(folder), device="cpu")
    ids = tokenizer("def fibonacci(n):\n    ", return_tensors="pt")["input_ids"]

    def step_ms(n: int) -> float:
        torch.set_num_threads(n)
        with torch.inference_mode():
            out = model(ids, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            times = []
            for _ in range(16):
                start = time.perf_counter()
                out = model(token, past_key_values=cache, use_cache=True)
                times.append(time.perf_counter() - start)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return statistics.median(times) * 1e3

    def in_thread(n: int) -> float:
        got = []
        t = threading.Thread(target=lambda: got.append(step_ms(n)))
        t.start()
        t.join()
        return got[0]

    arms = {
        "main thread, 1 thread": lambda: step_ms(1),
        "main thread, 2 threads": lambda: step_ms(2),
        "second thread, 1 thread": lambda: in_thread(1),
        "second thread, 2 threads (two teams)": lambda: in_thread(2),
    }
    ms = {k: [] for k in arms}
    for _ in range(rounds):
        for k, fn in arms.items():
            ms[k].append(fn())
    print("\n| SmolLM2 decode step, 1 row | ms (median of rounds) | rounds |")
    print("|---|---:|---|")
    for k, v in ms.items():
        print(f"| {k} | {statistics.median(v):.1f} | {' '.join(f'{x:.0f}' for x in v)} |")


def layers(rounds: int) -> None:
    import torch

    from model.engine import Done, GenerationParams, GenerationRequest
    from model.engines.batching import BatchingServer
    from model.engines.fused import fuse_layers, unfuse_layers
    from model.engines.loading import load
    from model.smollm2 import ensure_converted

    folder = ensure_converted(default_data_dir() / "models" / SMOLLM2)
    torch.set_num_threads(2)
    model, tokenizer, info = load(str(folder), device="cpu")
    if info.layers != "layer.c":
        print(f"layer.c does not run here (layers: {info.layers!r}): nothing to compare")
        return
    prompt = torch.randint(100, 20000, (1, 200))

    def step_ms(rows: int) -> float:
        with torch.inference_mode():
            cache = model(prompt, use_cache=True, logits_to_keep=1).cache
            cache.batch_repeat_interleave(rows)
            token, times = torch.full((rows, 1), 523), []
            for _ in range(12):
                start = time.perf_counter()
                cache = model(token, cache=cache, use_cache=True).cache
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    done = threading.Event()
    left = [0]

    def send(pairs):
        for _, event in pairs:
            if isinstance(event, Done):
                left[0] -= 1
                if left[0] == 0:
                    done.set()

    prompts = ["def fibonacci(n):", "def is_prime(n):", "class Stack:", "def read_csv(path):"]
    params = GenerationParams(
        max_new_tokens=64, temperature=0, repetition_penalty=1.0, min_tokens=64, ignore_eos=True
    )

    def batch_tok_s(streams: int) -> float:
        done.clear()
        left[0] = streams
        start = time.perf_counter()
        for i in range(streams):
            server.submit(f"{time.time_ns()}-{i}", GenerationRequest(prompts[i % 4], params))
        done.wait(600)
        return streams * 64 / (time.perf_counter() - start)

    def compare(arms: dict) -> dict:
        got = {(arm, way): [] for arm in arms for way in ("layer.c", "transformers")}
        for _ in range(rounds):
            for way in ("layer.c", "transformers"):
                (fuse_layers if way == "layer.c" else unfuse_layers)(model)
                for arm, fn in arms.items():
                    got[arm, way].append(fn())
        return got

    # The steps before the batch exists: its idle thread's OpenMP team would slow the main
    # thread's (two teams; see `threads`).
    got = compare(
        {
            "decode step, 1 row (ms)": lambda: step_ms(1),
            "decode step, 8 rows (ms)": lambda: step_ms(8),
        }
    )
    server = BatchingServer(model, tokenizer, info, send, max_batch=8)
    got |= compare(
        {
            "batch, 1 stream (tok/s)": lambda: batch_tok_s(1),
            "batch, 8 streams (tok/s)": lambda: batch_tok_s(8),
        }
    )
    server.close()
    arms = dict.fromkeys(arm for arm, _ in got)
    print("\n| SmolLM2, 2 threads | layer.c | transformers' layers | layer.c x |")
    print("|---|---:|---:|---:|")
    for arm in arms:
        a, b = (statistics.median(got[arm, w]) for w in ("layer.c", "transformers"))
        speedup = b / a if arm.endswith("(ms)") else a / b
        print(f"| {arm} | {a:.1f} | {b:.1f} | {speedup:.2f} |")


def step_weights():
    """A SmolLM2 step's matrices, random but exactly codes as the checkpoint's are: 30 layers of
    7 Q4_1 projections, then the tied Q8_0 output layer (fp32 tensors)."""
    import torch

    from tests.unit.test_codes import as_q4, as_q8

    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576),
              (576, 1536)] * 30  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    weights = [as_q4(torch.randn(o, i, generator=gen) * 0.05) for o, i in shapes]
    weights.append(as_q8(torch.randn(49152, 576, generator=gen) * 0.05))
    return weights


def tiles(rounds: int, rows_list=(1, 2, 4, 8, 16, 32)) -> None:
    import torch

    from model.engines import codes, kernel

    lib = kernel.library()
    if lib is None:
        print("tiles: kernel.c does not run here")
        return
    own = kernel.tiles(lib)
    modes = {"avx2": kernel.AVX2}
    if kernel.tiles(lib, kernel.AVX512_ALL) == kernel.AVX512_ALL:
        modes["avx512"] = kernel.AVX512_ALL
    kernel.tiles(lib, own)
    weights = step_weights()
    layers = {"codes": [], "fp32": []}
    for w in weights:
        found = codes.find(w)
        out_f, in_f = w.shape
        layers["codes"].append(kernel.linear(lib, found.packed, None, in_f, out_f, found.format))
        layers["fp32"].append(kernel.linear(lib, kernel.pack(w), None, in_f, out_f))
    projections = len(weights) - 1
    del weights  # the packed copies are what is timed
    print(f"kernel.c's tiles, {projections} projections + the output layer, "
          f"{torch.get_num_threads()} threads; ms per step, medians of {rounds} rounds")  # fmt: skip
    head = " | ".join(f"{f} {m} ms" for f in layers for m in modes)
    print(f"| rows | {head} | codes: avx512 / avx2 |")
    print("|---:|" + "---:|" * (len(layers) * len(modes) + 1))
    for rows in rows_list:
        xs = {576: torch.randn(rows, 576), 1536: torch.randn(rows, 1536)}
        ms = {(f, m): [] for f in layers for m in modes}
        with torch.inference_mode():
            for _ in range(rounds):  # interleaved
                for f, m in ms:
                    kernel.tiles(lib, modes[m])
                    fns = layers[f]
                    ms[f, m].append(timed(lambda fns=fns, xs=xs: [fn(xs[fn.inp]) for fn in fns], 3))
        kernel.tiles(lib, own)
        med = {k: statistics.median(v) for k, v in ms.items()}
        cells = " | ".join(f"{med[k]:.2f}" for k in ms)
        ratio = med["codes", "avx2"] / med["codes", "avx512"] if "avx512" in modes else float("nan")
        print(f"| {rows} | {cells} | {ratio:.2f}x |", flush=True)


def bf16(rounds: int, rows_list=(1, 2, 3, 4, 8)) -> None:
    """kernel.c's bf16 arithmetic (DTYPE=bfloat16) against its exact fp32 over a SmolLM2 step's
    211 matrices, in interleaved rounds: the codes as they are (Q4 in bf16, where kernel.c's
    linear sends up to BF16X_ROWS rows; the Q8 output layer exact in both), and a model without
    codes (the same matrices as fp32 weights against bf16 weights, half the bytes)."""
    import torch

    from model.engines import codes, kernel

    lib = kernel.library()
    if lib is None or not kernel.bf16_arithmetic():
        print("bf16: kernel.c does not compute in bf16 here (needs AVX512-BF16)")
        return
    arms = {"codes fp32": [], "codes bf16": [], "fp32 weights": [], "bf16 weights": []}
    for w in step_weights():
        found, (out_f, in_f) = codes.find(w), w.shape
        bf = found.format | kernel.BF16X if found.format == kernel.Q4 else found.format
        arms["codes fp32"].append(kernel.linear(lib, found.packed, None, in_f, out_f, found.format))
        arms["codes bf16"].append(kernel.linear(lib, found.packed, None, in_f, out_f, bf))
        arms["fp32 weights"].append(kernel.linear(lib, kernel.pack(w), None, in_f, out_f))
        packed = kernel.pack_bf16(w)
        arms["bf16 weights"].append(kernel.linear(lib, packed, None, in_f, out_f, kernel.BF16))
    print(f"kernel.c, a SmolLM2 step's 211 matrices, {torch.get_num_threads()} threads; ms per "
          f"step, medians of {rounds} rounds")  # fmt: skip
    print("| rows | " + " | ".join(f"{a} ms" for a in arms) + " | codes | weights |")
    print("|---:|" + "---:|" * (len(arms) + 2))
    for rows in rows_list:
        xs = {576: torch.randn(rows, 576), 1536: torch.randn(rows, 1536)}
        ms = {a: [] for a in arms}
        with torch.inference_mode():
            for _ in range(rounds):  # interleaved
                for a, fns in arms.items():
                    ms[a].append(timed(lambda fns=fns, xs=xs: [fn(xs[fn.inp]) for fn in fns], 3))
        med = {a: statistics.median(v) for a, v in ms.items()}
        cells = " | ".join(f"{med[a]:.2f}" for a in arms)
        codes_x = med["codes fp32"] / med["codes bf16"]
        weights_x = med["fp32 weights"] / med["bf16 weights"]
        print(f"| {rows} | {cells} | {codes_x:.2f}x | {weights_x:.2f}x |", flush=True)


def pages(rounds: int, rows_list=(1, 2, 4, 8, 16)) -> None:
    import mmap

    import torch

    from model.engines import hugepages, kernel
    from model.engines.loading import load
    from model.engines.packing import PackedLinear

    model_dir = default_data_dir() / "models" / SMOLLM2
    model, _, info = load(str(model_dir), device="cpu", dtype="auto")
    layers = [m for m in model.modules() if isinstance(m, PackedLinear) and m.backend == "kernel"]
    if not layers:
        print("pages: kernel.c does not run here")
        return
    # The same weights on 4 KB pages, whatever THP's mode: a mapping marked MADV_NOHUGEPAGE.
    small = hugepages.side_by_side(
        [m.packed for m in layers], getattr(mmap, "MADV_NOHUGEPAGE", None)
    )
    arms = {"loaded": [], "4 KB pages": []}
    lib = kernel.library()
    for m, copy in zip(layers, small, strict=True):
        arms["loaded"].append(m._kernel)
        arms["4 KB pages"].append(
            kernel.linear(lib, copy, m.kernel_bias, m.in_features, m.out_features, m.format)
        )
    huge = hugepages.huge_bytes(layers[0].packed) >> 20
    total = sum(m.packed.nbytes for m in layers)
    print(f"{len(layers)} kernel.c calls over {total / 2**20:.0f} MB; the loaded weights: "
          f"{info.linear} ({huge} MB of their mapping on huge pages; THP "
          f"{'on' if hugepages.available() else 'off'}); {torch.get_num_threads()} threads; "
          f"ms per step, medians of {rounds} rounds")  # fmt: skip
    print("| rows | cache | loaded ms | 4 KB pages ms | 4 KB / loaded |")
    print("|---:|---|---:|---:|---:|")
    other = torch.zeros(64 << 20, dtype=torch.uint8)
    for rows in rows_list:
        xs = [torch.randn(rows, m.in_features) for m in layers]
        ms = {(arm, cold): [] for cold in (False, True) for arm in arms}
        with torch.inference_mode():
            for _ in range(rounds):  # interleaved
                for arm, cold in ms:
                    fns = arms[arm]
                    for fn, x in zip(
                        fns, xs, strict=True
                    ):  # warm: the arm's pages in the TLB's reach
                        fn(x)
                    if cold:
                        other.add_(1)
                    t0 = time.perf_counter()
                    for fn, x in zip(fns, xs, strict=True):
                        fn(x)
                    ms[arm, cold].append((time.perf_counter() - t0) * 1e3)
        for cold in (False, True):
            a, b = (statistics.median(ms[arm, cold]) for arm in arms)
            print(f"| {rows} | {'cold' if cold else 'warm'} | {a:.2f} | {b:.2f} | {b / a:.2f}x |",
                  flush=True)  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/cpu_decode.py", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "part",
        nargs="?",
        default="both",
        choices=("linear", "threads", "layers", "tiles", "bf16", "pages", "both"),
    )
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", default="1,2", help="linear: torch thread counts")
    args = p.parse_args(argv)
    if args.part in ("linear", "both"):
        linear([int(t) for t in args.threads.split(",")], args.rounds)
    if args.part in ("threads", "both"):
        threads_step(args.rounds)
    if args.part in ("layers", "both"):
        layers(args.rounds)
    if args.part == "tiles":
        tiles(args.rounds)
    if args.part == "bf16":
        bf16(args.rounds)
    if args.part == "pages":
        pages(args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
