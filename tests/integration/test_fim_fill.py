"""Playground.fill on the real tiny-starcoder (its own FIM tokens) ends where the stop rule says
(the rule itself: tests/unit/test_fim_stops.py)."""

import pytest

from model.prompts.templates import split_fim


@pytest.fixture(scope="module")
def playground(engine):
    from tests.fakes import playground_over

    return playground_over(engine)


def _fill(playground, code: str):
    from model.engine import CancelToken, GenerationParams

    params = GenerationParams(temperature=0, max_new_tokens=48)
    return list(playground.fill(code, params, CancelToken()))[-1]


def test_fill_of_a_gap_inside_a_line_returns_one_line(playground):
    code = "def area(r):\n    return 3.14 * <FILL_HERE> ** 2\n"
    prefix, suffix = split_fim(code)
    out = _fill(playground, code)
    assert "\n" not in out.generated
    assert out.text == prefix + out.generated + suffix
    assert out.done.reason in ("stop", "eos", "length")


@pytest.mark.parametrize(
    "code",
    [
        "def add(a, b):\n    <FILL_HERE>\n\n\nprint(add(1, 2))\n",
        "import json\n\n\ndef load(path):\n    with open(path) as f:\n        <FILL_HERE>\n",
    ],
)
def test_fill_of_the_ui_examples_never_repeats_the_suffix_line(playground, code):
    prefix, suffix = split_fim(code)
    out = _fill(playground, code)
    assert out.text == prefix + out.generated + suffix
    assert "\nprint(add(1, 2))" not in out.generated
    assert out.generated == out.generated.rstrip()  # no blank lines doubled before the suffix
