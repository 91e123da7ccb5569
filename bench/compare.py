"""Compare's two columns at once against the same two generations one after the other (not a
test): the wall time of both, measured side by side in one run, over the real worker process.

Both columns run tiny-starcoder greedily (so both paths write the same tokens), through the page's own path (app/web/compare.py `compare_frames` and `Handlers.ui_code`). The
worker batches concurrent requests, so the pair should take well under twice one generation.

    python -m bench.compare [--runs 5] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()

    from types import SimpleNamespace

    from app.server import build_app, build_engines
    from app.settings import Settings
    from app.web.compare import compare_frames

    data = tempfile.mkdtemp(prefix="bench-compare-")
    argv = ["--data-dir", data, "--device", "cpu", "--model", "tiny-starcoder",
            "--rate-limit", "0", "--token-budget", "0", "--stop-loops", "off"]  # fmt: skip
    engines = build_engines(Settings.load(argv, env={}))
    try:
        handlers = build_app(Settings.load(argv, env={}), engines, None).handlers
        page = handlers.schema.page
        values = [{"temperature": 0, "max_new_tokens": args.new_tokens}.get(p.name) for p in page]
        # Greedy: both paths write the same tokens (min_tokens/ignore_eos are not page controls).
        request = SimpleNamespace(session_hash="bench", client=None, headers={})
        column = ("tiny-starcoder", values)

        def one_after_the_other() -> list[int]:
            counts = []
            for tab in ("bench-a", "bench-b"):
                *_, last = handlers.ui_code(
                    "completion", PROMPT, "tiny-starcoder", *values, request=request, tab=tab
                )
                counts.append(int(last[2].split(" tokens in")[0]))
            return counts

        def together() -> list[int]:
            final = [None, None]
            for frame in compare_frames(handlers, "completion", PROMPT, [column, column], request):
                final = [new or old for new, old in zip(frame, final, strict=True)]
            return [int(c.status.split(" tokens in")[0]) for c in final]

        one_after_the_other()  # warm: the worker loads the model on first use
        seq, par = [], []
        for _ in range(args.runs):  # interleaved, so machine noise falls on both alike
            for timings, fn in ((seq, one_after_the_other), (par, together)):
                start = time.perf_counter()
                counts = fn()
                timings.append(time.perf_counter() - start)
        med_seq, med_par = statistics.median(seq), statistics.median(par)
        print(f"tokens per column (last run): {counts}")
        print(f"one after the other: median {med_seq:.2f} s over {args.runs} runs")
        print(f"together (Compare):  median {med_par:.2f} s over {args.runs} runs")
        print(f"ratio together / one after the other: {med_par / med_seq:.2f}")
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        engines.close()


if __name__ == "__main__":
    main()
