"""FakeEngine keeps the Engine contract the services rely on: Deltas, then exactly one Done."""

import subprocess
import sys
from pathlib import Path

import pytest

from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest, Queued
from tests.fakes import FakeEngine, fake_pool

ROOT = Path(__file__).resolve().parents[2]


def events(engine, prompt="p", cancel=None, **params):
    request = GenerationRequest(prompt, GenerationParams(**params))
    return list(engine.stream(request, cancel or CancelToken()))


@pytest.mark.parametrize(
    "reply, params, text, reason",
    [
        ("hello", {}, "hello", "eos"),
        ("hello world", {"max_new_tokens": 5}, "hello", "length"),
        ("a = 1\nb = 2", {"stop": ("\nb", "=")}, "a ", "stop"),  # the earliest stop wins
        ("abc<END>", {"stop": ("<END>",), "max_new_tokens": 4}, "abc<", "length"),
    ],
)
def test_replies_end_like_a_real_engine(reply, params, text, reason):
    got = events(FakeEngine(reply), **params)
    assert "".join(e.text for e in got[:-1]) == text
    assert all(isinstance(e, Delta) for e in got[:-1])
    assert got[-1] == Done(reason, prompt_tokens=1, generated_tokens=len(text))


def test_cancel_error_queue_and_a_reply_from_the_prompt():
    cancel = CancelToken()
    stream = FakeEngine("abcdef").stream(GenerationRequest("p"), cancel)
    assert next(stream) == Delta("a")
    cancel.cancel()
    assert list(stream) == [Done("cancelled", 1, 1)]

    failed = events(FakeEngine("abcdef", error="boom", error_kind="oom", error_after=2))
    assert failed == [Delta("a"), Delta("b"), Done("error", 1, 2, error="boom", error_kind="oom")]

    assert events(FakeEngine("x", queued=(2, 1)))[:2] == [Queued(2), Queued(1)]
    assert events(FakeEngine(str.upper), prompt="hi")[:2] == [Delta("H"), Delta("I")]


def test_a_cancel_token_wakes_its_watchers_once():
    # WorkerEngine.stream waits on its queue instead of polling the flag: Stop must wake it.
    import threading

    cancel, calls = CancelToken(), []
    cancel.on_cancel(lambda: calls.append(threading.current_thread().name))
    assert calls == []
    stopper = threading.Thread(target=cancel.cancel, args=("too long",), name="stopper")
    stopper.start()
    stopper.join()
    assert calls == ["stopper"] and cancel.reason == "too long"
    cancel.cancel("again")  # a second Stop wakes no one twice and keeps the first reason
    assert calls == ["stopper"] and cancel.reason == "too long"
    cancel.on_cancel(lambda: calls.append("late"))  # already cancelled: called at once
    assert calls == ["stopper", "late"]


def test_a_pool_of_fakes_offers_each_as_a_model():
    a, b = FakeEngine(model_id="fake/a"), FakeEngine(model_id="fake/b", special_tokens=frozenset())
    pool = fake_pool(a, b)
    assert pool.registry.ids == ["a", "b"]
    assert pool.choose("b", "completion")[1] is b
    assert pool.choose(None, "fim")[1] is a  # b has no FIM tokens
    pool.close()
    assert a.closed and b.closed


def test_fakes_need_no_torch():
    code = "import sys, tests.fakes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
