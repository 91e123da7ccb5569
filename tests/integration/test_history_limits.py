"""Chat history limits on the real app (tiny model, worker process, Gradio, uvicorn).

One client once slowed everyone: 4 concurrent /assist calls with 1,000-turn histories ran 87 s,
/healthz took 9.3 s. A history over the limits is now refused before any token is counted, and
one at the limits is fitted with a count per turn, not a count of the whole prompt per turn.
"""

from __future__ import annotations

import logging
import time
import urllib.request

import pytest
from gradio_client.exceptions import AppError

from app.limits import Limits
from app.validation import MAX_HISTORY_TURNS, check_history, parse_history
from model.errors import PlaygroundError
from model.prompts.templates import Turn

log = logging.getLogger(__name__)

ASK = "And how would I test it?"
SHORT = {"max_new_tokens": 4, "temperature": 0}


def _history(turns: int, total_bytes: int) -> list[list[str]]:
    """`turns` [user, assistant] pairs of code-like ASCII text, `total_bytes` in all."""
    each = total_bytes // (2 * turns)
    line = "def add(a, b):\n    return a + b  # sums two numbers\n"
    text = (line * (each // len(line) + 1))[:each]
    return [[text, text] for _ in range(turns)]


def test_history_size_is_utf8_bytes_of_all_turns_and_each_text_is_checked():
    limits = Limits(max_prompt_bytes=100)
    with pytest.raises(PlaygroundError, match=r"`history` is 102 bytes; the limit is 100 bytes"):
        check_history([Turn("é" * 25, "a"), Turn("é" * 25, "b")], limits)
    lone = r"`history\[1\]\[1\]` contains a lone surrogate U\+D800 at character 0"
    with pytest.raises(PlaygroundError, match=lone):
        check_history([Turn("a", "b"), Turn("c", "\ud800")], limits)
    many = [Turn("q", "a")] * (MAX_HISTORY_TURNS + 1)
    with pytest.raises(PlaygroundError, match=f"has {MAX_HISTORY_TURNS + 1} turns; the limit"):
        check_history(many, limits)
    # Turns from the UI and pairs from Python callers alike; an unanswered turn may be empty.
    assert check_history([Turn("a", ""), ["b", "c"]], limits) == (Turn("a", ""), Turn("b", "c"))
    assert parse_history(None) == () and parse_history([["a", "b"]]) == (Turn("a", "b"),)


def _limit(live_app) -> int:
    return live_app.handlers.generate.playground.limits.max_prompt_bytes


def _assist_refusal(client, history) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(AppError) as err:
        client.predict(ASK, history, api_name="/assist", **SHORT)
    return str(err.value), time.perf_counter() - start


def test_a_1000_turn_history_is_refused_at_once_with_the_limit(client):
    history = [[f"question {i}: " + "x" * 100, f"answer {i}: " + "y" * 100] for i in range(1000)]
    message, seconds = _assist_refusal(client, history)
    assert f"`history` has 1000 turns; the limit is {MAX_HISTORY_TURNS}." in message
    # It took 18 s (and 87 s for 4 at once) when every turn cost a count of the whole prompt.
    assert seconds < 2, f"the refusal took {seconds:.1f} s"


def test_a_history_over_the_byte_limit_is_refused_with_both_numbers(client, live_app):
    limit = _limit(live_app)
    history = _history(10, limit + 1000)
    size = sum(len(t.encode()) for pair in history for t in pair)
    message, seconds = _assist_refusal(client, history)
    assert f"`history` is {size:,} bytes; the limit is {limit:,} bytes." in message
    assert seconds < 2, f"the refusal took {seconds:.1f} s"


@pytest.mark.parametrize(
    "history,needle",
    [
        ({"user": "hi"}, "`history` must be a list of [user, assistant] pairs; got dict."),
        (7, "`history` must be a list of [user, assistant] pairs; got int."),
        ([["hi", "hello"], {"user": "hi"}], "`history[1]` must be a [user, assistant] pair"),
        ([["hi", "hello"], 3], "`history[1]` must be a [user, assistant] pair; got int."),
        ([["hi"]], "`history[0]` must be a [user, assistant] pair; got a list of 1."),
        ([["a", "b", "c"]], "`history[0]` must be a [user, assistant] pair; got a list of 3."),
        ([["hi", 5]], "`history[0][1]` (the assistant's text) must be text; got int."),
        ([["a\x00b", "c"]], "`history[0][0]` contains a NUL byte (at character 1)."),
    ],
)
def test_a_turn_of_the_wrong_shape_is_named_with_its_index(client, history, needle):
    message, _ = _assist_refusal(client, history)
    assert needle in message


def test_a_history_at_the_limits_is_answered(client, live_app):
    history = _history(MAX_HISTORY_TURNS, _limit(live_app) - 1000)
    start = time.perf_counter()
    reply = client.predict(ASK, history, api_name="/assist", **SHORT)
    print(
        f"\n/assist with {MAX_HISTORY_TURNS} turns, {_limit(live_app) - 1000:,} bytes: "
        f"{time.perf_counter() - start:.2f} s"
    )
    assert isinstance(reply, str)


def _get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        assert r.status == 200
        r.read()
    return time.perf_counter() - start


def test_health_and_page_while_four_largest_histories_are_fitted(client, live_app):
    """A measurement, printed (run with -s): timings on shared CI cores are not assertions."""
    history = _history(MAX_HISTORY_TURNS, _limit(live_app) - 1000)
    idle = [_get(live_app.url + "healthz") for _ in range(5)]
    start = time.perf_counter()
    jobs = [client.submit(ASK, history, api_name="/assist", **SHORT) for _ in range(4)]
    health, page = [], []
    while not all(job.done() for job in jobs):
        health.append(_get(live_app.url + "healthz"))
        page.append(_get(live_app.url))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    replies = [job.result() for job in jobs]
    assert all(isinstance(r, str) for r in replies)

    def ms(xs: list[float]) -> str:
        if not xs:
            return "n=0"
        xs = sorted(xs)
        return f"n={len(xs)} median {xs[len(xs) // 2] * 1000:.0f} ms, max {xs[-1] * 1000:.0f} ms"

    print(
        f"\n4 x /assist ({MAX_HISTORY_TURNS} turns, {_limit(live_app) - 1000:,} bytes each): "
        f"{wall:.2f} s wall\n/healthz idle: {ms(idle)}\n/healthz under load: {ms(health)}"
        f"\nGET / under load: {ms(page)}"
    )


def test_a_long_browser_chat_keeps_working_with_its_newest_turns():
    from app.limits import Limits
    from app.validation import MAX_HISTORY_TURNS, check_history, recent_turns
    from model.prompts.templates import Turn

    chat = [Turn(f"question {i}", "answer " + "x" * 1000) for i in range(300)]
    kept = recent_turns(chat, Limits())
    assert kept == chat[-len(kept) :] and len(kept) == MAX_HISTORY_TURNS
    assert check_history(kept, Limits()) == tuple(kept)  # what the page sends is accepted
    small = recent_turns(chat, Limits(max_prompt_bytes=5000))
    assert small == chat[-4:]
