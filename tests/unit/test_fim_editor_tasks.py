"""Editor-sized infilling tasks built from installed package sources (bench/fim_editor.py):
which lines are gaps, the 3,000 / 1,500 character windows, and a set that is the same every run."""

import pytest

from bench import fim_editor
from bench.fim_editor import (
    PREFIX_CHARS,
    SUFFIX_CHARS,
    build_editor_tasks,
    file_tasks,
    is_gap_line,
    string_lines,
)


@pytest.mark.parametrize(
    "line,gap",
    [
        ("    event_data = prepare_event_data(config, body)", True),
        ("            if self.type == 'datetime'", True),
        ("", False),
        ("    # a comment about the next line", False),
        ("        pass", False),
        ("    )", False),
        ("    else:", False),
        ('    "a string in a list",', False),  # a literal, not code to write
        ("    x = 1", False),  # too little to write: a shape, not code
        ("    value = " + "a" * 120, False),  # longer than a fill's token budget
        ("    name = 'café'", False),
    ],
)
def test_a_gap_line_is_real_code_worth_writing(line, gap):
    assert is_gap_line(line) is gap


def test_lines_inside_docstrings_and_multi_line_strings_are_never_gaps():
    source = 'def f():\n    """Doc\n    more doc\n    """\n    return compute(a)\nX = 1\n'
    assert string_lines(source) == {1, 2, 3}


def _module(lines: int) -> str:
    body = ['"""A module."""\n']
    for i in range(lines):
        body.append(f"def function_{i}(value):\n")
        body.append(f'    """Doc of {i}."""\n')
        body.append(f"    result = transform(value, step={i})\n")
        body.append("    return result\n\n")
    return "".join(body)


def test_every_task_is_a_window_of_its_file_cut_at_line_boundaries(tmp_path):
    path = tmp_path / "sample.py"
    source = _module(200)
    path.write_text(source)
    tasks = file_tasks(path, "pkg/sample.py")
    kinds = {t.target.strip().split("(")[0].split("_")[0] for t in tasks}
    assert kinds == {"def function", "result = transform", "return result"}  # no docstring
    for t in tasks:
        window = t.prefix + t.target + t.suffix
        assert window in source
        start = source.index(window)
        assert start == 0 or source[start - 1] == "\n"  # the prefix starts a line
        assert t.prefix.endswith("\n") and t.suffix.startswith("\n") and t.suffix.endswith("\n")
        assert PREFIX_CHARS - 100 < len(t.prefix) <= PREFIX_CHARS
        assert SUFFIX_CHARS - 100 < len(t.suffix) <= SUFFIX_CHARS
        line_no = int(t.task_id.rsplit(":L", 1)[1])
        assert source.splitlines()[line_no - 1] == t.target
    # No gap so near the start or end that the editor window would be short.
    assert source.index(tasks[0].prefix + tasks[0].target) >= 0
    assert len(source) - source.index(tasks[-1].target) > SUFFIX_CHARS
    assert file_tasks(tmp_path / "missing.py", "x") == []


def test_a_short_file_gives_no_tasks(tmp_path):
    path = tmp_path / "short.py"
    path.write_text(_module(5))
    assert file_tasks(path, "short.py") == []


def test_the_set_is_the_same_every_run_and_its_first_n_are_the_smaller_set(tmp_path, monkeypatch):
    for name in ("fim_sample_a", "fim_sample_b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        for j in range(3):
            (tmp_path / name / f"mod{j}.py").write_text(_module(120 + 10 * j))
    monkeypatch.syspath_prepend(str(tmp_path))
    fim_editor._labelled_files.cache_clear()
    packages = ("fim_sample_a", "fim_sample_b")
    six = build_editor_tasks(6, packages=packages)
    assert six == build_editor_tasks(6, packages=packages)
    assert build_editor_tasks(3, packages=packages) == six[:3]
    assert len({t.task_id for t in six}) == 6
    assert [t.task_id.split("/")[0] for t in six] == list(packages) * 3  # in turn
    assert build_editor_tasks(6, seed=1, packages=packages) != six
    fim_editor._labelled_files.cache_clear()


def test_the_installed_packages_give_editor_sized_tasks():
    tasks = build_editor_tasks(3)
    assert [t.task_id.split("/")[0] for t in tasks] == ["gradio", "transformers", "sqlalchemy"]
    for t in tasks:
        assert is_gap_line(t.target) and "\n" not in t.target
        assert len(t.prefix) > PREFIX_CHARS // 2 and len(t.suffix) > SUFFIX_CHARS // 2


def test_edit_similarity_is_one_minus_the_edit_distance_over_the_longer_text():
    from bench.fim_tasks import edit_similarity

    assert edit_similarity("  return  x", "return x") == 1.0  # whitespace-normalised
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "x = 1") == 0.0
    assert edit_similarity("", "") == 1.0
