"""Runs that stop when they loop (model/tokens/loops.py, applied by the services to every engine)."""

import inspect
import json.decoder
import textwrap

import pytest

from model.engine import CancelToken, GenerationParams
from model.tokens.loops import LoopGuard
from tests.fakes import FakeEngine, fake_playground

LADDER = "def is_prime(n):\n" + "".join(
    f"    if n == {k}:\n        return {k in (2, 3, 5, 7, 11, 13)}\n" for k in range(2, 60)
)


def _first_loop(text: str) -> int | None:
    guard = LoopGuard()
    for i, ch in enumerate(text):
        if guard.feed(ch):
            return i + 1
    return None


def test_a_block_written_again_and_again_is_a_loop():
    text = "import os\n\ndef main():\n    print('" + "[output file]" * 40
    at = _first_loop(text)
    assert at is not None and at < len(text) and text[:at].count("[output file]") <= 17


def test_a_ladder_of_numbered_lines_is_a_loop():
    at = _first_loop(LADDER)
    assert at is not None and LADDER[:at].count("if n ==") <= 9


def test_real_code_is_not_a_loop():
    # A real module, read as the model would write it: nothing in it repeats like a loop.
    for module in (json.decoder, textwrap, inspect):
        assert _first_loop(inspect.getsource(module)) is None, module.__name__


def test_a_line_of_one_character_needs_200_of_them():
    assert _first_loop("# " + "=" * 150 + "\n") is None
    assert _first_loop("# " + "=" * 250) is not None


def _complete(reply: str, **kwargs):
    engine = FakeEngine(reply)
    pg = fake_playground(engine, **kwargs)
    params = GenerationParams(max_new_tokens=2000)
    return list(pg.complete("import os\n", params, CancelToken())), engine


def test_a_looping_run_stops_and_says_why():
    outs, engine = _complete("def main():\n" + "    print('[output file]')\n" * 200)
    final = outs[-1]
    assert final.done.reason == "loop"
    assert "stopped: the model was repeating itself" in final.status
    assert final.generated.count("[output file]") < 20  # not 2,000 tokens of it
    assert engine.cancels[0].cancelled


def test_the_rule_can_be_turned_off():
    outs, _ = _complete("x\n" * 300, stop_loops=False)
    assert outs[-1].done.reason == "eos" and outs[-1].generated == "x\n" * 300


def test_the_api_gets_a_normal_answer_when_a_loop_ends_it():
    from app.services.generate import Generations

    engine = FakeEngine("ab" * 500)
    generations = Generations(fake_playground(engine))
    outs = list(generations.complete("x", GenerationParams(max_new_tokens=900), None))
    assert outs[-1].done.reason == "loop"  # not "The generation was stopped before ..."


@pytest.mark.parametrize("reply", ["    return n * factorial(n - 1)\n", "pass\n"])
def test_ordinary_answers_are_untouched(reply):
    outs, _ = _complete(reply)
    assert outs[-1].done.reason == "eos" and outs[-1].generated == reply
