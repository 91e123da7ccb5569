"""Generations (app/services/generate.py) over a FakeEngine: Stop and supersede per tab, an API
call that is stopped fails with why, limits keyed on the client's address, frame throttling."""

from types import SimpleNamespace

import pytest

from app.ratelimit import RateLimited
from app.services.generate import Generations, throttle
from app.services.playground import Output
from model.engine import Done, GenerationParams
from model.errors import PlaygroundError
from tests.fakes import FakeEngine, fake_playground

PARAMS = GenerationParams()


def request(session="s1", host="10.0.0.1", headers=None):
    """What Gradio hands a handler: the session hash, the socket peer and the headers."""
    return SimpleNamespace(
        session_hash=session, client=SimpleNamespace(host=host), headers=headers or {}
    )


def generations(reply="abcdef", **kwargs):
    fake = FakeEngine(reply)
    return Generations(fake_playground(fake, **kwargs)), fake


def test_stop_ends_that_tabs_generation_only():
    gens, _ = generations()
    req = request()
    mine = gens.complete("p", PARAMS, req, tab="completion")
    other = gens.complete("p", PARAMS, req, tab="chat")
    next(mine), next(other)
    assert gens.stop(req, "completion") is True
    stopped, finished = list(mine)[-1], list(other)[-1]
    assert stopped.text == "pa" and stopped.status.endswith("· stopped by you · fake-coder")
    assert finished.text == "pabcdef" and finished.done.reason == "eos"


def test_a_new_generation_in_the_same_tab_supersedes_the_old_one():
    gens, _ = generations()
    req = request()
    first = gens.complete("p", PARAMS, req, tab="completion")
    next(first)
    assert list(gens.complete("q", PARAMS, req, tab="completion"))[-1].text == "qabcdef"
    assert "stopped: you started a new generation in this tab" in list(first)[-1].status
    assert gens.stop(req, "completion") is False  # nothing is running there any more


def test_an_api_call_that_is_stopped_fails_with_why_instead_of_returning_part():
    gens, fake = generations()
    call = gens.complete("p", PARAMS, request(), tab=None)
    next(call)
    fake.cancels[-1].cancel("the server is shutting down")
    with pytest.raises(PlaygroundError) as err:
        list(call)
    assert err.value.kind == "cancelled"
    assert err.value.message == (
        "The generation was stopped before it finished (the server is shutting down)."
    )


def test_whatever_ends_a_generation_frees_the_model():
    gens, fake = generations()
    list(gens.complete("p", PARAMS, request(), tab="completion"))
    failing = Generations(fake_playground(broken := FakeEngine("abc", error="boom")))
    with pytest.raises(PlaygroundError, match="boom"):
        list(failing.complete("p", PARAMS, request(), tab="completion"))
    assert fake.cancels[-1].cancelled and broken.cancels[-1].cancelled


def test_limits_are_keyed_on_the_address_not_the_session():
    gens, _ = generations(rate_limit_per_min=1)
    list(gens.complete("p", PARAMS, request(session="a")))
    with pytest.raises(RateLimited):  # a fresh session hash from the same address
        list(gens.complete("p", PARAMS, request(session="b")))
    assert list(gens.complete("p", PARAMS, request(host="10.0.0.2")))[-1].text == "pabcdef"


def test_behind_a_trusted_proxy_the_address_is_the_one_the_proxy_appended():
    forwarded = request(host="172.17.0.1", headers={"x-forwarded-for": "6.6.6.6, 7.7.7.7"})
    assert Generations(None, "x-forwarded-for").client(forwarded) == "7.7.7.7"
    assert Generations(None).client(forwarded) == "172.17.0.1"  # not trusted: the peer


def test_throttle_passes_the_first_and_the_final_frame_always():
    frames = [Output("completion", "p" + "a" * i, "a" * i) for i in range(1, 50)]
    final = Output("completion", "p" + "a" * 50, "a" * 50, done=Done("eos", 1, 50))
    # every=5 s: the frames come within microseconds. (A larger `every` would also drop the
    # first frame while time.monotonic(), the machine's uptime, is below it.)
    assert list(throttle(iter([*frames, final]), every=5)) == [frames[0], final]
    assert len(list(throttle(iter([*frames, final]), every=0))) == 50


def test_an_api_call_stopped_or_failed_frees_the_engine_at_once():
    """Raising on a stopped or failed generation used to leave the engine's generator suspended
    after its Done: its slot was freed only when the garbage collector got to it (a /v1 request
    whose client went away held 4 batch slots for minutes)."""
    import gc

    from model.engine import CancelToken

    gc.disable()  # what matters is that nothing waits for it
    try:
        engine = FakeEngine("x" * 100)
        generations = Generations(fake_playground(engine))
        token = CancelToken()
        run = generations.complete(
            "def f():", GenerationParams(max_new_tokens=90), None, cancel=token
        )
        next(run)
        token.cancel("the client went away")
        # Held, as the /v1 producer holds the error it hands on (its traceback keeps every
        # frame of the generation alive): the slot must not wait for it to be let go.
        with pytest.raises(PlaygroundError, match="stopped before it finished") as stopped:
            list(run)
        assert engine.open_streams == 0 and stopped.value
        failing = FakeEngine("x" * 10, error="The model worker stopped.", error_after=3)
        with pytest.raises(PlaygroundError, match="worker stopped") as failed:
            list(
                Generations(fake_playground(failing)).complete(
                    "def f():", GenerationParams(max_new_tokens=9), None
                )
            )
        assert failing.open_streams == 0 and failed.value
    finally:
        gc.enable()
