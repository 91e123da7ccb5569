"""Where a fill-in-the-middle ends: the stop rule (model/prompts/templates.py). Playground.fill using it on
the real tiny-starcoder: tests/integration/test_fim_fill.py."""

import pytest

from model.prompts.templates import (
    fim_gap_is_single_line,
    fim_stop_sequences,
    split_fim,
    trim_fim_middle,
)
from model.tokens.stops import StopMatcher


def _middle(generated: str, prefix: str, suffix: str, **kw) -> str:
    """What the engine shows of `generated` under the rule's stops (the real StopMatcher)."""
    matcher = StopMatcher(fim_stop_sequences(prefix, suffix, **kw))
    return matcher.feed(generated) + ("" if matcher.stopped else matcher.flush())


def test_a_gap_inside_a_line_with_code_after_it_ends_at_the_line_end():
    prefix, suffix = split_fim("def area(r):\n    return 3.14 * <FILL_HERE> ** 2\n")
    assert fim_gap_is_single_line(suffix)
    assert fim_stop_sequences(prefix, suffix) == ("\n",)
    assert _middle("r\n    return 0\n", prefix, suffix) == "r"


def test_a_single_line_middle_is_kept_whole_even_if_it_ends_like_the_rest_of_its_line():
    # `sum(x)` before `)`: a re-written `)` or sum's own? Only the newline ends the middle.
    prefix, suffix = split_fim("print(<FILL_HERE>)\nprint(2)\n")
    assert fim_stop_sequences(prefix, suffix) == ("\n",)
    assert _middle("sum(x)\nprint(2)\n", prefix, suffix) == "sum(x)"


def test_a_gap_on_its_own_line_ends_where_the_model_starts_the_suffix():
    prefix, suffix = split_fim("def add(a, b):\n    <FILL_HERE>\n\n\nprint(add(1, 2))\n")
    assert not fim_gap_is_single_line(suffix)
    assert fim_stop_sequences(prefix, suffix) == ("\nprint(add(1, 2))",)
    middle = _middle("return a + b\n\n\nprint(add(1, 2))\nprint(3)", prefix, suffix)
    assert middle == "return a + b\n\n"
    # Several lines are allowed: only the suffix's own first line ends the middle.
    assert _middle("c = a + b\n    return c\n\nprint(add(1, 2))", prefix, suffix) == (
        "c = a + b\n    return c\n"
    )


def test_the_suffix_line_keeps_its_indentation_so_a_deeper_copy_does_not_stop():
    prefix, suffix = split_fim("def f(x):\n    if x:\n        <FILL_HERE>\n    return x\n")
    assert fim_stop_sequences(prefix, suffix) == ("\n    return x",)
    assert _middle("x += 1\n        return x\n    return x", prefix, suffix) == (
        "x += 1\n        return x"
    )


@pytest.mark.parametrize("suffix", ["", "\n", "\n   \n\n"])
def test_nothing_after_the_gap_means_no_stop_but_the_models_own(suffix):
    assert fim_stop_sequences("def f():\n    ", suffix) == ()


def test_a_caller_that_knows_the_gap_is_one_line_can_say_so():
    assert fim_stop_sequences("a = 1\n", "\nb = 2\n", single_line=True) == ("\n",)
    assert fim_stop_sequences("x = (", ")\n", single_line=False) == ()


@pytest.mark.parametrize(
    "middle,suffix,trimmed",
    [
        ("return a + b\n\n", "\n\n\nprint(add(1, 2))\n", "return a + b"),
        ("return x  \n", "  \nnext\n", "return x"),
        ("r ", " ** 2\n", "r "),  # code after the gap on its line: keep the space
        ("x\n", "", "x\n"),  # the end of the file: nothing to double
    ],
)
def test_trailing_whitespace_before_a_suffix_on_a_new_line_is_dropped(middle, suffix, trimmed):
    assert trim_fim_middle(middle, suffix) == trimmed
